"""Everything one serving process holds, built from settings and started by the app's lifespan.

Three Redis clients, each for one job: the request path's (10 ms timeouts, no retries), the
refresher's and the index reader's (blocking reads of the update log need a longer timeout).
Start-up loads the index (when a version exists), reads the boards, the ranker and the
catalogue once, then hands over to the background threads; `gc.freeze()` follows the first
moment everything is ready, so the collector never walks the start-up heap again.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kernel.errors import ConfigError
from kernel.metrics import SERVING_READY, SERVING_REDIS_UP
from kernel.settings import Settings
from operators.ab import Assigner
from operators.ranking_contract import default_model
from serving.behaviour import BehaviourHolder
from serving.caches import FreshItems, ItemStatsCache, SideVectors, TrendingCache, records_of
from serving.catalogue import Catalogue, ServingIndex
from serving.co_engagement import CoRecords
from serving.explore import Explorer
from serving.features import FeatureFetcher
from serving.feed import FeedConfig, FeedService, ModelHolder
from serving.impressions import impression_sink
from serving.item_table import ItemTable
from serving.params import Limits
from serving.refresher import Refresher
from serving.weekly import WeeklyState
from state.ab_config import load_config
from state.behaviour_store import BehaviourStore
from state.index_keys import IndexKeys
from state.index_replica import IndexParams, snapshot_store
from state.item_store import ItemStore
from state.redis_client import BACKGROUND, LOG_READER, RedisClient, connect, request_role
from state.request_reads import RedisCoSource, RedisUserSource
from state.update_log import LogEntry

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The serving process's components and their lifecycle."""

    service: FeedService
    limits: Limits
    refresher: Refresher | None = None
    reader: ServingIndex | None = None
    clients: list[RedisClient] = field(default_factory=list)
    explorer: Explorer | None = None  # the /explore page's reads, when it is enabled
    frozen: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def catalogue(self) -> Catalogue:
        """The served index (the feed service's)."""
        return self.service.catalogue

    @property
    def trending(self) -> TrendingCache:
        """The trending boards' cache (the feed service's)."""
        return self.service.trending

    def start(self) -> None:
        """One synchronous refresh round, then the background threads."""
        self.service.impressions.start()
        if self.refresher is not None:
            self.refresher.refresh()
            self.refresher.start()
        self.after_round()

    def after_round(self) -> None:
        """After each refresh round: publish Redis health; freeze the start-up heap the first
        time the process is ready."""
        ready = self.readiness()[0]
        with self._lock:
            if self.frozen or not ready:
                return
            gc.collect()
            gc.freeze()
            self.frozen = True
        log.info("ready; %d objects frozen out of the collector's reach", gc.get_freeze_count())

    def stop(self) -> None:
        """Stop the threads and close the clients."""
        if self.refresher is not None:
            self.refresher.stop()
        if self.reader is not None:
            self.reader.stop()
        for client in self.clients:
            client.close()
        self.service.impressions.stop()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): this replica can serve once its index is loaded and it read the
        boards once. Redis failing later does not make it unready: every replica shares that
        Redis, feeds are still answered from the caches and the fallback rungs, and a
        load balancer pulling every replica at once would turn a degraded service into
        none. It is reported as `degraded` (and `feedflow_serving_redis_up`) instead."""
        redis_ok = self.refresher.redis_ok if self.refresher is not None else True
        reachable = redis_ok and self.service.fetcher.healthy
        SERVING_REDIS_UP.set(1 if reachable else 0)
        detail = {
            "index_loaded": self.catalogue.ready,
            "index_version": self.catalogue.version,
            "items": len(self.catalogue),
            "trending_loaded": self.trending.loaded,
            "redis_reachable": reachable,  # not a readiness condition
            "degraded": [] if reachable else ["redis_unreachable"],
            "model_version": self.service.models.model.version,
            "weights_version": self.service.weekly.version,
            "behaviour_version": self.service.behaviour.version,  # not a readiness condition
            "item_stats_cached": len(self.service.stats),
            "fresh_items": len(self.service.fresh),
            "impressions": self.service.impressions.status(),  # not a readiness condition
        }
        ready = bool(detail["index_loaded"] and detail["trending_loaded"])
        SERVING_READY.set(1 if ready else 0)
        return ready, detail


def check_settings(s: Settings) -> None:
    """Reject serving settings that cannot work.

    Raises:
        ConfigError: naming the first bad value.
    """
    checks = [
        (s.feed_candidates >= 50, "feed_candidates must be ≥ 50"),
        (s.feed_ef_search >= 0, "feed_ef_search must be ≥ 0 (0: the index's own)"),
        (1 <= s.feed_limit_default <= s.feed_limit_max, "need 1 ≤ feed_limit_default ≤ max"),
        (s.feed_max_per_category >= 1 and s.feed_max_per_creator >= 1, "caps must be ≥ 1"),
        (0.0 <= s.feed_diversity <= 1.0, "feed_diversity must be in [0, 1]"),
        (0.0 <= s.feed_explore_share <= 0.5, "feed_explore_share must be in [0, 0.5]"),
        (s.feed_fresh_hours > 0, "feed_fresh_hours must be > 0"),
        (s.redis_timeout_ms >= 1, "redis_timeout_ms must be ≥ 1"),
        (s.serving_refresh_ms >= 50, "serving_refresh_ms must be ≥ 50"),
        (s.item_stats_ttl_s > 0, "item_stats_ttl_s must be > 0"),
        (s.impressions_buffer >= 1, "impressions_buffer must be ≥ 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"serving settings: {message}")


def feed_config(s: Settings) -> FeedConfig:
    """The pipeline's part of the settings."""
    return FeedConfig(
        candidates=s.feed_candidates,
        max_per_category=s.feed_max_per_category,
        max_per_creator=s.feed_max_per_creator,
        explore_share=s.feed_explore_share,
        new_boost=s.feed_new_boost,
        fresh_ms=s.feed_fresh_hours * 3_600_000,
    )


