"""Online/offline parity: served ranking rows against the same rows recomputed from the lake.

Serving puts every row it scored into the feed's impression (`feed.impressions`, kept by the
lake). For a sample of those impressions, :func:`check` replays the lake's events through the
engagement flow's own logic (:mod:`operators.point_in_time`), turns the user's features and
each item's stats into the ranking's inputs with serving's own code
(:meth:`UserContext.of`, :func:`serving.caches.stats_values`, :meth:`Columns.of`) and
computes the rows with :func:`serving.ranking.feature_matrix`, then compares column by column.

A store read at time `t` may hold any version written a short while before `t`: a user's
record reaches Redis after at most `user_features_refresh_s` of that user's event time
(plus the pipeline), and serving keeps an item's stats for `item_stats_ttl_s`. A served value
therefore agrees when it equals (within `tolerance`) the value computed from some version of
that while: as of `t − staleness`, or after any change between then and `t`. What stays is
skew: a definition that differs between the two paths (a window cut in another time zone,
a changed default, a stale deploy), which diverges on most rows it touches.

Checked: the catalogue's :data:`operators.feature_catalogue.PARITY_CHECKED`, the columns
computed from what the lake holds (user features, item stats, item metadata, the request's
time). Not recomputed: similarity, trending, popularity, collaborative, behaviour and
continue-watching, whose inputs (the index's vectors, the boards, co-engagement, the
behaviour space, the candidate's source) are not in the lake.
Item metadata is the item store's today, and weekly weights the active version's: a change
since the impression reads as divergence of category_affinity / type_match. A user who
engaged with an item the store no longer knows (removed since) has features the replay
cannot rebuild: the user columns of their rows are left out (`history_item_unknown`), not
counted as divergence.

Example:
    >>> report = ParityReport()
    >>> report.note("freshness", agrees=True); report.note("freshness", agrees=False)
    >>> report.divergence()["freshness"]
    0.5
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from kernel.settings import Settings
from operators.content import ItemRecord
from operators.contracts import EngagementEvent, Impression, ImpressionItem
from operators.feature_catalogue import PARITY_CHECKED
from operators.item_info import ItemLookup
from operators.item_stats import ItemStatsRecord
from operators.point_in_time import ItemInput, Window, item_versions, user_versions
from operators.ranking_contract import FEATURES
from operators.user_features import UserFeatures
from operators.weekly_weights import UserWeights
from serving.caches import stats_values
from serving.item_table import Columns, Vocab
from serving.ranking import SOURCE_CODE, Matrix, Pool, UserContext, feature_matrix

#: The ranking columns recomputed from the lake (catalogue `ranking.<column>`).
CHECKED: Final = PARITY_CHECKED
#: Those of them that come from the user's features.
USER_COLUMNS: Final = (
    "category_affinity", "session_genre", "creator_affinity", "type_match", "language_match"
)  # fmt: skip
_PIPELINE_MS: Final = 5_000  # flow batches and epochs, on top of a record's own cadence
_EXAMPLES: Final = 3


@dataclass(frozen=True)
class ParityConfig:
    """How far back a served value may come from, and how close is equal."""

    user_staleness_ms: int
    item_staleness_ms: int
    fresh_ms: float
    tolerance: float = 1e-4

    @classmethod
    def of(cls, settings: Settings) -> ParityConfig:
        """The staleness the settings allow each store, and serving's freshness window."""
        return cls(
            user_staleness_ms=settings.user_features_refresh_s * 1000 + _PIPELINE_MS,
            item_staleness_ms=int(settings.item_stats_ttl_s * 1000) + _PIPELINE_MS,
            fresh_ms=settings.feed_fresh_hours * 3_600_000,
        )


