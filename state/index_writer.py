"""The single writer of the authoritative index: the content flow's sink calls it.

For each batch of catalogue changes it drops stale ones (an older stamp never overwrites a
newer one, so Bytewax's at-least-once replays are harmless), encodes the rest with the active
version's encoder, writes items, vectors and log entries to Redis in one pipeline, and then
applies them to its in-memory replica. `tick()` snapshots on a cadence, trims the log and
hands over to a rebuilt version (blue/green) when one is ready.

Snapshots and compaction run in a forked child (:class:`state.background.Forked`) on the
index as it stood at the fork, so publishing never waits for them: readers keep seeing new
items within the freshness budget while a snapshot is written (about a second at 1M items) or
the graph rebuilt (minutes). When the child is done, a later `tick()` trims the log to what the
previous snapshot still needs; after a compaction the writer adopts the compacted snapshot
(loading its graph and the log entries since the fork: the one pause left, ~2 s at 1M items).
A failed child is counted (`feedflow_index_snapshots_total{outcome="failed"}`), logged, and
tried again after `snapshot_every_s`; the log is trimmed only after a snapshot that completed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from kernel.metrics import (
    EVENTS,
    INDEX_DELETED,
    INDEX_ITEMS,
    INDEX_SNAPSHOTS,
    INDEX_UNSNAPSHOTTED,
    INDEX_VERSION,
)
from operators.content import ItemRecord, is_newer, record_of, stamp_of
from operators.contracts import TOPIC_MEDIA, MediaPublished, decode_media
from operators.encoders import Encoder, doc_of, upstream_vector
from state.background import Forked
from state.encoders import make_encoder
from state.index_keys import IndexKeys
from state.index_registry import READY, IndexRegistry, IndexStateError, WriterStatus
from state.index_replica import IndexParams, IndexReplica
from state.item_store import ItemStore
from state.redis_client import RedisClient
from state.snapshots import Manifest, SnapshotStore
from state.update_log import ADD, REMOVE, START, UPDATE, LogEntry, UpdateLog

log = logging.getLogger(__name__)
HEARTBEAT_TTL_S = 5.0
CHILD_TIMEOUT_S = 3600.0  # a snapshot child still running after this is stopped as failed


class _Job(NamedTuple):
    """A snapshot being written by a child: of which version, up to which log entry."""

    child: Forked
    version: str
    log_id: str
    compact: bool


def _kind(compact: bool) -> str:
    return "compaction" if compact else "snapshot"


class Change(NamedTuple):
    """One decoded catalogue event and where it came from."""

    event: MediaPublished
    raw: bytes
    partition: int
    offset: int


def encode_entries(
    encoder: Encoder, items: Sequence[tuple[str, ItemRecord, MediaPublished | None, bytes]]
) -> list[LogEntry]:
    """Log entries for `(op, record, event, raw)` items, vectors from `encoder`.

    An event's own embedding is used when it is in the encoder's space; removals carry no
    vector.
    """
    vectors: list[bytes] = [b""] * len(items)
    to_encode: list[int] = []
    for n, (op, _record, event, _raw) in enumerate(items):
        if op == REMOVE or event is None:
            continue
        own = upstream_vector(event, encoder)
        if own is None:
            to_encode.append(n)
        else:
            vectors[n] = own.tobytes()
    if to_encode:
        docs = []
        for n in to_encode:
            _op, record, event, _raw = items[n]
            assert event is not None
            docs.append(doc_of(event, record))
        for n, row in zip(to_encode, encoder.encode(docs), strict=True):
            vectors[n] = np.ascontiguousarray(row, dtype=np.float32).tobytes()
    return [
        LogEntry(op, record, vectors[n], b"" if op == REMOVE else raw)
        for n, (op, record, _event, raw) in enumerate(items)
    ]


def reencode(encoder: Encoder, entries: Sequence[LogEntry]) -> list[LogEntry]:
    """The same changes with vectors from another encoder (from each entry's source event)."""
    items: list[tuple[str, ItemRecord, MediaPublished | None, bytes]] = []
    for entry in entries:
        if entry.op == REMOVE:
            items.append((entry.op, entry.record, None, b""))
            continue
        event = decode_media(entry.source)
        if not isinstance(event, MediaPublished):  # cannot happen: only accepted events are logged
            raise IndexStateError(f"reencode: unreadable source of {entry.record.media_id}")
        items.append((entry.op, entry.record, event, entry.source))
    return encode_entries(encoder, items)


def publish(
    client: RedisClient,
    replica: IndexReplica,
    entries: Sequence[LogEntry],
    keys: IndexKeys,
    *,
    items: bool = True,
) -> None:
    """Write entries to the item store and the version's log, then apply them to `replica`.

    With `items=False` only the version's vectors are written: replaying another version's
    log must not put an older record back in front of ranking, even for a moment.
    """
    if not entries:
        return
    version = replica.info.version
    store, ulog = ItemStore(client, keys), UpdateLog(client, keys, version)
    pipe: Any = client.pipeline(transaction=False)
    positions = []
    for entry in entries:
        if items:
            store.queue(pipe, entry, version)
        elif entry.op != REMOVE:
            store.queue_vector(pipe, version, entry.record.media_id, entry.vector)
        positions.append(len(pipe))
        ulog.append(pipe, entry)
    results = pipe.execute()
    ids = [r.decode() if isinstance(r, bytes) else str(r) for r in (results[p] for p in positions)]
    replica.apply(list(zip(ids, entries, strict=True)))


class IndexWriter:
    """Owns the active index version; exactly one runs (the content flow's index sink)."""

    def __init__(
        self,
        client: RedisClient,
        store: SnapshotStore,
        replica: IndexReplica,
        params: IndexParams,
        keys: IndexKeys,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        child_timeout_s: float = CHILD_TIMEOUT_S,
    ) -> None:
        self._client, self._store, self._params, self.keys = client, store, params, keys
        self._clock = clock
        self._background = background  # False: snapshots on this thread (no fork)
        self._child_timeout_s = child_timeout_s
        self._compaction_failed = False  # then the next child is a plain snapshot
        self._job: _Job | None = None
        self._retry_at = float("-inf")  # after a failed child, no new one before this
        self._registry = IndexRegistry(client, keys)
        self.replica = replica
        self.encoder = make_encoder(replica.info.encoder, replica.info.dim)
        self._prev_log_id = replica.log_id
        self._last_snapshot = clock()
        self._dirty = False
        self._unsaved_since: float | None = None  # first change no completed snapshot holds
        self._job_started = 0.0
        self._report()

    @classmethod
    def open(
        cls,
        client: RedisClient,
        store: SnapshotStore,
        params: IndexParams,
        keys: IndexKeys,
        encoder: str,
        dim: int,
        background: bool = True,
    ) -> IndexWriter:
        """Resume the active version (snapshot + log), creating the first one if none exists.

        `encoder`/`dim` only choose the first version; later ones come from a rebuild.
        `background=False` snapshots and compacts on the caller's thread (no fork).
        """
        registry = IndexRegistry(client, keys)
        active = registry.active()
        if active is None:
            enc = make_encoder(encoder, dim)
            info = registry.new_version(enc.version, encoder, enc.dim)
            replica = IndexReplica.empty(info, params)
            replica.save(store)
            registry.flip(info.version)
            info = registry.get(info.version)
            replica.info = info
        else:
            info = registry.get(active)
            if make_encoder(encoder, dim).version != make_encoder(info.encoder, info.dim).version:
                log.warning("index %s keeps its encoder; see `feedflow index rebuild`", active)
            replica = IndexReplica.load(info, store, params)
            replica.catch_up(UpdateLog(client, keys, info.version))
        writer = cls(client, store, replica, params, keys, background=background)
        writer.heartbeat()
        return writer

    @property
    def version(self) -> str:
        """The version being written."""
        return self.replica.info.version

    def status(self) -> WriterStatus:
        """The version written, its live and deleted items, the last log entry applied."""
        index = self.replica.index
        return WriterStatus(
            version=self.version,
            items=len(index),
            deleted=index.deleted_count,
            log_id=self.replica.log_id,
            ts_ms=time.time_ns() // 10**6,
        )

    def heartbeat(self) -> None:
        """Say the writer is alive, with its live item count: `feedflow index status` shows
        it between snapshots (a snapshot's count lags by up to `snapshot_every_s`)."""
        self._registry.heartbeat(HEARTBEAT_TTL_S, self.status())

    def apply(self, changes: Sequence[Change]) -> int:
        """Apply a batch of catalogue changes; returns how many were not stale."""
        items: list[tuple[str, ItemRecord, MediaPublished | None, bytes]] = []
        latest: dict[str, ItemRecord] = {}
        source = self.replica.source
        for change in changes:
            key = str(change.partition)
            source[key] = max(int(source.get(key, 0)), change.offset + 1)
            media_id = change.event.media_id
            prev = latest.get(media_id) or self.replica.records.get(media_id)
            stamp = stamp_of(change.event, change.offset, prev.stamp if prev else None)
            if not is_newer(stamp, prev.stamp if prev else None):
                continue
            record = latest[media_id] = record_of(change.event, stamp)
            was_live = prev is not None and not prev.removed
            op = REMOVE if record.removed else (UPDATE if was_live else ADD)
            items.append((op, record, change.event, change.raw))
        publish(self._client, self.replica, encode_entries(self.encoder, items), self.keys)
        EVENTS.labels(topic=TOPIC_MEDIA, outcome="ok").inc(len(items))
        EVENTS.labels(topic=TOPIC_MEDIA, outcome="duplicate").inc(len(changes) - len(items))
        if items:
            self._dirty = True
            if self._unsaved_since is None:
                self._unsaved_since = self._clock()
        self._report()
        return len(items)

    def tick(self) -> None:
        """Heartbeat, hand over to a ready rebuilt version, take a finished snapshot child's
        result, start a compaction or snapshot child when one is due."""
        self.heartbeat()
        ready = [v for v in self._registry.versions().values() if v.state == READY]
        if ready:
            self.hand_over(max(ready, key=lambda v: v.created_ms).version)
        self._reap()
        self._report_unsaved()
        now = self._clock()
        if self._job is not None or now < self._retry_at:
            return
        over = self.replica.index.needs_compaction(self._params.compaction_share)
        if over and not self._compaction_failed:
            self.start_snapshot(compact=True)
        elif self._dirty and now - self._last_snapshot >= self._params.snapshot_every_s:
            self.start_snapshot(compact=False)

    @property
    def snapshot_running(self) -> bool:
        """A snapshot or compaction child is still at work."""
        return self._job is not None and not self._job.child.done()

    def settle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a running snapshot child and take its result; returns
        False when one is still running."""
        job = self._job
        if job is not None:
            job.child.wait(timeout_s)
        self._reap()
        return self._job is None

    def start_snapshot(self, compact: bool = False) -> None:
        """Snapshot now (compacted first if asked) in a forked child, or here without fork;
        a later `tick()` or `settle()` takes the result.

        Raises:
            IndexStateError: a snapshot child is still running.
        """
        if self._job is not None:
            raise IndexStateError("start_snapshot: a snapshot child is still running")
        replica, store = self.replica, self._store
        self._dirty = False
        self._last_snapshot = self._job_started = self._clock()

        def work() -> Manifest:
            if compact:
                replica.index.compact()
            return replica.save(store, compacted=compact)

        if not self._background:
            self._finish(work().log_id)
            self._saved(self._job_started)
            return
        self._job = _Job(Forked.start(work), self.version, replica.log_id, compact)
        log.info(
            "index %s of %s started in child %d", _kind(compact), self.version, self._job.child.pid
        )

    def _reap(self) -> None:
        job = self._job
        if job is None:
            return
        if not job.child.done():
            if time.monotonic() - job.child.started < self._child_timeout_s:
                return
            log.error("index %s child %d still running after %.0f s: stopping it",
                      _kind(job.compact), job.child.pid, self._child_timeout_s)  # fmt: skip
            job.child.kill()
        self._job = None
        kind = _kind(job.compact)
        # A compaction that failed (the child out of memory, say) is followed by a plain
        # snapshot, so that the log is still trimmed; the next compaction comes after it.
        self._compaction_failed = job.compact and not job.child.ok
        if not job.child.ok:
            INDEX_SNAPSHOTS.labels(kind=kind, outcome="failed").inc()
            self._dirty = True
            self._retry_at = self._clock() + self._params.snapshot_every_s
            log.error(
                "index %s of %s failed in its child (exit %s, see its stderr); the log is kept,"
                " retrying in %.0f s", kind, job.version, job.child.exit_code,
                self._params.snapshot_every_s,
            )  # fmt: skip
            return
        INDEX_SNAPSHOTS.labels(kind=kind, outcome="ok").inc()
        self._saved(self._job_started)
        took = time.monotonic() - job.child.started
        log.info(
            "index %s of %s done in %.1f s (up to log entry %s)",
            kind,
            job.version,
            took,
            job.log_id,
        )
        if job.version != self.version:  # handed over meanwhile: the new version snapshots
            return
        self._finish(job.log_id)
        if job.compact:
            self._adopt()

    def _adopt(self) -> None:
        """Swap in the compacted snapshot just written, plus the log entries since the fork."""
        started = time.perf_counter()
        new = self.replica.with_graph_of(self._store, self._params)
        new.catch_up(UpdateLog(self._client, self.keys, self.version))
        self.replica = new
        log.info(
            "index writer adopted its compacted snapshot in %.2f s", time.perf_counter() - started
        )
        self._report()

    def _cancel(self) -> None:
        """Stop a running snapshot child (its snapshot never publishes half-written)."""
        job, self._job = self._job, None
        if job is not None and not job.child.done():
            job.child.kill()
            self._dirty = True

    def _finish(self, log_id: str) -> None:
        """A snapshot up to `log_id` is published: trim the log to what the previous one needs."""
        UpdateLog(self._client, self.keys, self.version).trim_before(self._prev_log_id)
        self._prev_log_id = log_id

    def snapshot(self) -> Manifest:
        """Write a snapshot now, on this thread (a running child is waited for first), and
        trim the log to what the previous snapshot still needs."""
        self.settle(float("inf"))
        started = self._clock()
        manifest = self.replica.save(self._store)
        self._finish(manifest.log_id)
        self._last_snapshot = self._clock()
        self._dirty = False
        self._saved(started)
        return manifest

    def _saved(self, started: float) -> None:
        """A snapshot taken at `started` completed: what changed after it is still unsaved
        (counted from `started`, an upper bound)."""
        self._unsaved_since = started if self._dirty else None
        self._report_unsaved()

    def _report_unsaved(self) -> None:
        since = self._unsaved_since
        INDEX_UNSNAPSHOTTED.set(0.0 if since is None else max(self._clock() - since, 0.0))

    def hand_over(self, version: str) -> None:
        """Adopt a rebuilt version: load it, replay what it missed, flip the active pointer."""
        self._cancel()  # a snapshot of the version being left is not needed
        info = self._registry.get(version)
        new = IndexReplica.load(info, self._store, self._params)
        if new.log_id == START and self._store.latest(version) is None:
            raise IndexStateError(f"hand_over: version {version} has no snapshot")
        new.catch_up(UpdateLog(self._client, self.keys, version))
        encoder = make_encoder(info.encoder, info.dim)
        old_log = UpdateLog(self._client, self.keys, self.version)
        after = str(new.source.get(f"log:{self.version}", START))
        while missed := old_log.read(after, count=5000):
            entries = reencode(encoder, [e for _, e in missed])
            publish(self._client, new, entries, self.keys, items=False)
            after = missed[-1][0]
        new.source = {**self.replica.source, f"log:{self.version}": after}
        self._registry.flip(version)
        log.info("index writer flipped %s -> %s", self.version, version)
        self.replica, self.encoder = new, encoder
        self._prev_log_id = new.log_id
        self.snapshot()

    def _report(self) -> None:
        INDEX_ITEMS.labels(role="writer").set(len(self.replica.index))
        INDEX_DELETED.labels(role="writer").set(self.replica.index.deleted_count)
        INDEX_VERSION.clear()
        INDEX_VERSION.labels(version=self.version).set(1)

    def close(self, grace_s: float = 5.0) -> None:
        """Snapshot pending changes (best effort on a clean stop): a running child gets
        `grace_s` to finish, else it is stopped and the snapshot is written here."""
        if not self.settle(grace_s):
            self._cancel()
        if self._dirty:
            self.snapshot()
