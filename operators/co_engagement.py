"""Co-engagement: what people watch together, learned event by event as keyed state.

Two small keyed classes and the records between them:

- per user, :class:`RecentPositives` keeps the last few items the user engaged with
  positively (a view that consumed something and was not abandoned early, skipped or
  disliked; a like, share or playlist add). A positive engagement with an item that is not
  among them yields a :class:`CoVisit`: the item and the recent items before it, newest
  first. A dislike or skip takes an item out of the list.
- per item, :class:`CoNeighbours` counts, in a bounded heavy-hitters sketch (weighted
  Space-Saving), how strongly other items were co-engaged with it, and how many positive
  engagements it had itself. The flow turns one :class:`CoVisit` of `x` with recent items
  `p1, p2, …` into the visit at `x` (its count, and the backward links `x → p_d`) and a
  :class:`CoLink` at each `p_d` (the forward link `p_d → x`: users who watched `p_d` went on
  to watch `x`). A link at sequence distance `d` weighs `1/d` (backward ones half that), in
  integer fixed point, so sums are exact and do not depend on the order they arrive in.

The stored record (:class:`CoRecord`) carries the item's own count and its neighbours by
*guaranteed* count (Space-Saving's count minus its error: never the overestimate). Serving
normalises by both items' engagement (:mod:`serving.co_engagement`), so blockbusters do not
become everyone's neighbour.

Order: while an item has at most `capacity` distinct neighbours the sketch is exact, and any
interleaving of the same links gives the same record. Past that, the sketch evicts the
smallest counter; its guarantees (a guaranteed count never exceeds the true one; a neighbour
whose true weight exceeds total / capacity is always kept) hold for every order, but which
small neighbours survive can depend on the order.

Example:
    >>> user = RecentPositives(history=3)
    >>> [user.positive(m, ts) for m, ts in (("a", 1), ("b", 2))][1]
    CoVisit(media_id='b', ts=2, prior=('a',))
    >>> item = CoNeighbours(capacity=4, list_size=2, flush_ms=0, ttl_ms=10**9)
    >>> _ = item.on_event(CoLink(media_id="a", neighbour="b", distance=1, ts=2))
    >>> item.record().neighbours
    (('b', 1000),)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

from operators.dedup import id_hash64
from operators.eventtime import Clock, from_ms, to_ms, utc_now
from operators.keyed import KeyedState

WEIGHT_SCALE: Final = 1000  # a link at distance 1 (fixed point: sums stay exact)
BACKWARD_SHARE: Final = 0.5  # "x, then y" says more about y given x than about x given y
# How much the item's own engagement count discounts a neighbour's (the rest discounts the
# neighbour's count): 1 would be the conditional probability P(y | x), which lets blockbusters
# in; 0.5 the cosine, which buries them. Between the two, leaning to the anchor.
ANCHOR_EXPONENT: Final = 0.7
_SNAPSHOT_VERSION: Final = 1


def link_weight(distance: int, backward: bool = False) -> int:
    """Fixed-point weight of a co-engagement `distance` steps apart in a user's sequence.

    Example:
        >>> link_weight(1), link_weight(2), link_weight(2, backward=True)
        (1000, 500, 250)
    """
    weight = WEIGHT_SCALE // distance
    return int(weight * BACKWARD_SHARE) if backward else weight


class CoVisit(msgspec.Struct, frozen=True):
    """A user's new positive engagement with `media_id`, after `prior` (newest first)."""

    media_id: str
    ts: int
    prior: tuple[str, ...]


class CoLink(msgspec.Struct, frozen=True):
    """At `media_id`: a user engaged with `neighbour` `distance` positive items later."""

    media_id: str
    neighbour: str
    distance: int
    ts: int


class CoRecord(msgspec.Struct, frozen=True, array_like=True):
    """An item's co-engagement as stored: its own positive engagements and its neighbours
    by guaranteed link count (fixed point), strongest first (ties by id)."""

    media_id: str
    ts: int
    engagements: int
    neighbours: tuple[tuple[str, int], ...]


class RecentPositives:
    """A user's last `history` distinct positively engaged items, newest first.

    Args:
        history: how many items a new one is linked to.
        resume: a value of :meth:`snapshot`.
    """

    def __init__(self, history: int, resume: tuple[str, ...] | None = None) -> None:
        self._history = history
        self._items: list[str] = list(resume or ())[:history]
        self._digests: bytes | None = None

    @property
    def items(self) -> tuple[str, ...]:
        """The recent positive items, newest first."""
        return tuple(self._items)

    @property
    def digests(self) -> bytes:
        """The items' 8-byte digests (:func:`operators.dedup.id_hash64`), newest first: what
        the user's feature record names them by (computed once per change)."""
        if self._digests is None:
            self._digests = b"".join(id_hash64(m) for m in self._items)
        return self._digests

    def positive(self, media_id: str, ts: int) -> CoVisit | None:
        """Note a positive engagement; a :class:`CoVisit` when the item is new to the list.

        Engaging again with an item already in the list moves it to the front without a
        visit: the same pair must not be counted twice for one user's repeat views.
        """
        items = self._items
        self._digests = None
        if media_id in items:
            items.remove(media_id)
            items.insert(0, media_id)
            return None
        visit = CoVisit(media_id, ts, tuple(items))
        items.insert(0, media_id)
        del items[self._history :]
        return visit

    def negative(self, media_id: str) -> None:
        """A dislike or a skip: the item no longer seeds anything for this user."""
        if media_id in self._items:
            self._items.remove(media_id)
            self._digests = None

    def snapshot(self) -> tuple[str, ...]:
        """The user's recent positive items, newest first."""
        return tuple(self._items)


