"""The feed pipeline: features → retrieval → filters → ranking → rules, and its ladder.

Each stage is timed into `feedflow_feed_request_seconds{stage}`. The degradation ladder
(`fallback` in the response, `feedflow_feed_fallback_total{reason}`), most degraded first:

- `trending`: Redis is slow or down and this process never saw the user: in-process
  trending, fresh items and exploration;
- `cached_features`: Redis is slow or down; the user's last features seen by this process;
- `retrieval_order`: the ranker raised or scored non-finite numbers (a bad published model);
  candidates in retrieval order, rules still apply. The model is one matrix-vector product
  over features computed in the same pass, so it has no way to hang: a timeout needs no rung
  of its own;
- `cold_start`: fewer than 5 engagements, or an unknown user: the cold-start model's list
  for the user's cohort (language, content type, device; see :mod:`serving.weekly`), cohort
  trending, fresh items and exploration.

Weekly per-user weights of the active version, when the user has some, adjust ranking and
the rules (:mod:`serving.weekly`).

The page is never empty while the catalogue is not: when every source comes back empty (a
new system with no engagement yet), the neighbours of a random direction fill it.

A/B: each request is served in the user's arm (:mod:`operators.ab`; the arm is in the
response and a label of the feed metrics). A non-personalised arm (the permanent holdback, a
"trending + rules" control) sees the user without personal signals: boards, fresh items and
exploration ranked on item features, with only the never-show filters (consumed, disliked)
kept. Every served feed goes to the impression sink with the feature rows it was ranked on.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from kernel.metrics import FEED_ERRORS, FEED_FALLBACK, FEED_ITEMS, FEED_REQUEST, timed
from kernel.settings import DEFAULTS
from operators.ab import Arm, Assigner
from operators.content import ItemRecord
from operators.ranking_contract import FEATURES, RankerModel
from serving.behaviour import BehaviourHolder, BehaviourMatch
from serving.caches import FreshItems, ItemStatsCache, SideVectors, TrendingCache
from serving.candidates import BEHAVIOUR_SHARE, Sources, apply_filters, last_resort, retrieve
from serving.catalogue import Catalogue
from serving.co_engagement import CoCandidates, CoRecords, co_candidates
from serving.coverage import ServedItems
from serving.features import CACHED, MISSING, OK, FeatureFetcher, Fetched
from serving.impressions import ImpressionSink, NoImpressions, Served
from serving.item_table import ItemTable
from serving.ranking import (
    ANN,
    BEHAVIOUR,
    CO_ENGAGED,
    EXPLORE,
    Matrix,
    Pool,
    UserContext,
    feature_matrix,
    freshness,
)
from serving.rules import Placed, RuleParams, apply_rules, reason
from serving.weekly import WeeklyState, cohort_similarity
from state.feature_store import StoreUnavailableError

log = logging.getLogger(__name__)
LADDER: Final = ("trending", "cached_features", "retrieval_order", "cold_start")
DEFAULT_ARM: Final = "default"
EVERYONE_PERSONALISED: Final = Arm(DEFAULT_ARM, True)  # no experiment, no holdback
NO_INDEX: Final = "none"  # an impression's index_version before any index is loaded
FRESHNESS: Final = FEATURES.index("freshness")
# What a new release cannot have earned yet: it is judged for its slots without them.
UNEARNED: Final = ("popularity", "collaborative", "behaviour")


@dataclass(frozen=True)
class FeedRequest:
    """A validated feed request."""

    user_id: str
    limit: int
    content_type: str | None  # VIDEO or AUDIO; None for MIXED
    diversity: float
    device: str | None = None  # the client's device class, for a cold user's cohort


@dataclass
class FeedConfig:
    """The serving settings the pipeline uses."""

    candidates: int = DEFAULTS.feed_candidates
    max_per_category: int = DEFAULTS.feed_max_per_category
    max_per_creator: int = DEFAULTS.feed_max_per_creator
    explore_share: float = DEFAULTS.feed_explore_share
    new_boost: float = DEFAULTS.feed_new_boost
    fresh_ms: float = DEFAULTS.feed_fresh_hours * 3_600_000


@dataclass
class Trace:
    """What one request went through (returned to benchmarks, not to clients)."""

    stages: dict[str, float] = field(default_factory=dict)
    rungs: list[str] = field(default_factory=list)
    candidates: int = 0
    pool: int = 0
    fetched: Fetched | None = None  # the user's features as the request read them


class ModelHolder:
    """The ranker in use; the refresher swaps in new versions whole."""

    def __init__(self, model: RankerModel) -> None:
        self.model = model


class FeedService:
    """Answers feed requests from in-process state plus one Redis round trip."""

    def __init__(
        self,
        config: FeedConfig,
        catalogue: Catalogue,
        fetcher: FeatureFetcher,
        stats: ItemStatsCache,
        trending: TrendingCache,
        fresh: FreshItems,
        models: ModelHolder,
        clock_ms: Callable[[], float] | None = None,
        side: SideVectors | None = None,
        table: ItemTable | None = None,
        weekly: WeeklyState | None = None,
        arms: Assigner | None = None,
        impressions: ImpressionSink | None = None,
        co: CoRecords | None = None,
        behaviour: BehaviourHolder | None = None,
    ) -> None:
        """`arms`: the A/B assignment (serving's runtime passes the configured one, with the
        permanent holdback); None serves everyone personalised in :data:`DEFAULT_ARM`.
        `impressions`: where served feeds go; None publishes nothing. `co`: the
        co-engagement records; None turns the source off. `behaviour`: the behaviour space
        (None, or a holder without a loaded version: the source is off)."""
        self.config, self.catalogue, self.fetcher = config, catalogue, fetcher
        self.stats, self.trending, self.fresh, self.models = stats, trending, fresh, models
        self.table = table if table is not None else ItemTable()
        self.sources = Sources(catalogue, self.table, trending, fresh, side or SideVectors())
        self.weekly = weekly if weekly is not None else WeeklyState()
        self._clock_ms = clock_ms or (lambda: time.time() * 1000)
        self._rng = random.Random()
        self.arms = arms
        self.impressions = impressions or NoImpressions("no impression sink given")
        self.co = co
        self.behaviour = behaviour if behaviour is not None else BehaviourHolder()
        self.served = ServedItems()  # for coverage: flushed to Redis by the refresher

    def arm_of(self, user_id: str) -> Arm:
        """The arm a user is served in."""
        return self.arms.assign(user_id) if self.arms is not None else EVERYONE_PERSONALISED

    def feed(
        self, req: FeedRequest, trace: Trace | None = None, publish: bool = True
    ) -> dict[str, Any]:
        """The response body of one feed request.

        `publish` False: a preview (the explorer's): no impression is published, and the page
        counts in neither the fallback counters, the coverage nor the popular share; its
        stages are timed as any feed's.
        """
        trace = trace if trace is not None else Trace()
        started = time.perf_counter()
        now_ms = int(self._clock_ms())
        arm = self.arm_of(req.user_id)
        with _stage("features", trace, arm.name):
            fetched = trace.fetched = self.fetcher.get(req.user_id)
            ctx = UserContext.of(fetched.features, fetched.weights)
            cold = ctx.cold
            if not arm.personalised:
                ctx = ctx.impersonal()
            co = self._co_engagement(ctx, fetched.status, arm.name)
        if fetched.status == MISSING:
            trace.rungs.append("trending")
        elif fetched.status == CACHED:
            trace.rungs.append("cached_features")
        if cold and fetched.status != MISSING:
            trace.rungs.append("cold_start")
        self.trending.want(ctx.retrieval_categories())
        pool, beh = self._candidates(ctx, req, trace, arm, co)
        model = self.models.model
        with _stage("ranking", trace, arm.name):
            scores, fresh, matrix = self._rank(ctx, pool, model, now_ms, trace, arm.name)
        with _stage("rules", trace, arm.name):
            params = self._rule_params(req, ctx)
            # New releases are judged without the audience they have not had time to earn.
            unproven = None if matrix is None else model.score_without(matrix, scores, UNEARNED)
            vocab = self.table.vocab
            placed = apply_rules(ctx, pool, scores, fresh, params, vocab, unproven)
            items, rows = self._items(ctx, pool, placed, co, beh)
        request_id = uuid.uuid4().hex
        if publish:
            self._count(items, arm.name, trace.rungs)
            self.impressions.publish(
                Served(request_id, req.user_id, now_ms, arm.name, model.version,
                       self.catalogue.version or NO_INDEX, items,
                       None if matrix is None else matrix[rows])
            )  # fmt: skip
        total = time.perf_counter() - started
        FEED_REQUEST.labels(stage="total", arm=arm.name).observe(total)
        trace.stages["total"] = total
        return {
            "request_id": request_id,
            "user_id": req.user_id,
            "items": items,
            "model_version": model.version,
            "index_version": self.catalogue.version,
            "arm": arm.name,
            "fallback": next((r for r in LADDER if r in trace.rungs), None),
            "took_ms": round(total * 1000, 3),
        }

    def _count(self, items: list[dict[str, Any]], arm: str, rungs: list[str]) -> None:
        """A served page in the fallback counters, the coverage sketch and the popular
        share."""
        for rung in rungs:
            FEED_FALLBACK.labels(reason=rung, arm=arm).inc()
        self.served.note(i["media_id"] for i in items)
        top = self.trending.most_popular
        popular = sum(1 for i in items if i["media_id"] in top)
        FEED_ITEMS.labels(arm=arm, popular="top100").inc(popular)
        FEED_ITEMS.labels(arm=arm, popular="other").inc(len(items) - popular)

    def _co_engagement(self, ctx: UserContext, status: str, arm: str) -> CoCandidates | None:
        """Neighbours of the user's recent positive items (None: no seeds, or no records).

        Read only when the features came from Redis: with Redis failing, the ladder's rung
        answers without it rather than waiting a second time.
        """
        if self.co is None or not ctx.co_seeds or status != OK:
            return None
        try:
            found = co_candidates(self.co.get(ctx.co_seeds))
        except StoreUnavailableError as exc:
            log.warning("co-engagement records unavailable: %s", exc)
            FEED_ERRORS.labels(stage="features", arm=arm).inc()
            return None
        return found if found.score else None

    def _behaviour(self, ctx: UserContext) -> BehaviourMatch | None:
        """The user's point in the behaviour space and its nearest items (None: no version
        loaded, no seeds, or none of them has a vector)."""
        space = self.behaviour.space
        if space is None or not ctx.co_seeds:
            return None
        return space.match(ctx.co_seeds, int(self.config.candidates * BEHAVIOUR_SHARE))

    def _candidates(
        self,
        ctx: UserContext,
        req: FeedRequest,
        trace: Trace,
        arm: Arm,
        co: CoCandidates | None,
    ) -> tuple[Pool, BehaviourMatch | None]:
        kind = req.content_type or ctx.content_type
        cold = ctx.cold and arm.personalised  # the cohort model is personalisation too
        cohort = self.weekly.cohort_items(ctx.language, kind, req.device) if cold else ()
        budget, rng = self.config.candidates, self._rng
        with _stage("retrieval", trace, arm.name):
            beh = self._behaviour(ctx)
            cands = retrieve(ctx, self.sources, budget, req.content_type, rng, cohort, co, beh)
        with _stage("filters", trace, arm.name):
            pool = apply_filters(ctx, cands, self.sources, req.content_type, co, beh)
            if len(pool) < req.limit and len(self.catalogue):
                cands.add(self._any_items(4 * req.limit), EXPLORE)
                pool = apply_filters(ctx, cands, self.sources, req.content_type, co, beh)
            if cohort:  # the cohort's order stands in for a taste the user has not shown yet
                pool.similarity = np.maximum(pool.similarity, cohort_similarity(pool.ids, cohort))
        trace.candidates, trace.pool = len(cands), len(pool)
        return pool, beh

    def _any_items(self, k: int) -> list[str]:
        dim = self.catalogue.dim
        if dim == 0:
            return []
        direction = np.asarray([self._rng.gauss(0, 1) for _ in range(dim)], dtype=np.float32)
        direction /= np.float32(np.linalg.norm(direction) or 1.0)
        return last_resort(self.catalogue, direction, k)

    def _rank(
        self, ctx: UserContext, pool: Pool, model: RankerModel, now_ms: int, trace: Trace, arm: str
    ) -> tuple[Matrix, Matrix, Matrix | None]:
        """(scores, freshness, the feature matrix scored — None when ranking failed)."""
        try:
            stats = self.stats.lookup(pool.ids, pool.cols)
            vocab = self.table.vocab
            matrix = feature_matrix(ctx, pool, stats, now_ms, self.config.fresh_ms, vocab)
            scores = model.score(matrix)
            if not np.all(np.isfinite(scores)):
                raise ValueError(f"ranker {model.version} produced non-finite scores")
        except Exception as exc:  # a failing ranker must not fail the feed
            log.warning("ranking failed, serving retrieval order: %s", exc)
            FEED_ERRORS.labels(stage="ranking", arm=arm).inc()
            trace.rungs.append("retrieval_order")
            scores = -np.arange(len(pool), dtype=np.float32)
            return scores, freshness(pool.cols.published, now_ms, self.config.fresh_ms), None
        return scores, matrix[:, FRESHNESS], matrix

    def _rule_params(self, req: FeedRequest, ctx: UserContext) -> RuleParams:
        c = self.config
        explore, new_boost = c.explore_share, c.new_boost
        if ctx.weekly is not None:  # the user's weekly appetite for exploration and news
            explore = min(explore * ctx.weekly.explore, 0.5)
            new_boost *= ctx.weekly.fresh
        return RuleParams(
            limit=req.limit,
            max_per_category=c.max_per_category,
            max_per_creator=c.max_per_creator,
            diversity=req.diversity,
            explore_share=explore,
            new_boost=new_boost,
            content_type=req.content_type,
        )

    def _items(
        self,
        ctx: UserContext,
        pool: Pool,
        placed: list[Placed],
        co: CoCandidates | None,
        beh: BehaviourMatch | None,
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The page as JSON-ready dicts (an item removed a moment ago is left out), and the
        pool row of each."""
        records = self.catalogue.items([pool.ids[p.row] for p in placed])
        page = [(p, r) for p, r in zip(placed, records, strict=True) if r is not None]
        anchors = self._anchors(ctx, [(pool.source(p.row), r) for p, r in page], co, beh)
        out = []
        for p, record in page:
            source = pool.source(p.row)
            out.append(
                {
                    "media_id": record.media_id,
                    "content_type": record.content_type,
                    "category": record.category,
                    "creator_id": record.creator_id,
                    "score": round(p.score, 4),
                    "source": source,
                    "reason": reason(source, record.media_id, anchors.get(record.media_id)),
                }
            )
        return out, [p.row for p, _ in page]

    def _anchors(
        self,
        ctx: UserContext,
        page: list[tuple[str, ItemRecord]],
        co: CoCandidates | None,
        beh: BehaviourMatch | None,
    ) -> dict[str, str]:
        """The recently watched item each page item is "because of".

        A learned source's item (co-engagement, behaviour): the seed that contributed most.
        An ANN item: the one of the same category, else the most recent other item: the ANN
        query ran on the whole taste vector, so any single anchor is an explanation, and this
        one costs no vectors. An item is never its own anchor (no anchor: no
        `because_you_watched`).
        """
        by_category: dict[str, list[str]] = {}
        if ctx.recent:
            recent = self.catalogue.items(ctx.recent)
            for media_id, record in zip(ctx.recent, recent, strict=True):
                if record is not None:
                    by_category.setdefault(record.category, []).append(media_id)
        out = {}
        for source, r in page:
            if source == CO_ENGAGED and co is not None:
                out[r.media_id] = co.anchor[r.media_id]
                continue
            if source == BEHAVIOUR and beh is not None:
                if a := beh.anchor(r.media_id):
                    out[r.media_id] = a
                continue
            if source != ANN or not ctx.recent:
                continue
            mine = [m for m in by_category.get(r.category, ()) if m != r.media_id]
            others = [m for m in ctx.recent if m != r.media_id]
            anchor = mine[0] if mine else others[0] if others else None
            if anchor is not None:
                out[r.media_id] = anchor
        return out


@contextmanager
def _stage(name: str, trace: Trace, arm: str) -> Iterator[None]:
    """`timed()` for one stage, also noting its duration in the request's trace."""
    start = time.perf_counter()
    try:
        with timed(FEED_REQUEST, FEED_ERRORS, stage=name, arm=arm):
            yield
    finally:
        trace.stages[name] = time.perf_counter() - start
