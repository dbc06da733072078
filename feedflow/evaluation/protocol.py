"""The offline protocols: the held-out split, when feeds are asked, history exclusion, metrics.

- **Split**: each user's last interaction by timestamp is held out; among interactions with the
  same timestamp the one later in the file wins. Users with a single interaction are not
  evaluated (their interaction stays in training). Nothing of a held-out interaction is ever
  shown to a model.
- **When** (:data:`PROTOCOLS`): *leave-last-out* asks every model once all training
  interactions are known; *temporal* asks each user at the moment of their held-out
  interaction, with only what happened before it applied (:func:`checkpoints` plans the
  pauses of a replay that does so). Both use the same split.
- **Ranking**: full ranking over the catalogue, no sampled negatives; the user's training
  items are removed from every model's list before it is cut to `k`.
- **Metrics**, averaged over users: HR@k (the held-out item is in the top k) and NDCG@k
  (`1 / log2(rank + 1)` for a hit at 1-based `rank`, the ideal DCG being 1 with one relevant
  item), for k = 10 and 20; catalogue coverage (distinct items in all top-20 lists / catalogue
  size); genre diversity (mean number of distinct genres in a user's top 20); popular share
  (share of all top-20 slots taken by the 100 most popular training items).

Example:
    >>> rows = [Interaction("u1", "a", 10, 0), Interaction("u1", "b", 20, 1),
    ...         Interaction("u1", "c", 20, 2), Interaction("u2", "a", 5, 3)]
    >>> split = leave_last_out(rows)
    >>> {u: x.item for u, x in split.held_out.items()}, [x.item for x in split.train]
    ({'u1': 'c'}, ['a', 'b', 'a'])
    >>> round(ndcg_at([2], 10), 4), hit_rate_at([2, None], 1)
    (0.6309, 0.0)
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

CUTOFFS: Final = (10, 20)
LIST_LENGTH: Final = 20
POPULAR_ITEMS: Final = 100
LEAVE_LAST_OUT: Final = "leave-last-out"
TEMPORAL: Final = "temporal"
PROTOCOLS: Final = (LEAVE_LAST_OUT, TEMPORAL)
# Held-out moments at most this far (event time) after a checkpoint may share it, so one pause
# of the replay serves several users; 0 groups only equal moments. Each pause costs a flow
# execution and a serving start-up, but on MovieLens a minute, an hour or even a day hardly
# groups anything (610 moments give 610, 610 and 602 checkpoints: a user's own last training
# event comes seconds before their moment and must precede the checkpoint), so grouping buys
# nothing there and the replay stays exact.
CHECKPOINT_WINDOW_MS: Final = 0


class Timed(Protocol):
    """What the split needs of an interaction."""

    @property
    def user(self) -> str:
        """Who interacted; the split holds out one interaction per user."""
        ...

    @property
    def item(self) -> str:
        """The item; for a held-out interaction, the one the models should rank high."""
        ...

    @property
    def ts(self) -> int:
        """When it happened; each user's latest is held out."""
        ...

    @property
    def row(self) -> int:
        """Position in the source; among equal `ts` the later row counts as the last."""
        ...


T = TypeVar("T", bound=Timed)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item interaction: `ts` in seconds, `row` its position in the source file."""

    user: str
    item: str
    ts: int
    row: int


@dataclass(frozen=True)
class Split(Generic[T]):
    """Training interactions (in input order) and each evaluated user's held-out one."""

    train: list[T]
    held_out: dict[str, T]

    def history(self) -> dict[str, set[str]]:
        """Each user's training items."""
        out: dict[str, set[str]] = {}
        for x in self.train:
            out.setdefault(x.user, set()).add(x.item)
        return out


def leave_last_out(interactions: Sequence[T]) -> Split[T]:
    """Hold out each user's last interaction (by `ts`, ties: the later `row`)."""
    last: dict[str, T] = {}
    counts: Counter[str] = Counter()
    for x in interactions:
        counts[x.user] += 1
        current = last.get(x.user)
        if current is None or (x.ts, x.row) > (current.ts, current.row):
            last[x.user] = x
    held = {u: x for u, x in last.items() if counts[u] >= 2}
    train = [x for x in interactions if held.get(x.user) is not x]
    return Split(train, held)


def popularity(train: Iterable[Timed]) -> list[str]:
    """Items by number of training interactions, most first; ties by item id.

    Example:
        >>> popularity([Interaction("u", "b", 0, 0), Interaction("v", "a", 0, 1),
        ...             Interaction("w", "c", 0, 2), Interaction("v", "c", 0, 3)])
        ['c', 'a', 'b']
    """
    counts = Counter(x.item for x in train)
    return sorted(counts, key=lambda item: (-counts[item], item))


def top_unseen(ranked: Iterable[str], seen: set[str], k: int = LIST_LENGTH) -> list[str]:
    """The first `k` distinct items of `ranked` that are not in `seen`.

    Example:
        >>> top_unseen(["a", "b", "a", "c", "d"], {"b"}, k=2)
        ['a', 'c']
    """
    out: list[str] = []
    taken: set[str] = set()
    for item in ranked:
        if item in seen or item in taken:
            continue
        out.append(item)
        taken.add(item)
        if len(out) == k:
            break
    return out


def rank_of(target: str, ranked: Sequence[str]) -> int | None:
    """1-based position of `target` in `ranked`, None when absent."""
    try:
        return ranked.index(target) + 1
    except ValueError:
        return None


