"""Reference recommenders on the binary user × item training matrix, scored by the same judge.

- **MostPop**: items by number of training interactions (ties by item id), the same list for
  everyone.
- **ItemKNN**: item-item cosine similarity of the binary columns (every neighbour, no
  shrinkage), a user's score for an item the sum of its similarities to the user's items.
- **EASE** (Steck, WWW 2019): the closed form `B = I − P · diag(1 / diag(P))` with
  `P = (XᵀX + λI)⁻¹`, λ = 500, dense, over the items with at least one training interaction.
- **MostPop, past only** (:func:`most_pop_at`, for the temporal protocol): MostPop counted
  over the training interactions before each user's moment. The three above are fitted once
  on every training interaction, later ones included.

Columns are the items with a training interaction, sorted by id, so equal scores rank by id.
Only those items can be recommended: an item nobody interacted with in training is unknown to
collaborative filtering. Dense matrices are `items²` floats: fine for MovieLens's ~10k items,
refused beyond :data:`MAX_DENSE_ITEMS`.

Example:
    >>> m = TrainMatrix.of([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a")])
    >>> recommend(m, most_pop(m), ["u3"], k=2)
    {'u3': ['b', 'c']}
    >>> recommend(m, item_knn(m), ["u3"], k=1)
    {'u3': ['b']}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError

EASE_LAMBDA: Final = 500.0
MAX_DENSE_ITEMS: Final = 40_000
USER_CHUNK: Final = 256

Matrix = npt.NDArray[np.float32]
# Scores for a block of user rows of the training matrix: (rows, items).
Scorer = Callable[[Matrix], Matrix]


class BaselineError(FeedflowError):
    """A baseline cannot run on this data (too many items for a dense model)."""


@dataclass(frozen=True)
class TrainMatrix:
    """Binary training interactions: `x[u, i] = 1` when user `users[u]` had item `items[i]`."""

    users: list[str]
    items: list[str]
    x: Matrix
    user_at: dict[str, int]  # users[n] -> n

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> TrainMatrix:
        """Build from (user, item) pairs; repeated pairs count once."""
        unique = set(pairs)
        users = sorted({u for u, _ in unique})
        items = sorted({i for _, i in unique})
        if len(items) > MAX_DENSE_ITEMS:
            raise BaselineError(
                f"TrainMatrix.of: {len(items)} items; dense baselines stop at {MAX_DENSE_ITEMS}"
            )
        user_at = {u: n for n, u in enumerate(users)}
        item_at = {i: n for n, i in enumerate(items)}
        x = np.zeros((len(users), len(items)), dtype=np.float32)
        for u, i in unique:
            x[user_at[u], item_at[i]] = 1.0
        return cls(users, items, x, user_at)

    def row_of(self, user: str) -> int | None:
        """Row index of a user (None for a user with no training interaction)."""
        return self.user_at.get(user)


def most_pop(m: TrainMatrix) -> Scorer:
    """Every user scores an item by its number of training interactions."""
    counts = m.x.sum(axis=0, dtype=np.float64).astype(np.float32)
    return lambda rows: np.broadcast_to(counts, (rows.shape[0], counts.shape[0]))


def item_knn(m: TrainMatrix) -> Scorer:
    """Sum of cosine similarities between an item and the user's items (itself excluded)."""
    x = m.x.astype(np.float64)
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    norms[norms == 0] = 1.0
    sim = (gram / norms[:, None] / norms[None, :]).astype(np.float32)
    np.fill_diagonal(sim, 0.0)
    return lambda rows: rows @ sim


def ease(m: TrainMatrix, lam: float = EASE_LAMBDA) -> Scorer:
    """EASE's item-item weights in closed form (see module doc)."""
    x = m.x.astype(np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = (p / -np.diag(p)).astype(np.float32)
    np.fill_diagonal(b, 0.0)
    return lambda rows: rows @ b


def recommend(m: TrainMatrix, scorer: Scorer, users: Sequence[str], k: int) -> dict[str, list[str]]:
    """Each user's top `k` items by score, their training items excluded, ties by item id.

    A user without training interactions gets the ranking of an empty history.
    """
    out: dict[str, list[str]] = {}
    n_items = len(m.items)
    for start in range(0, len(users), USER_CHUNK):
        chunk = users[start : start + USER_CHUNK]
        at = [m.row_of(u) for u in chunk]
        rows = np.zeros((len(chunk), n_items), dtype=np.float32)
        for n, r in enumerate(at):
            if r is not None:
                rows[n] = m.x[r]
        scores = np.array(scorer(rows), dtype=np.float64)  # a writable copy
        scores[rows > 0] = -np.inf
        for n, user in enumerate(chunk):
            order = np.argsort(-scores[n], kind="stable")
            best = [int(i) for i in order[:k] if np.isfinite(scores[n, i])]
            out[user] = [m.items[i] for i in best]
    return out


def most_pop_at(
    m: TrainMatrix, timed: Iterable[tuple[str, str, int]], moments: Mapping[str, int], k: int
) -> dict[str, list[str]]:
    """Each user's top `k` by popularity before their moment: MostPop without the future.

    An item scores its number of users with a training interaction strictly earlier than
    the user's moment (a pair counts once, at its first time); the user's training items
    are excluded and items nobody had yet are not ranked (the list may be short). One pass
    in time order, so it costs a sort per user rather than a fit per user.

    Args:
        m: the training matrix (its items are the candidates, its rows the exclusions).
        timed: (user, item, time) of every training interaction.
        moments: each user's moment, in the unit of the times.
        k: list length.

    Example:
        >>> m = TrainMatrix.of([("u1", "a"), ("u2", "b"), ("u3", "b"), ("u4", "c")])
        >>> timed = [("u1", "a", 1), ("u2", "b", 5), ("u3", "b", 6), ("u4", "c", 2)]
        >>> most_pop_at(m, timed, {"u1": 3, "u4": 9}, k=2)
        {'u1': ['c'], 'u4': ['b', 'a']}
    """
    item_at = {item: n for n, item in enumerate(m.items)}
    first: dict[tuple[str, str], int] = {}
    for user, item, ts in timed:
        first[user, item] = min(ts, first.get((user, item), ts))
    arrivals = sorted((ts, item_at[item]) for (_, item), ts in first.items())
    counts = np.zeros(len(m.items), dtype=np.float64)
    out: dict[str, list[str]] = {}
    applied = 0
    for user in sorted(moments, key=lambda u: (moments[u], u)):
        while applied < len(arrivals) and arrivals[applied][0] < moments[user]:
            counts[arrivals[applied][1]] += 1
            applied += 1
        scores = np.where(counts > 0, -counts, np.inf)  # ascending order: most first
        row = m.row_of(user)
        if row is not None:
            scores[m.x[row] > 0] = np.inf
        order = np.argsort(scores, kind="stable")[:k]  # ties by item id, the column order
        out[user] = [m.items[i] for i in order if np.isfinite(scores[i])]
    return out
