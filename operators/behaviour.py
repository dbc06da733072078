"""Behaviour space: item vectors learned from who engaged with what, next to the content space.

Co-engagement (:mod:`operators.co_engagement`) knows an item's direct neighbours: items
played right after it by the same people. Two items that are never played by the same user
within a few steps, but are played by the same *kind* of user, stay strangers there. A
low-rank factorisation of the user × item matrix of positive engagements links them: items
whose audiences overlap get close vectors, however the audiences came to them.

The factorisation is PureSVD (Cremonesi et al., 2010): the binary matrix `X` (a user's
positive engagements, as the engagement flow defines them) is approximated by its top `dim`
singular vectors, `X ≈ U Σ Vᵀ`, and items `i`, `j` are as similar as the `(i, j)` entry of
`V Vᵀ`, the projection onto the top factors: `v_i · v_j` with `v` the rows of `V`. Popular
items dominate the top factors, so, as for co-engagement's link counts, the similarity is
normalised by both items' engagement (:data:`operators.co_engagement.ANCHOR_EXPONENT` `a`):
seed `s` and candidate `b` score `v_s · v_b / (n_s^a · n_b^(1-a))`, with `n` the item's
number of users in the factorisation, so a blockbuster does not become everyone's neighbour.
The published vector of an item is `v / n^(1-a)`, so an inner-product index answers the
candidates' scores directly, and the item's `n` travels with it for the seed side
(:func:`seed_weights`). Serving folds a user in from their recent positive items, the most
recent weighing most (:func:`fold_in`), so the user side is as fresh as the co-engagement
history and needs no retraining.

The positives come from the engagement flow's own per-user logic
(:class:`operators.user_engagement.UserEngagement`): a view that consumed something and was
not abandoned early, skipped or disliked, or a like, share or playlist add. Items engaged by
fewer than :data:`MIN_USERS` users and users with fewer than two items carry no overlap and
are left out; an item without a vector is simply absent from the space (content retrieval
serves it).

Example:
    >>> baskets = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["b", "c"], "u4": ["c", "d"],
    ...            "u5": ["c", "d"]}
    >>> space = factorise(baskets, dim=2, seed=7)
    >>> space.ids, space.vectors.shape, space.counts.tolist()
    (['a', 'b', 'c', 'd'], (4, 2), [2, 3, 3, 2])
    >>> v = dict(zip(space.ids, space.vectors))
    >>> bool(v["a"] @ v["b"] > v["a"] @ v["d"])
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from kernel.settings import Settings
from operators.co_engagement import ANCHOR_EXPONENT, CoVisit
from operators.contracts import EngagementEvent
from operators.item_info import ItemLookup
from operators.user_engagement import UserEngagement

MIN_USERS: Final = 2  # an item one user engaged with overlaps with no one
ENCODER: Final = "engagement-svd"

Vectors = npt.NDArray[np.float32]


@dataclass
class Positives:
    """Each user's positively engaged items, replayed through the flow's per-user logic.

    Feed events in each user's order (a topic partition's order); :meth:`finish` closes the
    views still open and returns the baskets.
    """

    settings: Settings
    items: ItemLookup
    events: int = 0
    _users: dict[str, UserEngagement] = field(default_factory=dict)
    _baskets: dict[str, dict[str, None]] = field(default_factory=dict)

    def add(self, event: EngagementEvent) -> None:
        """Apply one event of its user."""
        self.events += 1
        user = self._users.get(event.user_id)
        if user is None:
            user = UserEngagement(self.settings, self.items, emit_features=False)
            self._users[event.user_id] = user
        self._collect(event.user_id, user.on_event(event))

    def baskets(self) -> dict[str, list[str]]:
        """Each user's positive items so far (views still open not counted yet)."""
        return {u: list(items) for u, items in self._baskets.items()}

    def finish(self) -> dict[str, list[str]]:
        """Close every open view; each user's positive items in first-engagement order."""
        for user_id, user in self._users.items():
            self._collect(user_id, user.flush())
        self._users.clear()
        return self.baskets()

    def _collect(self, user_id: str, outputs: Iterable[object]) -> None:
        for out in outputs:
            if isinstance(out, CoVisit):
                self._baskets.setdefault(user_id, {})[out.media_id] = None


