"""Ranking features: the user × item matrix the model scores, built once per request.

Pure functions over a :class:`UserContext` (derived once from the stored user features) and
a :class:`Pool` of filtered candidates with their records; no I/O. Column order is
:data:`serving.model.FEATURES`; the learning flow trains on the same code.

Example:
    >>> from operators.content import ItemRecord, Stamp
    >>> from operators.user_features import UserFeatures
    >>> ctx = UserContext.of(UserFeatures(engagements=9, top_categories=("news",)))
    >>> rec = ItemRecord(media_id="m1", stamp=Stamp(0, 0), category="news")
    >>> pool = Pool(["m1"], [rec], ["ann"], np.array([0.5], dtype=np.float32))
    >>> row = feature_matrix(ctx, pool, default_stats(1), now_ms=0, fresh_ms=86_400_000)[0]
    >>> float(row[0]), float(row[1])
    (0.5, 1.0)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

from operators.content import ItemRecord
from operators.user_features import UserFeatures, vector_of
from serving.model import FEATURES

Matrix = npt.NDArray[np.float32]
CATEGORY_AFFINITY: Final = (1.0, 0.6, 0.35)
TYPES: Final = ("VIDEO", "AUDIO")
STATS_PRIOR: Final = (0.5, 0.5, 0.0)  # completion rate, like ratio, trending score
TRENDING_SCALE: Final = float(np.log1p(1000.0))

# Candidate sources, in the order a duplicate is attributed.
CONTINUE: Final = "continue_watching"
ANN: Final = "ann"
FRESH: Final = "fresh"
TRENDING: Final = "trending"
POPULAR: Final = "popular"
EXPLORE: Final = "explore"


@dataclass(frozen=True, slots=True)
class UserContext:
    """What ranking, filters and rules need of one user, decoded once per request."""

    vector: Matrix | None = None
    categories: dict[str, float] = field(default_factory=dict)
    session: frozenset[str] = frozenset()
    creators: dict[int, float] = field(default_factory=dict)
    content_type: str | None = None
    language: str | None = None
    excluded: frozenset[int] = frozenset()
    disliked: frozenset[int] = frozenset()
    continue_ids: tuple[str, ...] = ()
    recent: tuple[str, ...] = ()
    cold: bool = True

    @classmethod
    def of(cls, features: UserFeatures | None) -> UserContext:
        """The context of stored features; an unknown user gets the empty (cold) context."""
        if features is None:
            return cls()
        kind = features.content_type if features.content_type in TYPES else None
        creators = features.creator_hashes()
        return cls(
            vector=vector_of(features),
            categories=dict(zip(features.top_categories, CATEGORY_AFFINITY, strict=False)),
            session=frozenset(features.genre_affinity_30m),
            creators={h: 1.0 / (1 + n) for n, h in enumerate(creators)},
            content_type=kind,
            language=features.language,
            excluded=frozenset(features.consumed_hashes()) | frozenset(features.disliked_hashes()),
            disliked=frozenset(features.disliked_hashes()),
            continue_ids=tuple(m for m, _ in features.continue_watching),
            recent=features.recent,
            cold=features.cold_start,
        )


@dataclass(slots=True)
class Pool:
    """Filtered candidates: ids, live records, the source each came from, similarities.

    `similarity` is the cosine with the user vector (0 when the user has none).
    """

    ids: list[str]
    records: list[ItemRecord]
    sources: list[str]
    similarity: Matrix

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: list[int]) -> Pool:
        """The sub-pool of `rows`, in that order."""
        return Pool(
            [self.ids[i] for i in rows],
            [self.records[i] for i in rows],
            [self.sources[i] for i in rows],
            self.similarity[rows] if rows else self.similarity[:0],
        )


@lru_cache(maxsize=1 << 18)
def creator_hash(creator_id: str) -> int:
    """:func:`operators.dedup.id_hash32` of a creator id, memoised (creators repeat a lot)."""
    return zlib.crc32(creator_id.encode())


def default_stats(n: int) -> Matrix:
    """Item stats rows for items nothing is known about yet."""
    return np.tile(np.asarray(STATS_PRIOR, dtype=np.float32), (n, 1))


def freshness(records: list[ItemRecord], now_ms: int, fresh_ms: float) -> Matrix:
    """exp(-age / fresh window) per item; 0 when the publication time is unknown.

    Example:
        >>> from operators.content import ItemRecord, Stamp
        >>> r = ItemRecord(media_id="m", stamp=Stamp(0, 0), published_at=1_000)
        >>> [round(float(x), 3) for x in freshness([r], 1_000 + 86_400_000, 86_400_000)]
        [0.368]
    """
    published = np.asarray([r.published_at for r in records], dtype=np.float64)
    age = np.maximum(now_ms - published, 0.0)
    out = np.where(published > 0, np.exp(-age / fresh_ms), 0.0)
    return out.astype(np.float32)


def feature_matrix(
    ctx: UserContext, pool: Pool, stats: Matrix, now_ms: int, fresh_ms: float
) -> Matrix:
    """Rows: candidates; columns: :data:`serving.model.FEATURES`.

    `stats` has one row per candidate: completion rate, like ratio, raw trending score.
    """
    n = len(pool)
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    records = pool.records
    cats = [r.category for r in records]
    out[:, 0] = pool.similarity
    if ctx.categories:
        get = ctx.categories.get
        out[:, 1] = [get(c, 0.0) for c in cats]
    if ctx.session:
        session = ctx.session
        out[:, 2] = [c in session for c in cats]
    if ctx.creators:
        get_c = ctx.creators.get
        out[:, 3] = [get_c(creator_hash(r.creator_id), 0.0) for r in records]
    if ctx.content_type is not None:
        pref = ctx.content_type
        out[:, 4] = [1.0 if r.content_type == pref else -1.0 for r in records]
    if ctx.language:
        lang = ctx.language
        out[:, 5] = [r.language == lang for r in records]
    out[:, 6:8] = stats[:, 0:2]
    out[:, 8] = np.minimum(np.log1p(np.maximum(stats[:, 2], 0.0)) / TRENDING_SCALE, 1.0)
    out[:, 9] = freshness(records, now_ms, fresh_ms)
    out[:, 10] = [s == CONTINUE for s in pool.sources]
    return out
