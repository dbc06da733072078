"""Blue/green index rebuilds and the index status report (behind `feedflow index`).

A rebuild builds a new version beside the active one from the active version's records and
the stored source events, re-encoded with the chosen encoder; it follows the active log
until it has caught up, snapshots, and marks the new version `ready`. The running index
writer then replays the little it missed and flips the active pointer; with no writer
running, the rebuild does that hand-over itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from operators.content import ItemRecord
from operators.contracts import MediaPublished, decode_media
from state.encoders import make_encoder
from state.index_keys import IndexKeys
from state.index_registry import READY, RETIRED, IndexRegistry, IndexStateError, WriterStatus
from state.index_replica import IndexParams, IndexReplica
from state.index_writer import IndexWriter, encode_entries, publish, reencode
from state.item_store import ItemStore
from state.redis_client import RedisClient
from state.snapshots import SnapshotStore
from state.update_log import ADD, UpdateLog, stream_id

Progress = Callable[[int], None]
CHUNK = 2000


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did."""

    version: str
    previous: str
    items: int
    build_s: float
    flipped_by: str


def _initial_build(
    client: RedisClient, keys: IndexKeys, new: IndexReplica, live: list[ItemRecord], step: Progress
) -> None:
    encoder = make_encoder(new.info.encoder, new.info.dim)
    store = ItemStore(client, keys)
    for start in range(0, len(live), CHUNK):
        chunk = live[start : start + CHUNK]
        items: list[tuple[str, ItemRecord, MediaPublished | None, bytes]] = []
        for record, raw in zip(chunk, store.sources([r.media_id for r in chunk]), strict=True):
            event = decode_media(raw) if raw is not None else None
            if isinstance(event, MediaPublished) and raw is not None:
                items.append((ADD, record, event, raw))
        entries = encode_entries(encoder, items)
        pipe: Any = client.pipeline(transaction=False)
        for entry in entries:
            store.queue_vector(pipe, new.info.version, entry.record.media_id, entry.vector)
        pipe.execute()
        # Straight into the graph: the new version's log starts after its first snapshot.
        new.apply([(new.log_id, e) for e in entries])
        step(len(chunk))


def rebuild(
    client: RedisClient,
    store: SnapshotStore,
    params: IndexParams,
    encoder: str,
    dim: int,
    *,
    keys: IndexKeys | None = None,
    wait_s: float = 120.0,
    progress: Progress | None = None,
    sized: Progress | None = None,
) -> RebuildReport:
    """Build a new version with `encoder` beside the active one and make it active;
    `sized` is told how many items the build encodes, `progress` each chunk done.

    Raises:
        IndexStateError: when there is no active version, or no writer flipped in time.
    """
    keys = keys or IndexKeys()
    registry = IndexRegistry(client, keys)
    previous = registry.active()
    if previous is None:
        raise IndexStateError("rebuild: no active index version yet (run the content flow)")
    started = time.perf_counter()
    old_log = UpdateLog(client, keys, previous)
    mirror = IndexReplica.load(registry.get(previous), store, params)
    mirror.catch_up(old_log)
    enc = make_encoder(encoder, dim)
    info = registry.new_version(enc.version, encoder, enc.dim)
    new = IndexReplica.empty(info, params)
    live = [r for r in mirror.records.values() if not r.removed]
    if sized is not None:
        sized(len(live))
    _initial_build(client, keys, new, live, progress or (lambda _n: None))
    position = mirror.log_id
    while missed := old_log.read(position, count=5000):
        entries = reencode(enc, [e for _, e in missed])
        publish(client, new, entries, keys, items=False)
        position = missed[-1][0]
    new.source = {f"log:{previous}": position}
    new.save(store)
    build_s = time.perf_counter() - started
    registry.set_state(info.version, READY)
    if not registry.writer_alive():
        IndexWriter(client, store, mirror, params, keys).hand_over(info.version)
        return RebuildReport(info.version, previous, len(new.index), build_s, "rebuild")
    deadline = time.monotonic() + wait_s
    while registry.active() != info.version:
        if time.monotonic() > deadline:
            raise IndexStateError(f"rebuild: {info.version} is ready but no writer flipped it")
        time.sleep(0.2)
    return RebuildReport(info.version, previous, len(new.index), build_s, "writer")


def retire(
    client: RedisClient, store: SnapshotStore, version: str, keys: IndexKeys | None = None
) -> int:
    """Delete a retired version's log, vectors and snapshots; returns vectors deleted."""
    keys = keys or IndexKeys()
    registry = IndexRegistry(client, keys)
    if registry.active() == version:
        raise IndexStateError(f"retire: {version} is the active version")
    UpdateLog(client, keys, version).delete()
    dropped = ItemStore(client, keys).drop_vectors(version)
    store.drop(version)
    registry.forget(version)
    return dropped


def status(
    client: RedisClient, store: SnapshotStore, keys: IndexKeys | None = None
) -> dict[str, Any]:
    """Versions, sizes and freshness of the index, as plain data.

    `live` is what the running writer last announced (its heartbeat, every half second):
    the items readers hold once they have applied the log up to `log_id`. A snapshot's
    `items` lag behind it by up to `FEEDFLOW_INDEX_SNAPSHOT_EVERY_S`.
    """
    keys = keys or IndexKeys()
    registry = IndexRegistry(client, keys)
    now_ms = time.time_ns() // 10**6
    writer = registry.writer_status()
    versions: dict[str, Any] = {}
    for name, info in sorted(registry.versions().items()):
        ulog = UpdateLog(client, keys, name)
        last = ulog.last_id()
        found = store.latest(name)
        snapshot = None
        if found is not None:
            manifest, _path = found
            snapshot = {
                "items": manifest.items,
                "deleted": manifest.deleted,
                "age_s": round((now_ms - manifest.created_ms) / 1000, 1),
                "bytes": store.size_bytes(name),
                "log_id": manifest.log_id,
            }
        versions[name] = {
            "state": info.state,
            "encoder": info.encoder,
            "dim": info.dim,
            "log_entries": ulog.length(),
            "last_change_age_s": (
                round((now_ms - stream_id(last)[0]) / 1000, 1) if stream_id(last)[0] else None
            ),
            "live": _live(writer, now_ms) if writer and writer.version == name else None,
            "snapshot": snapshot,
        }
    return {
        "active": registry.active(),
        "writer_alive": registry.writer_alive(),
        "retired": [n for n, v in versions.items() if v["state"] == RETIRED],
        "versions": versions,
    }


def _live(writer: WriterStatus, now_ms: int) -> dict[str, Any]:
    return {
        "items": writer.items,
        "deleted": writer.deleted,
        "log_id": writer.log_id,
        "age_s": round(max(now_ms - writer.ts_ms, 0) / 1000, 1),
    }