def hit_rate_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of users whose held-out item is within the top `k` (0 for no users)."""
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def ndcg_at(ranks: Sequence[int | None], k: int) -> float:
    """Mean NDCG@k with one relevant item per user: `1 / log2(rank + 1)` for a hit."""
    if not ranks:
        return 0.0
    return sum(1.0 / math.log2(r + 1) for r in ranks if r is not None and r <= k) / len(ranks)


@dataclass(frozen=True)
class Metrics:
    """One model's figures on one split (see the module doc for definitions)."""

    users: int
    hit_rate: dict[int, float]
    ndcg: dict[int, float]
    coverage: float
    genre_diversity: float
    popular_share: float
    short_lists: int = 0  # users given fewer than LIST_LENGTH items

    def row(self) -> dict[str, float | int]:
        """Flat figures, for tables and JSON."""
        out: dict[str, float | int] = {"users": self.users}
        for k in CUTOFFS:
            out[f"hr@{k}"] = round(self.hit_rate[k], 4)
            out[f"ndcg@{k}"] = round(self.ndcg[k], 4)
        out["coverage"] = round(self.coverage, 4)
        out["genre_diversity"] = round(self.genre_diversity, 2)
        out["popular_share"] = round(self.popular_share, 4)
        out["short_lists"] = self.short_lists
        return out


@dataclass(frozen=True)
class Judge:
    """What every model is judged against: the held-out items and the catalogue."""

    held_out: Mapping[str, str]  # user -> held-out item
    catalogue_size: int
    genres: Mapping[str, frozenset[str]] = field(default_factory=dict)
    popular: frozenset[str] = frozenset()

    def score(self, lists: Mapping[str, Sequence[str]]) -> Metrics:
        """Metrics of one model's top lists (cut to LIST_LENGTH; a missing user gets none)."""
        users = sorted(self.held_out)
        tops = {u: list(lists.get(u, ()))[:LIST_LENGTH] for u in users}
        ranks = [rank_of(self.held_out[u], tops[u]) for u in users]
        shown = {item for top in tops.values() for item in top}
        slots = sum(len(top) for top in tops.values())
        popular_slots = sum(1 for top in tops.values() for item in top if item in self.popular)
        genres = [len(set().union(*(self.genres.get(i, ()) for i in top))) for top in tops.values()]
        return Metrics(
            users=len(users),
            hit_rate={k: hit_rate_at(ranks, k) for k in CUTOFFS},
            ndcg={k: ndcg_at(ranks, k) for k in CUTOFFS},
            coverage=len(shown) / self.catalogue_size if self.catalogue_size else 0.0,
            genre_diversity=sum(genres) / len(genres) if genres else 0.0,
            popular_share=popular_slots / slots if slots else 0.0,
            short_lists=sum(1 for top in tops.values() if len(top) < LIST_LENGTH),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One pause of a temporal replay: apply the first `applied` events, then ask `users`.

    Every applied event is earlier than `at`, every later event is at or after `at`, and `at`
    is no later than any of `users`' moments.
    """

    at: int
    applied: int
    users: tuple[str, ...]


def checkpoints(
    events: Sequence[tuple[str, int]],
    moments: Mapping[str, int],
    window: int = CHECKPOINT_WINDOW_MS,
) -> list[Checkpoint]:
    """The pauses of a replay that asks each user's feed at their moment, in time order.

    A user is asked with every event earlier than their moment applied and none at or after
    it. Users are grouped into one checkpoint, at the earliest of their moments, when their
    moments are at most `window` after it and none of their own events falls between the
    checkpoint and their moment: a user's own history is always complete when they are
    asked, and what a grouped user misses is other users' events of at most `window` before
    their moment. Equal moments always share a checkpoint.

    Args:
        events: (user, time) of every replayed event, in replay order, which must be time
            order (ties in any order).
        moments: each asked user's moment, in the same unit as the event times.
        window: how far after a checkpoint a grouped user's moment may lie.

    Raises:
        ValueError: the events are not in time order.

    Example:
        >>> events = [("a", 1), ("b", 2), ("a", 3), ("c", 5), ("b", 6)]
        >>> [(c.at, c.applied, c.users) for c in checkpoints(events, {"a": 4, "b": 4, "c": 9})]
        [(4, 3, ('a', 'b')), (9, 5, ('c',))]
        >>> [(c.at, c.users) for c in checkpoints(events, {"a": 4, "b": 7, "c": 9}, window=5)]
        [(4, ('a',)), (7, ('b', 'c'))]
    """
    times = [ts for _, ts in events]
    if any(later < earlier for earlier, later in itertools.pairwise(times)):
        raise ValueError("checkpoints: events must be in time order")
    own = _last_own_before(events, moments)
    out: list[Checkpoint] = []
    for user in sorted(moments, key=lambda u: (moments[u], u)):
        moment, last = moments[user], own.get(user)
        if out and moment - out[-1].at <= window and (last is None or last < out[-1].at):
            out[-1] = Checkpoint(out[-1].at, out[-1].applied, (*out[-1].users, user))
        else:
            out.append(Checkpoint(moment, bisect.bisect_left(times, moment), (user,)))
    return out


def _last_own_before(
    events: Iterable[tuple[str, int]], moments: Mapping[str, int]
) -> dict[str, int]:
    """Each asked user's latest event time before their moment (absent: none)."""
    out: dict[str, int] = {}
    for user, ts in events:
        moment = moments.get(user)
        if moment is not None and ts < moment:
            out[user] = max(ts, out.get(user, ts))
    return out
