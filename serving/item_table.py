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
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Final

import numpy as np
import numpy.typing as npt

from operators.content import UNKNOWN, ItemRecord
from operators.dedup import id_hash32

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


# One record per item, its fields side by side: a request gathers ~550 random rows of a
# table of millions, and one cache line per row costs a tenth of one per field per row.
ROW: Final = np.dtype(
    [
        ("published", np.float64),
        ("stats_until", np.float64),  # monotonic seconds; -inf: never read
        ("category", np.int32),
        ("language", np.int32),
        ("creator", np.uint32),
        ("item_hash", np.uint32),
        ("completion", np.float32),  # engagement stats: serving.caches.ItemStatsCache
        ("like_ratio", np.float32),
        ("trending", np.float32),
        ("popular", np.float64),  # log2(popularity) + ts / half-life; -inf: none
        ("plays", np.float32),  # plays in the item's lifetime (co-engagement normalisation)
        ("ctype", np.int8),
        ("live", np.bool_),
    ]
)
META_FIELDS: Final = ("published", "category", "language", "creator", "item_hash", "ctype", "live")


class Columns:
    """Aligned fields, one element per row (of the table, or of a pool), read by name."""

    __slots__ = ("data",)

    def __init__(self, data: npt.NDArray[np.void]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def take(self, rows: Ints) -> Columns:
        """The rows `rows`, in that order (one gather)."""
        return Columns(self.data[rows])

    @property
    def category(self) -> npt.NDArray[np.int32]:
        """Category codes (see :class:`Vocab`; 0 is `unknown`)."""
        return self.data["category"]

    @property
    def language(self) -> npt.NDArray[np.int32]:
        """Language codes (see :class:`Vocab`; 0 is unknown or none)."""
        return self.data["language"]

    @property
    def ctype(self) -> npt.NDArray[np.int8]:
        """Content type codes: 0 video, 1 audio, 2 anything else (:data:`TYPE_CODES`)."""
        return self.data["ctype"]

    @property
    def creator(self) -> npt.NDArray[np.uint32]:
        """CRC-32 of each item's `creator_id` (:func:`operators.dedup.id_hash32`)."""
        return self.data["creator"]

    @property
    def item_hash(self) -> npt.NDArray[np.uint32]:
        """CRC-32 of each item's `media_id` (:func:`operators.dedup.id_hash32`)."""
        return self.data["item_hash"]

    @property
    def published(self) -> npt.NDArray[np.float64]:
        """Publication times, epoch milliseconds (0 where the record gave none)."""
        return self.data["published"]

    @property
    def live(self) -> npt.NDArray[np.bool_]:
        """Whether each row is a live item (False: removed, or a row not filled yet)."""
        return self.data["live"]

    @property
    def completion(self) -> npt.NDArray[np.float32]:
        """Completion rates from the item stats (0.5, the prior, until read)."""
        return self.data["completion"]

    @property
    def like_ratio(self) -> npt.NDArray[np.float32]:
        """Like ratios from the item stats (0.5, the prior, until read)."""
        return self.data["like_ratio"]

    @property
    def trending(self) -> npt.NDArray[np.float32]:
        """Trending scores, from the item stats or the trending boards (0 until read)."""
        return self.data["trending"]

    @property
    def popular(self) -> npt.NDArray[np.float64]:
        """Popularity keys, log2(popularity) + event ms / half-life; -inf where none."""
        return self.data["popular"]

    @property
    def plays(self) -> npt.NDArray[np.float32]:
        """Plays over each item's lifetime (normalises co-engagement; 0 until read)."""
        return self.data["plays"]

    @property
    def stats_until(self) -> npt.NDArray[np.float64]:
        """Monotonic time (seconds) the row's stats stay fresh until; -inf: never read."""
        return self.data["stats_until"]

    @classmethod
    def empty(cls, n: int) -> Columns:
        """`n` rows of defaults (stats at their priors, never read)."""
        data = np.zeros(n, dtype=ROW)
        data["ctype"] = OTHER_TYPE
        data["completion"], data["like_ratio"], data["trending"] = STATS_PRIOR
        data["popular"] = -np.inf
        data["stats_until"] = -np.inf
        return cls(data)

    @classmethod
    def of(cls, records: Sequence[ItemRecord], vocab: Vocab) -> Columns:
        """Rows of records (tests build pools this way; the table fills in bulk)."""
        out = cls.empty(len(records))
        data = out.data
        data["category"] = [vocab.category(r.category) for r in records]
        data["language"] = [vocab.language(r.language) for r in records]
        data["ctype"] = [TYPE_CODES.get(r.content_type, OTHER_TYPE) for r in records]
        data["creator"] = [id_hash32(r.creator_id) for r in records]
        data["item_hash"] = [id_hash32(r.media_id) for r in records]
        data["published"] = [r.published_at for r in records]
        data["live"] = [not r.removed for r in records]
        return out


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

    def upsert(
        self, records: Iterable[ItemRecord], canonical: Mapping[str, str] | None = None
    ) -> None:
        """Insert or overwrite rows (a removed record marks its row not live).

        New rows are keyed by `canonical[media_id]` where given: the index's own id objects,
        which ANN answers carry, so their lookups match by identity.
        """
        batch = list(records)
        if not batch:
            return
        canon = canonical.get if canonical is not None else None
        with self._lock:
            rows = self._rows
            new = [m for m in dict.fromkeys(r.media_id for r in batch) if m not in rows]
            self._grow(len(rows) + len(new))
            for media_id in new:
                rows[canon(media_id, media_id) if canon else media_id] = len(rows)
            at = np.asarray([rows[r.media_id] for r in batch], np.int64)
            values = Columns.of(batch, self.vocab).data
            data = self._cols.data
            for name in META_FIELDS:  # stats stay: they are the refresher's
                data[name][at] = values[name]

    def write_stats(
        self,
        rows: Ints,
        values: npt.NDArray[np.float32],
        until: float,
        popular: npt.NDArray[np.float64] | None = None,
        plays: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Set (completion, like ratio, trending), the popularity keys and the play counts of
        `rows` (from the item stats store)."""
        data = self._cols.data
        data["completion"][rows] = values[:, 0]
        data["like_ratio"][rows] = values[:, 1]
        data["trending"][rows] = values[:, 2]
        if popular is not None:
            data["popular"][rows] = popular
        if plays is not None:
            data["plays"][rows] = plays
        data["stats_until"][rows] = until

    def write_trending(self, rows: Ints, scores: npt.NDArray[np.float32]) -> None:
        """Set the trending score of `rows` (from the trending boards)."""
        self._cols.data["trending"][rows] = scores

    def _grow(self, need: int) -> None:
        cols = self._cols
        size = len(cols)
        if need <= size:
            return
        grown = Columns.empty(max(need, size * 2))
        grown.data[:size] = cols.data
        self._cols = grown
