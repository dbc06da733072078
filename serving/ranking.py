"""Ranking features: the user × item matrix the model scores, built once per request.

Pure functions over a :class:`UserContext` (derived once from the stored user features) and
a :class:`Pool` of filtered candidates with their metadata columns
(:class:`serving.item_table.Columns`); no I/O, no per-item Python. Column order is
:data:`operators.ranking_contract.FEATURES`; the learning flow trains on the same code.

Example:
    >>> from operators.content import ItemRecord, Stamp
    >>> from operators.user_features import UserFeatures
    >>> vocab = Vocab()
    >>> ctx = UserContext.of(UserFeatures(engagements=9, top_categories=("news",)))
    >>> rec = ItemRecord(media_id="m1", stamp=Stamp(0, 0), category="news")
    >>> pool = Pool.of([rec], [ANN], [0.5], vocab)
    >>> row = feature_matrix(ctx, pool, default_stats(1), 0, 86_400_000, vocab)[0]
    >>> float(row[0]), float(row[1])
    (0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from operators.content import ItemRecord
from operators.ranking_contract import FEATURES
from operators.user_features import UserFeatures, vector_of
from operators.weekly_weights import UserWeights
from serving.item_table import STATS_PRIOR, TYPE_CODES, Columns, Vocab
from serving.weekly import BLEND, WeeklyAdjust

Matrix = npt.NDArray[np.float32]
Hashes = npt.NDArray[np.uint32]
CATEGORY_AFFINITY: Final = (1.0, 0.6, 0.35)
TYPES: Final = ("VIDEO", "AUDIO")
TRENDING_SCALE: Final = float(np.log1p(1000.0))
WEEKLY_RETRIEVAL: Final = 3  # weekly top categories retrieval adds to the user's own

# Candidate sources, in the order a duplicate is attributed; codes index SOURCES.
CONTINUE: Final = "continue_watching"
CO_ENGAGED: Final = "co_engagement"  # watched after the user's recent items by other users
ANN: Final = "ann"
FRESH: Final = "fresh"
TRENDING: Final = "trending"
POPULAR: Final = "popular"
EXPLORE: Final = "explore"
COHORT: Final = "cohort"  # the cold-start model's list for the user's cohort
BEHAVIOUR: Final = "behaviour"  # near the user's recent items in the behaviour space
# (appended: impression rows keep the codes of earlier versions)
SOURCES: Final = (CONTINUE, CO_ENGAGED, ANN, FRESH, TRENDING, POPULAR, EXPLORE, COHORT, BEHAVIOUR)
SOURCE_CODE: Final = {s: n for n, s in enumerate(SOURCES)}
_EMPTY: Final = np.zeros(0, dtype=np.uint32)


def _hashes(raw: bytes) -> Hashes:
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32) if raw else _EMPTY


@dataclass(frozen=True, slots=True)
class UserContext:
    """What ranking, filters and rules need of one user, decoded once per request."""

    vector: Matrix | None = None
    categories: dict[str, float] = field(default_factory=dict)
    session: frozenset[str] = frozenset()
    creators: dict[int, float] = field(default_factory=dict)
    content_type: str | None = None
    language: str | None = None
    excluded: Hashes = field(default_factory=lambda: _EMPTY)  # consumed + disliked (CRC-32)
    disliked: Hashes = field(default_factory=lambda: _EMPTY)
    continue_ids: tuple[str, ...] = ()
    recent: tuple[str, ...] = ()
    co_seeds: tuple[bytes, ...] = ()  # digests of the recent positive items, newest first
    cold: bool = True
    weekly: WeeklyAdjust | None = None

    @classmethod
    def of(cls, features: UserFeatures | None, weights: UserWeights | None = None) -> UserContext:
        """The context of stored features (and weekly weights); an unknown user's is cold."""
        weekly = WeeklyAdjust.of(weights) if weights is not None else None
        if features is None:
            return cls(weekly=weekly)
        kind = features.content_type if features.content_type in TYPES else None
        creators = features.creator_hashes()
        return cls(
            vector=vector_of(features),
            categories=dict(zip(features.top_categories, CATEGORY_AFFINITY, strict=False)),
            session=frozenset(features.genre_affinity_30m),
            creators={h: 1.0 / (1 + n) for n, h in enumerate(creators)},
            content_type=kind,
            language=features.language,
            excluded=_hashes(features.consumed + features.disliked),
            disliked=_hashes(features.disliked),
            continue_ids=tuple(m for m, _ in features.continue_watching),
            recent=features.recent,
            co_seeds=features.co_seeds(),
            cold=features.cold_start,
            weekly=weekly,
        )

    def retrieval_categories(self) -> tuple[str, ...]:
        """The user's categories, then up to three more from the weekly weights."""
        own = tuple(self.categories)
        if self.weekly is None:
            return own
        extra = [c for c in self.weekly.categories if c not in self.categories]
        return own + tuple(extra[:WEEKLY_RETRIEVAL])

    def impersonal(self) -> UserContext:
        """The user without personal signals (a non-personalised A/B arm): what must never
        be shown (consumed, disliked) still is not; nothing else of theirs counts."""
        return UserContext(excluded=self.excluded, disliked=self.disliked)

    def category_codes(self, vocab: Vocab) -> npt.NDArray[np.int32]:
        """Codes of the user's known categories (those the catalogue has)."""
        found = (vocab.known_category(c) for c in self.categories)
        return np.asarray([c for c in found if c is not None], dtype=np.int32)


