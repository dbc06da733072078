"""Trending and popularity boards: the top items of one ranking, fed by item score updates.

One board per ranking key (`all`, `type:VIDEO`, `category:news`, … from
:func:`operators.item_stats.ranking_keys`), so boards spread over workers like any keyed state
and none of them is a global object. A board keeps the best `capacity` candidates (four times
the published top-K by default): an item that drops out is forgotten until its next update,
and items that trend update often, so the top-K stays right while state stays bounded.
Scores are only comparable when fresh: `trending_score` counts views in the last hour of the
item's own event time, so an entry whose last update is more than :data:`STALE_MS` behind the
newest update the board has seen is removed. Everything runs on event time.

Popularity boards (`popular:all`, `popular:type:<T>`, `popular:category:<c>`) are the same
machinery on decayed scores: their updates carry a half-life `h`, and the board ranks an item
by `log2(score) + ts / h`, the logarithm of its score as of any common time, so items last
updated weeks apart compare correctly and nothing goes stale. An item's key only grows (its
count does), so an evicted candidate could never have made the top-K again: these boards are
exact whatever the order of updates. They publish their scores decayed to the start of the
event-time minute of the newest update (:data:`PUBLISH_EVERY_MS`), to three significant
digits, stamped with that minute: the published value is a function of the candidates and
that minute alone, and a popular item's every view does not rewrite the board.

Example:
    >>> board = TrendingBoard(top_k=2)
    >>> for media, score in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("b", 0.5)]:
    ...     out = board.on_event(ScoreUpdate(media_id=media, score=score, ts=0))
    >>> [m for m, _ in out[0].items]
    ['c', 'a']
    >>> day = 86_400_000
    >>> popular = TrendingBoard(top_k=2)
    >>> for media, score, ts in [("old", 8.0, 0), ("new", 5.0, 2 * day)]:
    ...     out = popular.on_event(
    ...         ScoreUpdate(media_id=media, score=score, ts=ts, half_life_ms=day))
    >>> out[0].items  # "old" is worth 2.0 two half-lives later
    (('new', 5.0), ('old', 2.0))
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime
from typing import Any, Final

import msgspec

from operators.item_stats import ScoreUpdate
from operators.keyed import KeyedState

STALE_MS: Final = 3_600_000
PRUNE_EVERY_MS: Final = 60_000
PUBLISH_EVERY_MS: Final = 60_000  # popularity boards: scores as of this minute's start
CANDIDATES_PER_SLOT: Final = 4
_SNAPSHOT_VERSION: Final = 2  # 1: before popularity boards (no half-life)


class TrendingList(msgspec.Struct, frozen=True, kw_only=True):
    """A board's current top-K, best first, as of event time `ts` (the newest update's; for
    a popularity board, the start of its minute, which the scores are decayed to)."""

    ts: int
    items: tuple[tuple[str, float], ...]


class TrendingBoard(KeyedState[ScoreUpdate, TrendingList]):
    """Top-K items of one ranking by trending score, or by decayed popularity.

    Candidates are kept in a list sorted by (−key, media id), the key being the score (or
    for a popularity board its log as of a common time), so an update costs two binary
    searches and a short memmove, and the top-K is the head of the list. The kind of board
    follows its updates' `half_life_ms` (a board is fed by one kind only).

    Args:
        top_k: items published per board (settings.trending_top_k).
        capacity: candidates kept; defaults to `4 × top_k`.
        resume: a value returned by :meth:`snapshot`, or None for a new board.
    """

    def __init__(self, top_k: int, capacity: int | None = None, resume: Any = None):
        if top_k < 1:
            raise ValueError(f"TrendingBoard: top_k must be ≥ 1, got {top_k}")
        self.top_k = top_k
        self.capacity = max(capacity or CANDIDATES_PER_SLOT * top_k, top_k)
        snap = resume or (_SNAPSHOT_VERSION, -1, (), (), PRUNE_EVERY_MS - 1, 0.0, -1)
        version, entries, published = snap[0], snap[2], snap[3]
        if version not in (1, _SNAPSHOT_VERSION):
            raise ValueError(f"TrendingBoard: snapshot version {version} is not supported")
        self._wm: int = snap[1]
        self._next_prune: int = snap[4]
        self.half_life_ms: float = snap[5] if version > 1 else 0.0
        self._published_ts: int = snap[6] if version > 1 else -1
        self._scores: dict[str, tuple[float, int]] = {m: (s, t) for m, s, t in entries}
        self._order = self._sorted()
        self._published: tuple[tuple[str, float], ...] = published

    def on_event(self, update: ScoreUpdate) -> list[TrendingList]:
        """Apply one score update; emit the top-K whenever it changed (ids or scores)."""
        if update.half_life_ms != self.half_life_ms:
            self.half_life_ms = update.half_life_ms
            self._order = self._sorted()
        if update.ts > self._wm:
            self._wm = update.ts
            if self._wm >= self._next_prune:
                self._prune()
        media = update.media_id
        known = self._scores.get(media)
        if known is not None:
            if known[1] > update.ts:
                return []  # an older score of the same item: keep the newer one
            self._remove(media, known)
        if update.score > 0.0:
            self._scores[media] = (update.score, update.ts)
            self._insert(media, (update.score, update.ts))
        if self.half_life_ms > 0.0:
            return self._publish_decayed(media)
        return self._publish()

    def notify_at(self) -> datetime | None:
        """Boards need no timer: stale entries go as newer updates move event time on."""
        return None

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The best `k` (default top_k) fresh items with their scores, best first.

        Freshness is judged at the board's event time on every call, not only when a prune
        ran, so the published board is a function of the candidates alone, whatever order
        the updates of different items arrived in. A popularity board's scores are as it
        publishes them: decayed to :meth:`published_at`, three significant digits.
        """
        want = k or self.top_k
        if self.half_life_ms > 0.0:
            at, scores = self.published_at(), self._scores
            return [(m, self._decayed(scores[m], at)) for _, m in self._order[:want]]
        horizon = self._wm - STALE_MS
        out: list[tuple[str, float]] = []
        for neg, m in self._order:
            if self._scores[m][1] >= horizon:
                out.append((m, -neg))
                if len(out) == want:
                    break
        return out

    def published_at(self) -> int:
        """The event time a popularity board's scores are decayed to: its minute's start."""
        return self._wm - self._wm % PUBLISH_EVERY_MS

    def snapshot(self) -> tuple[Any, ...]:
        """Plain immutable state: candidates as (media, score, ts), what was published."""
        entries = tuple((m, s, t) for m, (s, t) in self._scores.items())
        return (
            _SNAPSHOT_VERSION, self._wm, entries, self._published, self._next_prune,
            self.half_life_ms, self._published_ts,
        )  # fmt: skip

    def _key(self, entry: tuple[float, int]) -> float:
        """Sort key, ascending = best: −score, or −log2 of the score at a common time."""
        score, ts = entry
        if self.half_life_ms > 0.0:
            return -(math.log2(score) + ts / self.half_life_ms)
        return -score

    def _sorted(self) -> list[tuple[float, str]]:
        return sorted((self._key(e), m) for m, e in self._scores.items())

    def _decayed(self, entry: tuple[float, int], at: int) -> float:
        score, ts = entry
        return float(f"{score * 2.0 ** ((ts - at) / self.half_life_ms):.3g}")

    def _insert(self, media: str, entry: tuple[float, int]) -> int:
        """Insert a candidate; evict the worst past capacity. Returns its rank."""
        key = (self._key(entry), media)
        rank = bisect.bisect_left(self._order, key)
        self._order.insert(rank, key)
        if len(self._order) > self.capacity:
            _, evicted = self._order.pop()
            del self._scores[evicted]
        return rank

    def _remove(self, media: str, entry: tuple[float, int]) -> int:
        """Remove a candidate; returns the rank it had."""
        rank = bisect.bisect_left(self._order, (self._key(entry), media))
        del self._order[rank]
        del self._scores[media]
        return rank

    def _publish(self) -> list[TrendingList]:
        top = tuple(self.top())
        if top == self._published:
            return []
        self._published = top
        return [TrendingList(ts=self._wm, items=top)]

    def _publish_decayed(self, media: str) -> list[TrendingList]:
        """Publish a popularity board when its value changed (see module doc)."""
        at, published = self.published_at(), self._published
        if at == self._published_ts:
            head = self._order[: self.top_k]
            if len(head) == len(published) and all(
                m == p[0] for (_, m), p in zip(head, published, strict=True)
            ):
                # Same minute, same items: only the updated item's score can differ.
                for m, score in published:
                    if m == media:
                        if self._decayed(self._scores[m], at) == score:
                            return []
                        break
                else:
                    return []
        top = tuple(self.top())
        if top == published and at == self._published_ts:
            return []
        self._published, self._published_ts = top, at
        return [TrendingList(ts=at, items=top)]

    def _prune(self) -> bool:
        """Forget stale candidates (memory only: :meth:`top` already skips them); a
        popularity board has none."""
        self._next_prune = self._wm + PRUNE_EVERY_MS
        if self.half_life_ms > 0.0:
            return False
        horizon = self._wm - STALE_MS
        stale = [m for m, (_, t) in self._scores.items() if t < horizon]
        if not stale:
            return False
        for m in stale:
            del self._scores[m]
        self._order = self._sorted()
        return True