@dataclass(frozen=True)
class Space:
    """Item vectors of one factorisation: `vectors[n]` (normalised, see module doc) and
    `counts[n]` (users who engaged) belong to `ids[n]`."""

    ids: list[str]
    vectors: Vectors
    counts: npt.NDArray[np.int64]
    users: int
    engagements: int

    @property
    def dim(self) -> int:
        """Vector length."""
        return int(self.vectors.shape[1])


def factorise(baskets: Mapping[str, Sequence[str]], dim: int, seed: int = 0) -> Space:
    """PureSVD item vectors of the users' positive items (see module doc).

    Deterministic: the same baskets in any order give the same vectors (items and users are
    indexed in sorted order, the solver's start vector is seeded and each factor's sign is
    fixed).
    """
    counts: dict[str, int] = {}
    for items in baskets.values():
        for media_id in set(items):
            counts[media_id] = counts.get(media_id, 0) + 1
    ids = sorted(m for m, c in counts.items() if c >= MIN_USERS)
    col = {m: n for n, m in enumerate(ids)}
    rows: list[int] = []
    cols: list[int] = []
    users = 0
    for user_id in sorted(baskets):
        kept = sorted({col[m] for m in baskets[user_id] if m in col})
        if len(kept) >= 2:
            rows.extend([users] * len(kept))
            cols.extend(kept)
            users += 1
    rank = min(dim, users - 1, len(ids) - 1)
    if rank < 1:
        empty = np.zeros(0, dtype=np.int64)
        return Space([], np.zeros((0, dim), dtype=np.float32), empty, users, len(rows))
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(users, len(ids))
    )
    start = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, _, vt = svds(matrix, k=rank, v0=start)
    factors = vt.T  # items × rank
    signs = np.sign(factors[np.abs(factors).argmax(axis=0), np.arange(rank)])
    n = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(ids))
    damped = factors * signs / np.maximum(n, 1)[:, None] ** (1.0 - ANCHOR_EXPONENT)
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    vectors[:, :rank] = damped[:, ::-1]  # strongest factor first
    return Space(ids, vectors, n.astype(np.int64), users, len(rows))


def recency_weights(positions: Sequence[int]) -> Vectors:
    """Weights of a user's recent items by their place, newest (0) first: 1, 1/2, 1/3, ….

    Example:
        >>> recency_weights([0, 1, 3]).tolist()
        [1.0, 0.5, 0.25]
    """
    return (1.0 / (1.0 + np.asarray(positions, dtype=np.float32))).astype(np.float32)


def seed_weights(seed_counts: npt.NDArray[np.int64], positions: Sequence[int]) -> Vectors:
    """Weight of each recent item's published vector in the user's point: recency (as
    co-engagement weighs its seeds) times `n^(1-a) / n^a`, which turns the published
    `v / n^(1-a)` into the seed side's `v / n^a` (see module doc).

    Example:
        >>> seed_weights(np.array([1, 1]), [0, 1]).tolist()
        [1.0, 0.5]
    """
    damp = np.maximum(seed_counts, 1).astype(np.float32) ** np.float32(2 * ANCHOR_EXPONENT - 1)
    out: Vectors = (recency_weights(positions) / damp).astype(np.float32)
    return out


def fold_in(seed_vectors: Vectors, weights: Vectors) -> Vectors:
    """A user's point in the behaviour space: the weighted sum of their recent items'
    published vectors (weights from :func:`seed_weights`)."""
    out: Vectors = (weights @ seed_vectors).astype(np.float32)
    return out


def affinity(scores: Vectors) -> Vectors:
    """The ranking feature: inner products with the user's point, negatives as 0, scaled so
    the request's strongest is 1 (all 0 when none is positive).

    Example:
        >>> affinity(np.array([2.0, -1.0, 1.0], np.float32)).tolist()
        [1.0, 0.0, 0.5]
    """
    clipped = np.maximum(scores, 0.0)
    top = float(clipped.max()) if clipped.size else 0.0
    if not top > 0.0:
        return np.zeros(len(scores), dtype=np.float32)
    out: Vectors = (clipped / np.float32(top)).astype(np.float32)
    return out