@dataclass(slots=True)
class Pool:
    """Filtered candidates: ids, source codes, similarity to the user, metadata columns."""

    ids: list[str]
    sources: npt.NDArray[np.int8]
    similarity: Matrix
    cols: Columns
    collab: Matrix | None = None  # the collaborative feature (None: no co-engagement)
    behaviour: Matrix | None = None  # the behaviour feature (None: no point in the space)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(
        cls,
        records: Sequence[ItemRecord],
        sources: Sequence[str],
        similarity: Sequence[float],
        vocab: Vocab,
    ) -> Pool:
        """A pool from records (tests, small catalogues)."""
        return cls(
            [r.media_id for r in records],
            np.asarray([SOURCE_CODE[s] for s in sources], dtype=np.int8),
            np.asarray(similarity, dtype=np.float32),
            Columns.of(records, vocab),
        )

    def source(self, row: int) -> str:
        """The source name of one row."""
        return SOURCES[int(self.sources[row])]


def default_stats(n: int) -> Matrix:
    """Item stats rows for items nothing is known about yet (popularity 0)."""
    return np.tile(np.asarray((*STATS_PRIOR, 0.0), dtype=np.float32), (n, 1))


def popularity_feature(keys: npt.NDArray[np.float64], at_key: float, top: float) -> Matrix:
    """`log1p(popularity) / log1p(top)`, clipped to 0..1, from popularity keys.

    A key is `log2(popularity) + ts / half-life` (-inf: none): the item's decayed count as of
    any common time. `top` is the `popular:all` board's first score at the board's time `T`
    and `at_key` is `T / half-life`, so each count is brought to `T` (a stored count is as of
    the item's last view and has decayed since) and compared with the board's top: the
    feature means the same on a platform of any size and at any half-life. All 0 without a
    board (`top` 0).

    Example:
        >>> keys = np.array([10.0, 8.0, -np.inf])  # 2**10, 2**8 and no views, as of T = 0
        >>> [round(float(x), 2) for x in popularity_feature(keys, 0.0, 1023.0)]
        [1.0, 0.8, 0.0]
    """
    if not top > 0.0:
        return np.zeros(len(keys), dtype=np.float32)
    scaled = np.log1p(np.exp2(keys - at_key)) / np.log1p(top)
    out: Matrix = np.minimum(scaled, 1.0).astype(np.float32)
    return out


def freshness(published: npt.NDArray[np.float64], now_ms: int, fresh_ms: float) -> Matrix:
    """exp(-age / fresh window) per item; 0 when the publication time is unknown.

    Example:
        >>> [round(float(x), 3) for x in freshness(np.array([1_000.0, 0.0]), 86_401_000, 864e5)]
        [0.368, 0.0]
    """
    age = np.maximum(now_ms - published, 0.0)
    out = np.where(published > 0, np.exp(-age / fresh_ms), 0.0)
    return out.astype(np.float32)


def _by_code(weights: dict[str, float], vocab: Vocab, codes: npt.NDArray[np.int32]) -> Matrix:
    """`weights[category of each row]`, 0 where absent."""
    table = np.zeros(vocab.categories + 1, dtype=np.float32)
    for name, weight in weights.items():
        code = vocab.known_category(name)
        if code is not None:
            table[code] = weight
    return table[np.minimum(codes, vocab.categories)]


def feature_matrix(
    ctx: UserContext, pool: Pool, stats: Matrix, now_ms: int, fresh_ms: float, vocab: Vocab
) -> Matrix:
    """Rows: candidates; columns: :data:`operators.ranking_contract.FEATURES`.

    `stats` has one row per candidate: completion rate, like ratio, raw trending score and
    the popularity feature (:func:`popularity_feature`; 0 where a caller has no fourth
    column).
    """
    n, cols = len(pool), pool.cols
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    out[:, 0] = pool.similarity
    if ctx.categories:
        out[:, 1] = _by_code(ctx.categories, vocab, cols.category)
    if ctx.session:
        out[:, 2] = _by_code(dict.fromkeys(ctx.session, 1.0), vocab, cols.category)
    for creator, weight in ctx.creators.items():
        out[cols.creator == creator, 3] = weight
    if ctx.content_type is not None:
        out[:, 4] = np.where(cols.ctype == TYPE_CODES[ctx.content_type], 1.0, -1.0)
    if ctx.language:
        out[:, 5] = cols.language == vocab.language(ctx.language)
    out[:, 6:8] = stats[:, 0:2]
    out[:, 8] = np.minimum(np.log1p(np.maximum(stats[:, 2], 0.0)) / TRENDING_SCALE, 1.0)
    out[:, 9] = freshness(cols.published, now_ms, fresh_ms)
    out[:, 10] = pool.sources == SOURCE_CODE[CONTINUE]
    if stats.shape[1] > 3:
        out[:, 11] = stats[:, 3]
    if pool.collab is not None:
        out[:, 12] = pool.collab
    if pool.behaviour is not None:
        out[:, 13] = pool.behaviour
    if ctx.weekly is not None:
        _blend_weekly(out, ctx.weekly, cols, vocab)
    return out


def _blend_weekly(out: Matrix, weekly: WeeklyAdjust, cols: Columns, vocab: Vocab) -> None:
    """Category affinity and type match, half the flows' value and half the week's."""
    if weekly.categories:
        week = _by_code(weekly.categories, vocab, cols.category)
        out[:, 1] = BLEND * out[:, 1] + (1.0 - BLEND) * week
    sign = (cols.ctype == TYPE_CODES["VIDEO"]).astype(np.float32) - (
        cols.ctype == TYPE_CODES["AUDIO"]
    )
    out[:, 4] = BLEND * out[:, 4] + (1.0 - BLEND) * weekly.type_lean * sign