@dataclass
class ParityReport:
    """Rows compared and diverged per checked column; rows left out, by reason."""

    impressions: int = 0
    compared: Counter[str] = field(default_factory=Counter)
    diverged: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def note(self, column: str, agrees: bool, example: dict[str, Any] | None = None) -> None:
        """One served value of `column`, and whether some allowed version gives it."""
        self.compared[column] += 1
        if not agrees:
            self.diverged[column] += 1
            if example is not None and len(self.examples[column]) < _EXAMPLES:
                self.examples[column].append(example)

    def divergence(self) -> dict[str, float]:
        """Share of compared rows that diverged, per column compared at least once."""
        return {c: self.diverged[c] / n for c, n in self.compared.items() if n}

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--json` (request ids and media ids, never user ids)."""
        return {
            "impressions": self.impressions,
            "rows": max(self.compared.values(), default=0),
            "divergence": {c: round(v, 6) for c, v in sorted(self.divergence().items())},
            "compared": dict(sorted(self.compared.items())),
            "diverged": {c: self.diverged[c] for c in sorted(self.compared)},
            "skipped": dict(sorted(self.skipped.items())),
            "examples": {c: xs for c, xs in sorted(self.examples.items()) if xs},
        }


@dataclass(frozen=True)
class Context:
    """What the recompute reads beside the lake: item metadata, the user's weekly weights,
    which arms are served without personal signals."""

    records: Mapping[str, ItemRecord]
    weights: Callable[[str], UserWeights | None]
    impersonal_arms: frozenset[str]


def check(
    settings: Settings,
    config: ParityConfig,
    items: ItemLookup,
    context: Context,
    events: Iterable[EngagementEvent],
    impressions: Sequence[Impression],
) -> ParityReport:
    """Compare each row of `impressions` with its recompute; `events` must hold every event
    of their users and of everyone who engaged with their items (one per event id, a
    user's in the order the flow read them)."""
    by_user: dict[str, list[EngagementEvent]] = defaultdict(list)
    for ev in events:
        by_user[ev.user_id].append(ev)
    us, its = config.user_staleness_ms, config.item_staleness_ms
    windows: dict[str, list[Window]] = defaultdict(list)
    wanted: dict[str, list[Window]] = defaultdict(list)
    for imp in impressions:
        windows[imp.user_id].append((imp.ts - us, imp.ts))
        for item in imp.items:
            wanted[item.media_id].append((imp.ts - its, imp.ts))
    inputs: list[tuple[int, ItemInput]] = []
    user_at: dict[tuple[str, Window], list[UserFeatures]] = {}
    for user_id in sorted(set(by_user) | set(windows)):
        at = user_versions(
            settings, items, by_user.get(user_id, []), windows.get(user_id, []), inputs
        )
        user_at |= {(user_id, w): v for w, v in at.items()}
    item_at = item_versions(settings, items, inputs, wanted)
    unknown = _first_unknown(items, by_user, windows)
    report = ParityReport()
    for imp in impressions:
        report.impressions += 1
        versions = user_at[imp.user_id, (imp.ts - us, imp.ts)]
        stats = [item_at[i.media_id, (imp.ts - its, imp.ts)] for i in imp.items]
        known = unknown.get(imp.user_id, imp.ts) >= imp.ts
        _compare(config, context, imp, versions, stats, report, known)
    return report


def _first_unknown(
    items: ItemLookup, by_user: Mapping[str, list[EngagementEvent]], users: Iterable[str]
) -> dict[str, int]:
    """Per user, the time of their first event on an item the lookup does not know."""
    cache: dict[str, bool] = {}
    out: dict[str, int] = {}
    for user_id in users:
        for ev in by_user.get(user_id, []):
            media = ev.media_id
            if media is not None and media not in cache:
                cache[media] = items(media) is not None
            if media is not None and not cache[media]:
                out[user_id] = min(out.get(user_id, ev.ts), ev.ts)
    return out


def _compare(
    config: ParityConfig,
    context: Context,
    imp: Impression,
    users: list[UserFeatures],
    stats: list[list[ItemStatsRecord | None]],
    report: ParityReport,
    history_known: bool = True,
) -> None:
    """Every checked column of one impression's rows (the user's only with every item of
    the user's history known)."""
    rows: list[tuple[ImpressionItem, ItemRecord, list[ItemStatsRecord | None]]] = []
    for item, versions in zip(imp.items, stats, strict=True):
        record = context.records.get(item.media_id)
        if not item.features:
            report.skipped["no_feature_row"] += 1
        elif item.source not in SOURCE_CODE:
            report.skipped["unknown_source"] += 1
        elif record is None:
            report.skipped["item_unknown"] += 1
        else:
            rows.append((item, record, versions))
    if not rows:
        return
    vocab = Vocab()
    served = [r[0] for r in rows]
    pool = Pool(
        [i.media_id for i in served],
        np.asarray([SOURCE_CODE[i.source] for i in served], dtype=np.int8),
        np.asarray([i.features[0] for i in served], dtype=np.float32),
        Columns.of([r[1] for r in rows], vocab),
    )
    weights = context.weights(imp.user_id)
    personal = imp.arm not in context.impersonal_arms
    contexts = [UserContext.of(f, weights) for f in _distinct(users)]
    if not personal:
        contexts = [c.impersonal() for c in contexts[-1:]]
    depth = max(len(r[2]) for r in rows)
    matrices = [
        feature_matrix(
            contexts[min(k, len(contexts) - 1)], pool,
            _stats([r[2][min(k, len(r[2]) - 1)] for r in rows]),
            imp.ts, config.fresh_ms, vocab,
        )
        for k in range(max(depth, len(contexts)))
    ]  # fmt: skip
    if not history_known:
        report.skipped["history_item_unknown"] += len(rows)
    for column in CHECKED:
        if column in USER_COLUMNS and not history_known:
            continue
        c = FEATURES.index(column)
        for n, item in enumerate(served):
            if c >= len(item.features):
                continue
            value = item.features[c]
            candidates = [float(m[n, c]) for m in matrices]
            agrees = any(abs(value - x) <= config.tolerance for x in candidates)
            report.note(column, agrees, None if agrees else {
                "request_id": imp.request_id, "media_id": item.media_id,
                "served": value, "recomputed": sorted(set(candidates)),
            })  # fmt: skip


def _distinct(users: list[UserFeatures]) -> list[UserFeatures]:
    """The versions, each once (consecutive windows share records), oldest first."""
    out: list[UserFeatures] = []
    for f in users:
        if not out or out[-1] != f:
            out.append(f)
    return out


def _stats(records: list[ItemStatsRecord | None]) -> Matrix:
    """Serving's stats rows of stored records (no popularity column: it is not checked)."""
    return np.asarray([stats_values(r) for r in records], dtype=np.float32)
