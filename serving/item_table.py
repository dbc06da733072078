"""Item metadata in columns: what filters, features and rules read, for 500 items at once.

The index reader mirrors each item's record; reading 500 records attribute by attribute costs
more Python than the whole ranking model. This table keeps the same facts as numpy columns
(category and language as small integer codes, creator and item id as their CRC-32, content
type, publication time, liveness), so a request looks its candidates up once and does the rest
with array operations; the items' engagement stats live in the same rows, so one lookup
serves filters, features and the model. It is fed like the fresh list: a scan of the index
at start-up and every log entry the reader applies; removed items stay as rows marked not
live.

Writers are one thread at a time (the reader's listener, the refresher's scan); readers take
:meth:`ItemTable.columns` once per request and see either the arrays before a growth or after.

Example:
    >>> from operators.content import ItemRecord, Stamp
    >>> table = ItemTable()
    >>> table.upsert([ItemRecord(media_id="m1", stamp=Stamp(0, 0), category="news",
    ...                          content_type="AUDIO", published_at=5)])
    >>> rows = table.lookup(["m1", "nope"])
    >>> rows.tolist(), table.columns().ctype[rows[:1]].tolist(), table.vocab.category("news")
    ([0, -1], [1], 1)
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Final

import numpy as np
import numpy.typing as npt

from operators.content import UNKNOWN, ItemRecord

TYPE_CODES: Final = {"VIDEO": 0, "AUDIO": 1}
STATS_PRIOR: Final = (0.5, 0.5, 0.0)  # completion rate, like ratio, trending score
OTHER_TYPE: Final = 2
Ints = npt.NDArray[np.int64]


class Vocab:
    """Codes of categories and languages (0 is `unknown`); codes are never reused."""

    def __init__(self) -> None:
        self._categories: dict[str, int] = {UNKNOWN: 0}
        self._languages: dict[str, int] = {UNKNOWN: 0}

    def category(self, name: str) -> int:
        """The code of a category, assigned on first sight."""
        return self._categories.get(name) or self._add(self._categories, name)

    def language(self, name: str | None) -> int:
        """The code of a language (0 for unknown or None)."""
        if not name:
            return 0
        return self._languages.get(name) or self._add(self._languages, name)

    def known_category(self, name: str) -> int | None:
        """The code of a category if one was assigned (never assigns)."""
        return self._categories.get(name)

    @property
    def categories(self) -> int:
        """How many category codes exist."""
        return len(self._categories)

    @staticmethod
    def _add(codes: dict[str, int], name: str) -> int:
        code = codes.setdefault(name, len(codes))
        return code


@dataclass(frozen=True, slots=True)
class Columns:
    """Aligned columns, one element per row (of the table, or of a pool)."""

    category: npt.NDArray[np.int32]
    language: npt.NDArray[np.int32]
    ctype: npt.NDArray[np.int8]
    creator: npt.NDArray[np.uint32]
    item_hash: npt.NDArray[np.uint32]
    published: npt.NDArray[np.float64]
    live: npt.NDArray[np.bool_]
    # Engagement stats (serving.caches.ItemStatsCache fills them; priors until then).
    completion: npt.NDArray[np.float32]
    like_ratio: npt.NDArray[np.float32]
    trending: npt.NDArray[np.float32]
    stats_until: npt.NDArray[np.float64]  # monotonic seconds; -inf: never read

    def take(self, rows: Ints) -> Columns:
        """The columns of `rows`, in that order."""
        return Columns(*(getattr(self, name)[rows] for name in FIELDS))

    @classmethod
    def empty(cls, n: int, records: int = 0) -> Columns:
        """`n` rows of defaults (stats at their priors, never read)."""
        return cls(
            np.zeros(n, np.int32), np.zeros(n, np.int32), np.full(n, OTHER_TYPE, np.int8),
            np.zeros(n, np.uint32), np.zeros(n, np.uint32), np.zeros(n, np.float64),
            np.zeros(n, bool), np.full(n, STATS_PRIOR[0], np.float32),
            np.full(n, STATS_PRIOR[1], np.float32), np.full(n, STATS_PRIOR[2], np.float32),
            np.full(n, -np.inf),
        )  # fmt: skip

    @classmethod
    def of(cls, records: Sequence[ItemRecord], vocab: Vocab) -> Columns:
        """Columns of records (tests build pools this way; the table fills in bulk)."""
        crc, n = zlib.crc32, len(records)
        stats = cls.empty(n)
        return cls(
            np.asarray([vocab.category(r.category) for r in records], np.int32),
            np.asarray([vocab.language(r.language) for r in records], np.int32),
            np.asarray([TYPE_CODES.get(r.content_type, OTHER_TYPE) for r in records], np.int8),
            np.asarray([crc(r.creator_id.encode()) for r in records], np.uint32),
            np.asarray([crc(r.media_id.encode()) for r in records], np.uint32),
            np.asarray([r.published_at for r in records], np.float64),
            np.asarray([not r.removed for r in records], bool),
            stats.completion, stats.like_ratio, stats.trending, stats.stats_until,
        )  # fmt: skip


FIELDS: Final = tuple(f.name for f in fields(Columns))
META_FIELDS: Final = FIELDS[: FIELDS.index("completion")]


class ItemTable:
    """Every item the reader knows, by `media_id`, as :class:`Columns`."""

    def __init__(self, capacity: int = 1024) -> None:
        self.vocab = Vocab()
        self._rows: dict[str, int] = {}
        self._cols = Columns.empty(capacity)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def columns(self) -> Columns:
        """The current columns (take once per request)."""
        return self._cols

    def lookup(self, ids: Sequence[str]) -> Ints:
        """Row of each id, -1 where unknown."""
        return np.fromiter(map(self._rows.get, ids, repeat(-1)), np.int64, len(ids))

    def upsert(self, records: Iterable[ItemRecord]) -> None:
        """Insert or overwrite rows (a removed record marks its row not live)."""
        batch = list(records)
        if not batch:
            return
        with self._lock:
            rows = self._rows
            new = [m for m in dict.fromkeys(r.media_id for r in batch) if m not in rows]
            self._grow(len(rows) + len(new))
            for media_id in new:
                rows[media_id] = len(rows)
            at = np.asarray([rows[r.media_id] for r in batch], np.int64)
            values = Columns.of(batch, self.vocab)
            cols = self._cols
            for name in META_FIELDS:  # stats stay: they are the refresher's
                getattr(cols, name)[at] = getattr(values, name)

    def write_stats(self, rows: Ints, values: npt.NDArray[np.float32], until: float) -> None:
        """Set (completion, like ratio, trending) of `rows` (from the item stats store)."""
        cols = self._cols
        cols.completion[rows] = values[:, 0]
        cols.like_ratio[rows] = values[:, 1]
        cols.trending[rows] = values[:, 2]
        cols.stats_until[rows] = until

    def _grow(self, need: int) -> None:
        cols = self._cols
        size = len(cols.live)
        if need <= size:
            return
        grown = Columns.empty(max(need, size * 2))
        for name in FIELDS:
            getattr(grown, name)[:size] = getattr(cols, name)
        self._cols = grown