def build_runtime(settings: Settings, keys: IndexKeys | None = None) -> Runtime:
    """Every component of a serving process, not yet started."""
    settings.require("redis_url")
    check_settings(settings)
    arms = Assigner(load_config(settings.ab_config))  # an invalid config stops start-up here
    url = settings.redis_url
    fast = connect(url, request_role(settings.redis_timeout_ms))
    slow = connect(url, BACKGROUND)
    log_client = connect(url, LOG_READER)
    fresh, table = FreshItems(settings.feed_fresh_hours * 3_600_000), ItemTable()

    def on_entries(entries: Sequence[LogEntry], now: float) -> None:
        del now
        records = records_of(entries)
        table.upsert(records)
        fresh.add(records)

    reader = ServingIndex(
        log_client,
        snapshot_store(settings),
        keys or IndexKeys(),
        replace(
            IndexParams.from_settings(settings),
            ef_search=settings.feed_ef_search or settings.index_ef_search,
            read_vectors=True,  # a feed reads its candidates' vectors
        ),
        listener=on_entries,
    )
    stats = ItemStatsCache(
        table, settings.item_stats_ttl_s, popular_half_life_h=settings.popular_half_life_h
    )
    trending, models, weekly = TrendingCache(), ModelHolder(default_model()), WeeklyState()
    fetcher = FeatureFetcher(
        RedisUserSource(fast, lambda: weekly.version),
        settings.features_cache_users,
        settings.redis_retry_ms / 1000,
    )
    side = SideVectors()
    behaviour = BehaviourHolder(
        BehaviourStore(slow, snapshot_store(settings), (keys or IndexKeys()).prefix)
    )
    service = FeedService(
        feed_config(settings), reader, fetcher, stats, trending, fresh, models,
        side=side, table=table, weekly=weekly, arms=arms,
        impressions=impression_sink(settings),
        co=CoRecords(RedisCoSource(fast), settings.co_cache_ms / 1000),
        behaviour=behaviour,
    )  # fmt: skip
    limits = Limits(settings.feed_limit_default, settings.feed_limit_max, settings.feed_diversity)
    runtime = Runtime(service, limits, reader=reader, clients=[fast, slow, log_client])
    if settings.serving_explore:
        runtime.explorer = Explorer(service, slow, ItemStore(slow, keys or IndexKeys()))
    runtime.refresher = Refresher(
        slow, reader, stats, trending, fresh, models, side, table,
        interval_s=settings.serving_refresh_ms / 1000,
        start_reader=reader.start,
        after_round=runtime.after_round,
        weekly=weekly, behaviour=behaviour, served=service.served,
    )  # fmt: skip
    return runtime
