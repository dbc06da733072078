"""In-process state a request reads without a network trip: item stats, trending, fresh items.

Each cache is filled off the request path (by :mod:`serving.refresher` and the index reader's
listener) and read by requests without locks: writers replace whole values, and a reader sees
either the old one or the new one. When Redis is down they keep what they last had, which is
the "trending kept in the process" rung of the degradation ladder.

Example:
    >>> from operators.content import ItemRecord, Stamp
    >>> table = ItemTable()
    >>> table.upsert([ItemRecord(media_id="m1", stamp=Stamp(0, 0))])
    >>> stats = ItemStatsCache(table, ttl_s=60.0)
    >>> cols = table.columns().take(table.lookup(["m1"]))
    >>> stats.lookup(["m1"], cols).tolist(), stats.take_pending()
    ([[0.5, 0.5, 0.0, 0.0]], ['m1'])
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Final

import numpy as np

from operators.content import UNKNOWN, ItemRecord
from operators.item_stats import ItemStatsRecord
from operators.keys import board_name, category_of
from serving.item_table import STATS_PRIOR, Columns, ItemTable
from serving.ranking import TYPES, Matrix, popularity_feature
from state.update_log import REMOVE, LogEntry

MAX_PENDING: Final = 100_000
MAX_BOARDS: Final = 4_096
POPULAR_ALL: Final = board_name(popular=True)
# The alert "over half of what is recommended comes from the 100 most popular items".
MOST_POPULAR: Final = 100
HOUR_MS: Final = 3_600_000
Board = tuple[tuple[str, float], ...]


def stats_values(record: ItemStatsRecord | None) -> tuple[float, float, float]:
    """The ranking's item stats of a stored record: completion rate, like ratio, trending
    score; the prior for an item with none (and 0.5 for a completion rate not known yet)."""
    if record is None:
        return STATS_PRIOR
    completion = record.completion_rate if record.completion_rate is not None else 0.5
    return completion, record.like_ratio, record.trending_score


class ItemStatsCache:
    """Item stats (completion rate, like ratio, trending score, popularity) in the item
    table's rows.

    A request reads them with the rest of its candidates' columns; rows never read, or read
    more than `ttl_s` ago, answer what they hold (the prior at first) and are queued for the
    refresher, which reads them from Redis off the request path at a bounded rate. Ratios
    move slowly, so the TTL is long; trending scores move fast, and the items that trend are
    on the boards, which carry their scores every round. Popularity moves slowly too; it is
    kept as a key that decays with event time (see :func:`serving.ranking.popularity_feature`),
    brought to the time of the `popular:all` board the refresher last read.

    Args:
        table: the item table whose rows hold the stats.
        ttl_s: how long a row's stats are used before a refresh is queued.
        popular_half_life_h: the engagement flow's `popular_half_life_h`.
    """

    def __init__(
        self,
        table: ItemTable,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        popular_half_life_h: float = 168.0,
    ) -> None:
        self._table, self._ttl, self._clock = table, ttl_s, clock
        self._half_life_ms = popular_half_life_h * HOUR_MS
        self._popular_ref = (0.0, 0.0)  # (board time / half-life, board's top score)
        self._pending: set[str] = set()
        self.loaded = 0

    def __len__(self) -> int:
        return self.loaded

    def lookup(self, ids: Sequence[str], cols: Columns) -> Matrix:
        """Rows of (completion, like ratio, trending, popularity feature) for a pool; stale
        ones are queued."""
        stale = np.flatnonzero(cols.stats_until < self._clock())
        if stale.size and len(self._pending) < MAX_PENDING:
            self._pending.update(ids[i] for i in stale.tolist())
        popular = popularity_feature(cols.popular, *self._popular_ref)
        out: Matrix = np.column_stack((cols.completion, cols.like_ratio, cols.trending, popular))
        return out

    def store_popular_reference(self, board_ts: int, board: Board) -> None:
        """The `popular:all` board's time and top score: what popularity is scaled against."""
        top = board[0][1] if board else 0.0
        self._popular_ref = (board_ts / self._half_life_ms, top)

    def take_pending(self, limit: int | None = None) -> list[str]:
        """Up to `limit` of the ids waiting for a refresh (all by default), removed."""
        pending = self._pending
        if limit is None or len(pending) <= limit:
            self._pending = set()
            return sorted(pending)
        return sorted(pending.pop() for _ in range(limit))

    def store_trending(self, boards: Iterable[Board]) -> None:
        """Trending scores from the boards (fresher than any per-item read, every round)."""
        best: dict[str, float] = {}
        for board in boards:
            best.update(board)
        if not best:
            return
        ids = list(best)
        rows = self._table.lookup(ids)
        known = rows >= 0
        scores = np.fromiter(best.values(), np.float32, len(ids))
        self._table.write_trending(rows[known], scores[known])

    def store(self, ids: Sequence[str], records: Sequence[ItemStatsRecord | None]) -> None:
        """Fresh values from the store; None means the item has no stats yet (the prior)."""
        rows = self._table.lookup(ids)
        known = np.flatnonzero(rows >= 0).tolist()
        if not known:
            return
        values = np.empty((len(known), 3), dtype=np.float32)
        popular = np.full(len(known), -np.inf)
        plays = np.zeros(len(known), dtype=np.float32)
        half_life = self._half_life_ms
        for n, i in enumerate(known):
            rec = records[i]
            values[n] = stats_values(rec)
            if rec is not None:
                plays[n] = rec.plays_total
                if rec.popularity > 0.0:
                    popular[n] = math.log2(rec.popularity) + rec.ts / half_life
        at = rows[known]
        first = int(np.count_nonzero(np.isneginf(self._table.columns().stats_until[at])))
        self._table.write_stats(at, values, self._clock() + self._ttl, popular, plays)
        self.loaded += first


