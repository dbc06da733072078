"""The serving process's background thread: keeps in-process state fresh, off the request path.

Every `interval_s` it reads the trending and popularity boards (one MGET), the ranker pointer
(and the new weights when it moved), the weekly weights pointer (and the new version's cohort
lists when it moved), the behaviour-space pointer (and loads the new version when it moved:
:class:`serving.behaviour.BehaviourHolder`) and rescans the catalogue when the index version
changed; every
`stats_interval_s` it fetches the item stats that requests found missing or stale. Redis
errors are logged once per outage and leave the caches as they were; `redis_ok` says whether
the last round trip worked (for /readyz).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import redis

from kernel.metrics import RANKER_LOADED
from operators.feature_codecs import decode_item_stats, decode_trending
from operators.item_stats import ItemStatsRecord
from operators.keys import is_popular
from operators.ranking_contract import ModelFormatError, parse_model
from serving.behaviour import BehaviourHolder
from serving.caches import (
    POPULAR_ALL,
    Board,
    FreshItems,
    ItemStatsCache,
    SideVectors,
    TrendingCache,
)
from serving.catalogue import Catalogue
from serving.coverage import ServedItems
from serving.feed import ModelHolder
from serving.item_table import ItemTable
from serving.weekly import WeeklyState
from state.feature_store import ITEM, TRENDING, RedisFeatureStore, StoreUnavailableError
from state.model_registry import RedisModelRegistry
from state.redis_client import RedisClient

log = logging.getLogger(__name__)
CHUNK: Final = 256  # small MGETs: decoding holds the GIL that requests need
MAX_FRESH_VECTORS: Final = 50_000
PRELOAD_CHUNK: Final = 2_000
# Bounds the refresher's share of the process: ~20k item stats a second at the default tick.
REFRESH_PER_TICK: Final = 1_000
_FAILURES = (redis.RedisError, OSError, StoreUnavailableError)


class Refresher:
    """Refreshes the caches of one serving process (see module doc)."""

    def __init__(
        self,
        client: RedisClient,
        catalogue: Catalogue,
        stats: ItemStatsCache,
        trending: TrendingCache,
        fresh: FreshItems,
        models: ModelHolder,
        side: SideVectors,
        table: ItemTable,
        interval_s: float = 1.0,
        stats_interval_s: float = 0.05,
        start_reader: Callable[[], None] | None = None,
        after_round: Callable[[], None] | None = None,
        weekly: WeeklyState | None = None,
        behaviour: BehaviourHolder | None = None,
        served: ServedItems | None = None,
    ) -> None:
        self._client, self._catalogue = client, catalogue
        self._features = RedisFeatureStore(client, attempts=1)  # a failed round waits its turn
        self._registry = RedisModelRegistry(client)
        self._stats, self._trending, self._fresh, self._models = stats, trending, fresh, models
        self._side, self._table = side, table
        self._interval, self._stats_interval = interval_s, stats_interval_s
        self._start_reader, self._after_round = start_reader, after_round
        self._weekly, self._behaviour, self._served = weekly, behaviour, served
        self._scanned: str | None = None
        self._rejected: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.redis_ok = False
        self._error = ""

    # -- rounds ------------------------------------------------------------------------

    def refresh(self) -> None:
        """One full round: reader start-up, catalogue scan, boards, ranker, item stats.

        The reader is started here rather than by the caller so that a process started
        while Redis is down keeps trying (and stays not ready) instead of failing.
        """
        try:
            if self._start_reader is not None:
                self._start_reader()
                self._start_reader = None
            self._scan_if_new_version()
            self._refresh_boards()
            self._refresh_model()
            if self._weekly is not None:
                self._weekly.refresh(self._client)
            if self._behaviour is not None:
                self._behaviour.refresh()
            self._fresh.rebuild()
            if self._served is not None:
                self._served.flush(self._client, int(time.time() * 1000))
            self._trending.want(self._fresh.categories())
            self._sync_side_vectors()
            self.refresh_stats()
            self._ok()
        except _FAILURES as exc:
            self._failed(exc)
        if self._after_round is not None:
            self._after_round()

    def refresh_stats(self) -> int:
        """Fetch item stats requests found stale (at most REFRESH_PER_TICK); how many read."""
        return self._fetch_stats(self._stats.take_pending(REFRESH_PER_TICK))

    def _fetch_stats(self, ids: list[str], chunk: int = CHUNK) -> int:
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            raw = self._features.get_many(ITEM, part)
            self._stats.store(part, [_item_stats(v) for v in raw])
            time.sleep(0)  # let a waiting request have the GIL between chunks
        return len(ids)

    def _scan_if_new_version(self) -> None:
        version = self._catalogue.version
        if version is None or version == self._scanned:
            return
        started = time.perf_counter()
        categories: set[str] = set()
        records = list(self._catalogue.live_records())
        categories.update(r.category for r in records)
        self._table.upsert(records, {m: m for m in self._catalogue.live_ids()})
        self._fresh.add(records)
        self._trending.want(categories)
        # Every item's stats once, so requests start warm (before /readyz, at start-up).
        self._fetch_stats([r.media_id for r in records], chunk=PRELOAD_CHUNK)
        self._scanned = version
        log.info(
            "catalogue %s: %d items, %d categories, %d fresh (scanned in %.2fs)",
            version, len(records), len(categories), len(self._fresh),
            time.perf_counter() - started,
        )  # fmt: skip

    def _sync_side_vectors(self) -> None:
        wanted = [*self._trending.item_ids(), *self._fresh.newest()[:MAX_FRESH_VECTORS]]
        fetched = self._side.sync(wanted, self._catalogue.vectors)
        if fetched:
            log.debug("side vectors: %d fetched, %d held", fetched, len(self._side))

    def _refresh_boards(self) -> None:
        names = self._trending.names()
        raw = self._features.get_many(TRENDING, names)
        boards: dict[str, Board] = {}
        for name, value in zip(names, raw, strict=True):
            if isinstance(value, bytes):
                try:
                    board = decode_trending(value)
                except (msgspec.DecodeError, ValueError) as exc:
                    log.warning("unreadable trending board %s: %s", name, exc)
                    continue
                boards[name] = tuple(board.items)
                if name == POPULAR_ALL:
                    self._stats.store_popular_reference(board.ts, boards[name])
            else:
                boards[name] = ()
        self._trending.update(boards)
        # Popularity boards carry popularity, not trending scores
        self._stats.store_trending(b for name, b in boards.items() if not is_popular(name))

    def _refresh_model(self) -> None:
        version = self._registry.active()
        if version is None or version in (self._models.model.version, self._rejected):
            return
        raw = self._registry.get(version)
        try:
            if raw is None:
                raise ModelFormatError(f"ranker weights {version!r} are not published")
            model = parse_model(raw)
        except ModelFormatError as exc:
            log.error("keeping ranker %s: %s", self._models.model.version, exc)
            self._rejected = version
            return
        self._models.model = model
        RANKER_LOADED.set(time.time())
        log.info("ranker %s loaded", model.version)

    def _ok(self) -> None:
        if not self.redis_ok and self._error:
            log.info("redis reachable again")
        self.redis_ok, self._error = True, ""

    def _failed(self, exc: Exception) -> None:
        if str(exc) != self._error:
            log.warning("refresh failed, keeping in-process state: %s", exc)
        self.redis_ok, self._error = False, str(exc)

    # -- thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Refresh on a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="serving-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_full = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_full:
                self.refresh()
                next_full = now + self._interval
            else:
                try:
                    self.refresh_stats()
                except _FAILURES as exc:
                    self._failed(exc)
            self._stop.wait(self._stats_interval)

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _item_stats(value: Any) -> ItemStatsRecord | None:
    if not isinstance(value, bytes):
        return None
    try:
        return decode_item_stats(value)
    except (msgspec.DecodeError, ValueError):
        return None
