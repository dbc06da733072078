"""Trending boards: the top items of one ranking, fed by item score updates.

One board per ranking key (`all`, `type:VIDEO`, `category:news`, … from
:func:`operators.item_stats.ranking_keys`), so boards spread over workers like any keyed state
and none of them is a global object. A board keeps the best `capacity` candidates (four times
the published top-K by default): an item that drops out is forgotten until its next update,
and items that trend update often, so the top-K stays right while state stays bounded.
Scores are only comparable when fresh: `trending_score` counts views in the last hour of the
item's own event time, so an entry whose last update is more than :data:`STALE_MS` behind the
newest update the board has seen is removed. Everything runs on event time.

Example:
    >>> board = TrendingBoard(top_k=2)
    >>> for media, score in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("b", 0.5)]:
    ...     out = board.on_event(ScoreUpdate(media_id=media, score=score, ts=0))
    >>> [m for m, _ in out[0].items]
    ['c', 'a']
"""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any, Final

import msgspec

from operators.item_stats import ScoreUpdate

STALE_MS: Final = 3_600_000
PRUNE_EVERY_MS: Final = 60_000
CANDIDATES_PER_SLOT: Final = 4
_SNAPSHOT_VERSION: Final = 1


class TrendingList(msgspec.Struct, frozen=True, kw_only=True):
    """A board's current top-K, best first, as of the newest update's event time."""

    ts: int
    items: tuple[tuple[str, float], ...]


class TrendingBoard:
    """Top-K items of one ranking by trending score.

    Candidates are kept in a list sorted by (−score, media id), so an update costs two
    binary searches and a short memmove, and the top-K is the head of the list.

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
        snap = resume or (_SNAPSHOT_VERSION, -1, (), (), PRUNE_EVERY_MS - 1)
        version, entries, published = snap[0], snap[2], snap[3]
        if version != _SNAPSHOT_VERSION:
            raise ValueError(f"TrendingBoard: snapshot version {version} is not supported")
        self._wm: int = snap[1]
        self._next_prune: int = snap[4]
        self._scores: dict[str, tuple[float, int]] = {m: (s, t) for m, s, t in entries}
        self._order = sorted((-s, m) for m, (s, _) in self._scores.items())
        self._published: tuple[tuple[str, float], ...] = published

    def on_event(self, update: ScoreUpdate) -> list[TrendingList]:
        """Apply one score update; emit the top-K whenever it changed (ids or scores)."""
        if update.ts > self._wm:
            self._wm = update.ts
            if self._wm >= self._next_prune:
                self._prune()
        media = update.media_id
        known = self._scores.get(media)
        if known is not None:
            if known[1] > update.ts:
                return []  # an older score of the same item: keep the newer one
            self._remove(media, known[0])
        if update.score > 0.0:
            self._scores[media] = (update.score, update.ts)
            self._insert(media, update.score)
        return self._publish()

    def notify_at(self) -> datetime | None:
        """Boards need no timer: stale entries go as newer updates move event time on."""
        return None

    def top(self, k: int | None = None) -> list[tuple[str, float]]:
        """The best `k` (default top_k) fresh items with their scores, best first.

        Freshness is judged at the board's event time on every call, not only when a prune
        ran, so the published board is a function of the candidates alone, whatever order
        the updates of different items arrived in.
        """
        want, horizon = k or self.top_k, self._wm - STALE_MS
        out: list[tuple[str, float]] = []
        for neg, m in self._order:
            if self._scores[m][1] >= horizon:
                out.append((m, -neg))
                if len(out) == want:
                    break
        return out

    def snapshot(self) -> tuple[Any, ...]:
        """Plain immutable state: candidates as (media, score, ts) and the published ids."""
        entries = tuple((m, s, t) for m, (s, t) in self._scores.items())
        return (_SNAPSHOT_VERSION, self._wm, entries, self._published, self._next_prune)

    def _insert(self, media: str, score: float) -> int:
        """Insert a candidate; evict the worst past capacity. Returns its rank."""
        key = (-score, media)
        rank = bisect.bisect_left(self._order, key)
        self._order.insert(rank, key)
        if len(self._order) > self.capacity:
            _, evicted = self._order.pop()
            del self._scores[evicted]
        return rank

    def _remove(self, media: str, score: float) -> int:
        """Remove a candidate; returns the rank it had."""
        rank = bisect.bisect_left(self._order, (-score, media))
        del self._order[rank]
        del self._scores[media]
        return rank

    def _publish(self) -> list[TrendingList]:
        top = tuple(self.top())
        if top == self._published:
            return []
        self._published = top
        return [TrendingList(ts=self._wm, items=top)]

    def _prune(self) -> bool:
        """Forget stale candidates (memory only: :meth:`top` already skips them)."""
        self._next_prune = self._wm + PRUNE_EVERY_MS
        horizon = self._wm - STALE_MS
        stale = [m for m, (_, t) in self._scores.items() if t < horizon]
        if not stale:
            return False
        for m in stale:
            del self._scores[m]
        self._order = sorted((-s, m) for m, (s, _) in self._scores.items())
        return True