class SideVectors:
    """Vectors of the items retrieval finds without the index: board and fresh items.

    Their similarity to the user vector is then one gather and one product per request,
    instead of a call into hnswlib under the lock the ANN queries need. The refresher keeps
    the set in step with the boards and the fresh list, fetching only new ids, in batches.
    """

    def __init__(self) -> None:
        self._state: tuple[dict[str, int], Matrix] = ({}, np.zeros((0, 0), dtype=np.float32))

    def __len__(self) -> int:
        return len(self._state[0])

    def lookup(self, ids: Sequence[str]) -> tuple[list[int], Matrix]:
        """Positions in `ids` that are known, and their vectors (rows in that order)."""
        rows, matrix = self._state
        found = [(n, r) for n, r in enumerate(map(rows.get, ids, repeat(-1))) if r >= 0]
        if not found:
            return [], matrix[:0]
        return [n for n, _ in found], matrix[[r for _, r in found]]

    def sync(
        self,
        wanted: Iterable[str],
        fetch: Callable[[Sequence[str]], dict[str, Matrix]],
        batch: int = 128,
    ) -> int:
        """Hold exactly the vectors of `wanted` (dropping others); returns ids fetched."""
        rows, matrix = self._state
        want = list(dict.fromkeys(wanted))
        new = [m for m in want if m not in rows]
        if not new and len(want) == len(rows):
            return 0
        fetched: dict[str, Matrix] = {}
        for start in range(0, len(new), batch):
            fetched.update(fetch(new[start : start + batch]))
        # Kept rows in one gather, new ones stacked after them: no Python loop over rows.
        kept = [m for m in want if m in rows]
        got = [m for m in new if m in fetched]
        parts = [matrix[np.fromiter(map(rows.__getitem__, kept), np.intp, len(kept))]]
        if got:
            parts.append(np.stack([fetched[m] for m in got]).astype(np.float32))
        parts = [p for p in parts if len(p)] or [np.zeros((0, matrix.shape[1]), np.float32)]
        stacked = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._state = ({m: n for n, m in enumerate(kept + got)}, stacked)
        return len(fetched)


