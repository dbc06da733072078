"""In-process state a request reads without a network trip: item stats, trending, fresh items.

Each cache is filled off the request path (by :mod:`serving.refresher` and the index reader's
listener) and read by requests without locks: writers replace whole values, and a reader sees
either the old one or the new one. When Redis is down they keep what they last had, which is
the "trending kept in the process" rung of the degradation ladder.

Example:
    >>> stats = ItemStatsCache(capacity=4, ttl_s=60.0)
    >>> stats.lookup(["m1"]).tolist(), stats.take_pending()
    ([[0.5, 0.5, 0.0]], ['m1'])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Final

import numpy as np

from operators.content import UNKNOWN, ItemRecord
from operators.item_stats import ItemStatsRecord
from serving.ranking import STATS_PRIOR, TYPES, Matrix
from state.update_log import REMOVE, LogEntry

MAX_PENDING: Final = 100_000
MAX_BOARDS: Final = 4_096
Board = tuple[tuple[str, float], ...]


class ItemStatsCache:
    """Item stats rows (completion rate, like ratio, trending score) in numpy arrays.

    A request looks up its candidates with one dict pass and one gather; unknown or expired
    ids answer the prior (or the stale row) and are queued for the refresher. Slots are a
    ring: past `capacity` the oldest entry is forgotten.
    """

    def __init__(
        self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity, self._ttl, self._clock = capacity, ttl_s, clock
        self._slots: dict[str, int] = {}
        self._owner: list[str | None] = [None] * capacity
        # Row `capacity` is the prior, answered for misses; it is always "expired".
        self._values = np.tile(np.asarray(STATS_PRIOR, dtype=np.float32), (capacity + 1, 1))
        self._expires = np.full(capacity + 1, -np.inf)
        self._next = 0
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._slots)

    def lookup(self, ids: Sequence[str]) -> Matrix:
        """One row per id; misses and stale rows are queued for a refresh."""
        slots = np.fromiter(map(self._slots.get, ids, repeat(self._capacity)), np.int64, len(ids))
        stale = np.flatnonzero(self._expires[slots] < self._clock())
        if stale.size and len(self._pending) < MAX_PENDING:
            self._pending.update(ids[i] for i in stale.tolist())
        rows: Matrix = self._values[slots]
        return rows

    def take_pending(self) -> list[str]:
        """The ids waiting for a refresh (emptied)."""
        pending, self._pending = self._pending, set()
        return sorted(pending)

    def store(self, ids: Sequence[str], records: Sequence[ItemStatsRecord | None]) -> None:
        """Fresh values from the store; None means the item has no stats yet (the prior)."""
        expires = self._clock() + self._ttl
        for media_id, rec in zip(ids, records, strict=True):
            slot = self._slots.get(media_id)
            if slot is None:
                slot = self._allocate(media_id)
            if rec is None:
                self._values[slot] = STATS_PRIOR
            else:
                completion = rec.completion_rate if rec.completion_rate is not None else 0.5
                self._values[slot] = (completion, rec.like_ratio, rec.trending_score)
            self._expires[slot] = expires

    def _allocate(self, media_id: str) -> int:
        slot = self._next
        self._next = (slot + 1) % self._capacity
        old = self._owner[slot]
        if old is not None:
            del self._slots[old]
        self._owner[slot] = media_id
        self._slots[media_id] = slot
        return slot


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
        keep = [m for m in want if m in rows or m in fetched]
        vectors = [matrix[rows[m]] if m in rows else fetched[m] for m in keep]
        dim = matrix.shape[1] if matrix.size else (len(vectors[0]) if vectors else 0)
        stacked = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
        self._state = ({m: n for n, m in enumerate(keep)}, stacked.astype(np.float32))
        return len(fetched)


class TrendingCache:
    """The trending boards (`all`, `type:<T>`, `category:<c>`), last known values kept."""

    def __init__(self) -> None:
        self._boards: dict[str, Board] = {}
        self._names: set[str] = {"all", *(f"type:{t}" for t in TYPES)}
        self.loaded = False

    def board(self, name: str) -> Board:
        """A board's items, best first (empty when unknown)."""
        return self._boards.get(name, ())

    def want(self, categories: Iterable[str]) -> None:
        """Refresh the boards of these categories too (bounded)."""
        for category in categories:
            if category != UNKNOWN and len(self._names) < MAX_BOARDS:
                self._names.add(f"category:{category}")

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

    def on_entries(self, entries: Sequence[LogEntry], now: float) -> None:
        """The index reader's listener: applied log entries."""
        del now
        self.add(e.record if e.op != REMOVE else _tombstone(e.record) for e in entries)

    def rebuild(self) -> None:
        """Drop expired items and rebuild the newest-first views."""
        horizon = self._clock() - self._window
        with self._lock:
            for media_id in [m for m, v in self._items.items() if v[0] < horizon]:
                del self._items[media_id]
            ordered = sorted(self._items.items(), key=lambda kv: (-kv[1][0], kv[0]))
        by_key: dict[str, list[str]] = {}
        for media_id, (_, category, kind) in ordered:
            by_key.setdefault(f"category:{category}", []).append(media_id)
            by_key.setdefault(f"type:{kind}", []).append(media_id)
        self._newest = tuple(m for m, _ in ordered)
        self._by_key = {k: tuple(v) for k, v in by_key.items()}

    def categories(self) -> list[str]:
        """Categories of the fresh items."""
        return [k[len("category:") :] for k in self._by_key if k.startswith("category:")]

    def newest(self, key: str | None = None) -> tuple[str, ...]:
        """Newest first: all (key None), or of `category:<c>` / `type:<T>`."""
        return self._newest if key is None else self._by_key.get(key, ())


def _tombstone(record: ItemRecord) -> ItemRecord:
    return ItemRecord(media_id=record.media_id, stamp=record.stamp, removed=True)