def links(visit: CoVisit) -> list[CoLink]:
    """The forward links of a visit, one per prior item (keyed by that item).

    Example:
        >>> [(x.media_id, x.distance) for x in links(CoVisit("c", 5, ("b", "a")))]
        [('b', 1), ('a', 2)]
    """
    return [
        CoLink(prior, visit.media_id, distance, visit.ts)
        for distance, prior in enumerate(visit.prior, 1)
    ]


class CoNeighbours(KeyedState["CoVisit | CoLink", CoRecord]):
    """One item's co-engagement sketch (weighted Space-Saving) and engagement count.

    Inputs are :class:`CoVisit` (of this item) and :class:`CoLink` (at this item). The
    record is emitted `flush_ms` of processing time after the first change since the last
    emission (a burst of links becomes one write) and at end of input; the state is dropped
    after `ttl_ms` of processing time without input.

    Args:
        capacity: counters kept (the sketch's bound).
        list_size: neighbours in the stored record.
        flush_ms: delay between a change and its record.
        ttl_ms: idle time before the state expires.
        resume: a value of :meth:`snapshot`.
        clock: processing-time clock (timers and expiry only).
    """

    def __init__(
        self,
        capacity: int,
        list_size: int,
        flush_ms: int,
        ttl_ms: int,
        resume: Any = None,
        clock: Clock = utc_now,
    ) -> None:
        snap = resume or (_SNAPSHOT_VERSION, "", 0, 0, (), None, -1)
        if snap[0] != _SNAPSHOT_VERSION:
            raise ValueError(f"CoNeighbours: snapshot version {snap[0]} is not supported")
        self._capacity, self._list_size = capacity, list_size
        self._flush_ms, self._ttl_ms, self._clock = flush_ms, ttl_ms, clock
        self._media_id: str = snap[1]
        self._ts: int = snap[2]
        self._engagements: int = snap[3]
        self._dirty_at: int | None = snap[5]
        table, arrival = snap[4], snap[6]
        self._counts: dict[str, tuple[int, int]] = {k: (c, e) for k, c, e in table}
        self._arrival_ms = arrival if arrival >= 0 else to_ms(clock())

    def on_event(self, msg: CoVisit | CoLink) -> list[CoRecord]:
        """Apply a visit or a link; nothing is emitted until the flush timer."""
        self._arrival_ms = now = to_ms(self._clock())
        self._media_id = msg.media_id
        self._ts = max(self._ts, msg.ts)
        if isinstance(msg, CoVisit):
            self._engagements += 1
            for distance, prior in enumerate(msg.prior, 1):
                if prior != msg.media_id:
                    self._add(prior, link_weight(distance, backward=True))
        elif msg.neighbour != msg.media_id:
            self._add(msg.neighbour, link_weight(msg.distance))
        if self._dirty_at is None:
            self._dirty_at = now
        return []

    def notify_at(self) -> datetime | None:
        """When the pending record is due, else when the state expires."""
        if self._dirty_at is not None:
            return from_ms(self._dirty_at + self._flush_ms)
        return from_ms(self._arrival_ms + self._ttl_ms)

    def on_timer(self, now: datetime | None = None) -> list[CoRecord]:
        """The record, when one is due."""
        now_ms = to_ms(now if now is not None else self._clock())
        if self._dirty_at is None or now_ms < self._dirty_at + self._flush_ms:
            return []
        return self.flush()

    def flush(self) -> list[CoRecord]:
        """The record now, if anything changed since the last one."""
        if self._dirty_at is None:
            return []
        self._dirty_at = None
        return [self.record()]

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when nothing is pending and the item was idle for the TTL."""
        now_ms = to_ms(now if now is not None else self._clock())
        return self._dirty_at is None and now_ms - self._arrival_ms >= self._ttl_ms

    def record(self) -> CoRecord:
        """The item's record as it stands."""
        guaranteed = [(k, c - e) for k, (c, e) in self._counts.items() if c > e]
        guaranteed.sort(key=lambda kv: (-kv[1], kv[0]))
        top = tuple(guaranteed[: self._list_size])
        return CoRecord(self._media_id, self._ts, self._engagements, top)

    def guaranteed(self) -> dict[str, tuple[int, int]]:
        """Every counter as (guaranteed count, count): lower and upper bounds of the truth."""
        return {k: (c - e, c) for k, (c, e) in self._counts.items()}

    def snapshot(self) -> tuple[Any, ...]:
        """Plain data: the counters, the last record written and the times."""
        table = tuple((k, c, e) for k, (c, e) in self._counts.items())
        return (
            _SNAPSHOT_VERSION,
            self._media_id,
            self._ts,
            self._engagements,
            table,
            self._dirty_at,
            self._arrival_ms,
        )

    def _add(self, neighbour: str, weight: int) -> None:
        counts = self._counts
        found = counts.get(neighbour)
        if found is not None:
            counts[neighbour] = (found[0] + weight, found[1])
        elif len(counts) < self._capacity:
            counts[neighbour] = (weight, 0)
        else:
            # Evict the smallest counter (ties: the smallest id, so the choice is a function
            # of the counts alone); the newcomer inherits its count as error.
            victim = min(counts.items(), key=lambda kv: (kv[1][0], kv[0]))[0]
            floor = counts.pop(victim)[0]
            counts[neighbour] = (floor + weight, floor)
