"""The index reader of a serving replica: snapshot + update log, kept fresh, safe to query.

It loads the newest snapshot of the active version, applies the log after it, and keeps
applying it (a background thread blocking on the stream, or explicit `poll()` calls). One
lock serialises log application and queries, because hnswlib is not safe for concurrent
insert and query. When the active pointer moves it builds the new version completely,
then swaps it in under the lock: answers never mix versions.

Example:
    reader = IndexReader(connect(url, LOG_READER), DirSnapshotStore(index_dir))
    reader.start()
    hits = reader.query(user_vector, k=500)          # [(media_id, score), ...]
    records = reader.items([m for m, _ in hits])      # mirrored metadata, no Redis trip
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from kernel.metrics import INDEX_DELETED, INDEX_ITEMS, INDEX_VERSION, PUBLISH_TO_SEARCHABLE
from operators.content import ItemRecord
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry
from state.index_replica import IndexParams, IndexReplica
from state.redis_client import RedisClient
from state.snapshots import SnapshotError, SnapshotStore
from state.update_log import ADD, LogEntry, UpdateLog, stream_id
from state.vector_index import Hit

log = logging.getLogger(__name__)
Listener = Callable[[Sequence[LogEntry], float], None]


class IndexReader:
    """A read replica of the active index version with mirrored item metadata."""

    def __init__(
        self,
        client: RedisClient,
        store: SnapshotStore,
        keys: IndexKeys | None = None,
        params: IndexParams | None = None,
        *,
        block_ms: int = 100,
        version_check_s: float = 1.0,
        listener: Listener | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client, self._store = client, store
        self.keys = keys or IndexKeys()
        self._params = params or IndexParams()
        self._registry = IndexRegistry(client, self.keys)
        self._block_ms, self._check_s = block_ms, version_check_s
        self._listener, self._clock = listener, clock
        self._lock = threading.Lock()
        self._replica: IndexReplica | None = None
        self._last_check = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def load(self) -> bool:
        """Load the active version now; returns False while no version exists."""
        self._last_check = self._clock()
        active = self._registry.active()
        current = self._replica.info.version if self._replica else None
        if active is None or active == current:
            return active is not None
        fresh = self._build(active)
        with self._lock:
            self._replica = fresh
        log.info("index reader serving %s (%d items)", active, len(fresh.index))
        self._report(fresh)
        return True

    def _build(self, version: str) -> IndexReplica:
        info = self._registry.get(version)
        replica = IndexReplica.load(info, self._store, self._params)
        replica.catch_up(UpdateLog(self._client, self.keys, version))
        return replica

    def poll(self, block_ms: int = 0) -> int:
        """Apply new log entries (waiting up to `block_ms` for some); returns how many."""
        if self._clock() - self._last_check >= self._check_s or self._replica is None:
            self.load()
            self._reload_if_stale()
        replica = self._replica
        if replica is None:
            return 0
        entries = UpdateLog(self._client, self.keys, replica.info.version).read(
            replica.log_id, block_ms=block_ms
        )
        if not entries:
            return 0
        with self._lock:
            if replica is not self._replica:  # swapped meanwhile; the new one read its own log
                return 0
            replica.apply(entries)
        self._observe([e for _, e in entries])
        self._report(replica)
        return len(entries)

    def _reload_if_stale(self) -> None:
        """Reload the newest snapshot when the log we need was trimmed, or to compact.

        Compaction is the writer's: rebuilding a large graph here would hold the lock for
        minutes, so a reader with too many deleted points adopts the writer's compacted
        snapshot instead, built beside the served one and swapped in whole.
        """
        replica = self._replica
        if replica is None:
            return
        version = replica.info.version
        trimmed = UpdateLog(self._client, self.keys, version).trimmed_before()
        if stream_id(replica.log_id) < stream_id(trimmed):
            log.info("index reader reloading %s: fell behind the trimmed log", version)
            fresh = self._build(version)
            with self._lock:
                self._replica = fresh
            return
        share = self._params.compaction_share
        if not replica.index.needs_compaction(share):
            return
        found = self._store.latest(version)
        # A snapshot with few deleted points that this replica was not built from (the one it
        # was built from would bring the removals back from the log, reload after reload).
        if found is None or found[0].name == replica.snapshot:
            return
        if not (found[0].compacted or found[0].deleted <= share * found[0].items):
            return
        log.info("index reader reloading %s: too many deleted points; adopting the compacted"
                 " snapshot", version)  # fmt: skip
        # The graph changed, the records did not. What the catch-up brings past this
        # replica's position becomes searchable with the swap: observe it then.
        seen = stream_id(replica.log_id)
        brought: list[LogEntry] = []
        fresh = replica.with_graph_of(self._store, self._params, found)
        fresh.catch_up(
            UpdateLog(self._client, self.keys, version),
            on_batch=lambda batch: brought.extend(e for i, e in batch if stream_id(i) > seen),
        )
        with self._lock:
            self._replica = fresh
        self._observe(brought)

    def _observe(self, entries: Sequence[LogEntry]) -> None:
        now = self._clock()
        for entry in entries:
            if entry.op == ADD and entry.record.published_at > 0:
                PUBLISH_TO_SEARCHABLE.observe(max(0.0, now - entry.record.published_at / 1000))
        if self._listener is not None:
            self._listener(entries, now)

    def _report(self, replica: IndexReplica) -> None:
        INDEX_ITEMS.labels(role="reader").set(len(replica.index))
        INDEX_DELETED.labels(role="reader").set(replica.index.deleted_count)
        INDEX_VERSION.clear()
        INDEX_VERSION.labels(version=replica.info.version).set(1)

    def start(self) -> None:
        """Load and keep applying the log on a daemon thread."""
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="index-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll(self._block_ms) == 0 and self._replica is None:
                    self._stop.wait(self._block_ms / 1000)
            except (redis.RedisError, OSError, SnapshotError) as exc:
                log.warning("index reader poll failed: %s", exc)
                self._stop.wait(0.5)

    def stop(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- queries -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a version is loaded."""
        return self._replica is not None

    @property
    def version(self) -> str | None:
        """The version being served."""
        replica = self._replica
        return replica.info.version if replica else None

    @property
    def log_id(self) -> str | None:
        """The last log entry applied."""
        replica = self._replica
        return replica.log_id if replica else None

    def __len__(self) -> int:
        replica = self._replica
        return len(replica.index) if replica else 0

    def query(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """Up to `k` (media_id, score) pairs, best first; filter after, not inside."""
        with self._lock:
            replica = self._replica
            return replica.index.query(vector, k) if replica else []

    def similar(self, media_id: str, k: int) -> list[Hit]:
        """Items most like `media_id` (itself excluded); empty when it is unknown."""
        with self._lock:
            replica = self._replica
            vec = replica.index.vector(media_id) if replica else None
            if replica is None or vec is None:
                return []
            hits = replica.index.query(vec, k + 1)
        return [h for h in hits if h[0] != media_id][:k]

    def vector(self, media_id: str) -> npt.NDArray[np.float32] | None:
        """A live item's vector in the served version's space."""
        with self._lock:
            replica = self._replica
            return replica.index.vector(media_id) if replica else None

    def item(self, media_id: str) -> ItemRecord | None:
        """The mirrored metadata of a live item."""
        replica = self._replica
        return replica.live(media_id) if replica else None

    def items(self, ids: Sequence[str]) -> list[ItemRecord | None]:
        """Mirrored metadata of many items, None where unknown or removed."""
        replica = self._replica
        if replica is None:
            return [None] * len(ids)
        return [replica.live(i) for i in ids]

    def status(self) -> dict[str, Any]:
        """Version, sizes and log position, for /readyz and `index status`."""
        replica = self._replica
        if replica is None:
            return {"ready": False}
        return {
            "ready": True,
            "version": replica.info.version,
            "items": len(replica.index),
            "deleted": replica.index.deleted_count,
            "log_id": replica.log_id,
        }