class TrendingCache:
    """The boards: trending (`all`, `type:<T>`, `category:<c>`) and long-horizon popularity
    (the same names after `popular:`), last known values kept."""

    def __init__(self) -> None:
        self._boards: dict[str, Board] = {}
        everyone = [
            board_name(content_type=t, popular=p) for t in (None, *TYPES) for p in (False, True)
        ]
        self._names: set[str] = set(everyone)
        self.loaded = False
        self.most_popular: frozenset[str] = frozenset()  # the `popular:all` board's top 100

    def board(self, name: str) -> Board:
        """A board's items, best first (empty when unknown)."""
        return self._boards.get(name, ())

    def want(self, categories: Iterable[str]) -> None:
        """Refresh the boards of these categories too, trending and popular (bounded)."""
        for category in categories:
            if category != UNKNOWN and len(self._names) < MAX_BOARDS - 1:
                self._names.add(board_name(category=category))
                self._names.add(board_name(category=category, popular=True))

    def known(self, name: str) -> bool:
        """Whether board `name` is one the refresher reads."""
        return name in self._names

    def names(self) -> list[str]:
        """Every board the refresher should read."""
        return sorted(self._names)

    def item_ids(self) -> list[str]:
        """Every item on any board."""
        return list(dict.fromkeys(m for board in self._boards.values() for m, _ in board))

    def update(self, boards: dict[str, Board]) -> None:
        """Replace the boards that were read (absent ones keep their last value)."""
        merged = dict(self._boards)
        merged.update(boards)
        self._boards = merged
        top = merged.get(POPULAR_ALL, ())[:MOST_POPULAR]
        self.most_popular = frozenset(m for m, _ in top)
        self.loaded = True


class FreshItems:
    """Items published within the fresh window, newest first, per category and per type.

    Fed by a start-up scan of the index and by the reader's listener (every applied log
    entry); expired entries leave on :meth:`rebuild`.
    """

    def __init__(self, window_ms: float, clock_ms: Callable[[], float] | None = None) -> None:
        self._window = window_ms
        self._clock = clock_ms or (lambda: time.time() * 1000)
        self._items: dict[str, tuple[int, str, str]] = {}
        self._lock = threading.Lock()
        self._newest: tuple[str, ...] = ()
        self._by_key: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, records: Iterable[ItemRecord]) -> None:
        """Note records (removed ones leave); then rebuild the views."""
        horizon = self._clock() - self._window
        with self._lock:
            for r in records:
                if r.removed or r.published_at < horizon:
                    self._items.pop(r.media_id, None)
                else:
                    self._items[r.media_id] = (r.published_at, r.category, r.content_type)
        self.rebuild()

    def rebuild(self) -> None:
        """Drop expired items and rebuild the newest-first views."""
        horizon = self._clock() - self._window
        with self._lock:
            for media_id in [m for m, v in self._items.items() if v[0] < horizon]:
                del self._items[media_id]
            ordered = sorted(self._items.items(), key=lambda kv: (-kv[1][0], kv[0]))
        by_key: dict[str, list[str]] = {}
        for media_id, (_, category, kind) in ordered:
            by_key.setdefault(board_name(category=category), []).append(media_id)
            by_key.setdefault(board_name(content_type=kind), []).append(media_id)
        self._newest = tuple(m for m, _ in ordered)
        self._by_key = {k: tuple(v) for k, v in by_key.items()}

    def categories(self) -> list[str]:
        """Categories of the fresh items."""
        return [c for k in self._by_key if (c := category_of(k)) is not None]

    def newest(self, key: str | None = None) -> tuple[str, ...]:
        """Newest first: all (key None), or of `category:<c>` / `type:<T>`."""
        return self._newest if key is None else self._by_key.get(key, ())


def records_of(entries: Sequence[LogEntry]) -> list[ItemRecord]:
    """The records of applied log entries, a removal as a tombstone."""
    return [
        e.record
        if e.op != REMOVE
        else ItemRecord(media_id=e.record.media_id, stamp=e.record.stamp, removed=True)
        for e in entries
    ]
