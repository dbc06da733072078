"""The index writer, update log, snapshots and readers against a real Redis."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from operators.contracts import MediaPublished, encode
from operators.encoders import HashingEncoder
from state.index_keys import IndexKeys
from state.index_reader import IndexReader
from state.index_rebuild import rebuild, retire, status
from state.index_registry import IndexRegistry
from state.index_replica import IndexParams
from state.index_writer import Change, IndexWriter
from state.item_store import ItemStore
from state.snapshots import DirSnapshotStore
from state.vector_index import ExactIndex

pytestmark = pytest.mark.integration
DIM = 16
PARAMS = IndexParams(ef_search=64, snapshot_every_s=3600)
_offsets = itertools.count(1)


def media(media_id, *, status="published", tags=("jazz",), category="music", at=1_000, **kw):
    if status == "removed":
        return MediaPublished(media_id=media_id, status="removed", published_at=kw.get("pub"))
    return MediaPublished(
        media_id=media_id,
        status=status,
        creator_id=kw.get("creator", "c1"),
        content_type="AUDIO",
        title=kw.get("title", f"title {media_id}"),
        category=category,
        tags=list(tags),
        language="en",
        duration_s=60.0,
        published_at=at,
        embedding=kw.get("embedding"),
        embedding_model=kw.get("embedding_model"),
    )


def change(event, offset=None):
    return Change(event, encode(event), 0, next(_offsets) if offset is None else offset)


@pytest.fixture
def env(any_redis_client, tmp_path):
    keys = IndexKeys(f"t{time.time_ns()}")
    store = DirSnapshotStore(tmp_path / "index")
    return any_redis_client, store, keys


def open_writer(env, encoder="hashing-v1", dim=DIM):
    client, store, keys = env
    return IndexWriter.open(client, store, PARAMS, keys, encoder, dim)


def reader_of(env, **kw):
    client, store, keys = env
    return IndexReader(client, store, keys, PARAMS, block_ms=50, version_check_s=0.0, **kw)


def test_published_item_is_searchable_with_metadata_and_redis_features(env):
    client, _store, keys = env
    writer = open_writer(env)
    reader = reader_of(env)
    assert reader.load() and len(reader) == 0
    writer.apply([change(media("m1", tags=("jazz", "live"))), change(media("m2", tags=("rock",)))])
    assert reader.poll() == 2
    vec = reader.vector("m1")
    assert reader.query(vec, 1)[0][0] == "m1"
    assert reader.item("m1").tags == ("jazz", "live") and reader.item("nope") is None
    feats = ItemStore(client, keys).features(["m1", "zz", "m2"], writer.version)
    assert feats[0].record.media_id == "m1" and np.allclose(feats[0].vector, vec)
    assert feats[1] is None and feats[2].record.tags == ("rock",)


def test_stale_and_replayed_changes_never_overwrite_newer(env):
    writer = open_writer(env)
    assert writer.apply([change(media("m1", tags=("new",), at=2_000), offset=10)]) == 1
    # A replay of the same offset and an older published_at from a later offset both lose.
    assert writer.apply([change(media("m1", tags=("new",), at=2_000), offset=10)]) == 0
    assert writer.apply([change(media("m1", tags=("old",), at=1_000), offset=11)]) == 0
    assert writer.replica.live("m1").tags == ("new",)
    assert writer.apply([change(media("m1", status="updated", tags=("upd",), at=2_000), 12)])
    assert writer.replica.live("m1").tags == ("upd",)


def test_removed_item_is_never_returned(env):
    writer = open_writer(env)
    reader = reader_of(env)
    writer.apply([change(media(f"m{i}", tags=("jazz",))) for i in range(20)])
    writer.apply([change(media("m3", status="removed"))])
    reader.load()
    reader.poll()
    for q in ("m1", "m2", "m4"):
        assert "m3" not in {m for m, _ in reader.query(reader.vector(q), 50)}
    assert reader.item("m3") is None and reader.vector("m3") is None and len(reader) == 19


def test_upstream_embedding_of_the_active_version_is_used(env):
    writer = open_writer(env)
    own = np.zeros(DIM, dtype=np.float32)
    own[3] = 2.0
    model = HashingEncoder(DIM).version
    writer.apply([change(media("m1", embedding=own.tolist(), embedding_model=model))])
    assert np.allclose(writer.replica.index.vector("m1"), own / 2)


def test_restart_from_snapshot_and_log_equals_a_fresh_build(env):
    writer = open_writer(env)
    events = [media(f"m{i}", tags=(f"t{i % 5}",)) for i in range(60)]
    writer.apply([change(e) for e in events[:30]])
    writer.snapshot()
    writer.apply([change(e) for e in events[30:]])
    writer.apply([change(media("m7", status="removed"))])
    writer.snapshot()  # trims the log to what the previous snapshot needs
    writer.apply([change(media("m8", status="removed")), change(media("m61"))])
    restarted = open_writer(env)  # the newest snapshot + the log after it
    reader = reader_of(env)
    reader.load()
    fresh = ExactIndex(DIM)
    live = [e for e in [*events, media("m61")] if e.media_id not in {"m7", "m8"}]
    vectors = np.stack([writer.replica.index.vector(e.media_id) for e in live])
    fresh.upsert([e.media_id for e in live], vectors)
    assert (
        sorted(restarted.replica.index.ids())
        == sorted(fresh.ids())
        == sorted(m for m in (e.media_id for e in live))
    )
    for q in ("m0", "m33", "m61"):
        want = [m for m, _ in fresh.query(fresh.vector(q), 10)]
        assert [m for m, _ in restarted.replica.index.query(fresh.vector(q), 10)] == want
        assert [m for m, _ in reader.query(fresh.vector(q), 10)] == want
    assert restarted.replica.records == writer.replica.records


def test_reader_that_fell_behind_the_trim_reloads(env):
    writer = open_writer(env)
    reader = reader_of(env)
    reader.load()
    for batch in range(3):
        writer.apply([change(media(f"b{batch}-{i}")) for i in range(5)])
        writer.snapshot()
    reader.poll()
    assert len(reader) == 15


def test_background_reader_sees_a_publish_quickly(env):
    seen = threading.Event()
    reader = reader_of(env, listener=lambda entries, _now: seen.set())
    writer = open_writer(env)
    reader.start()
    try:
        start = time.perf_counter()
        writer.apply([change(media("fast"))])
        assert seen.wait(2.0)
        assert time.perf_counter() - start < 2.0 and reader.item("fast") is not None
    finally:
        reader.stop()


def test_blue_green_rebuild_flips_without_mixing_versions(env):
    client, store, keys = env
    writer = open_writer(env)
    writer.apply([change(media(f"m{i}", tags=(f"t{i % 3}",))) for i in range(40)])
    reader = reader_of(env)
    reader.load()
    old = reader.version
    stop = threading.Event()
    answers: list[tuple[str | None, int]] = []

    def query_loop():
        while not stop.is_set():
            version = reader.version
            # A half-built version would answer with fewer neighbours.
            answers.append((version, len(reader.similar("m1", 39))))

    thread = threading.Thread(target=query_loop)
    thread.start()
    client.delete(keys.writer)  # the content flow is not running: the rebuild flips itself
    try:
        report = rebuild(client, store, PARAMS, "hashing-v1", 32, keys=keys, wait_s=5)
        while reader.version != report.version:
            reader.poll()
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert report.flipped_by == "rebuild" and report.items == 40
    assert IndexRegistry(client, keys).active() == report.version != old
    assert len(reader) == 40 and len(reader.vector("m1")) == 32
    assert {n for _, n in answers} == {39}
    versions = [v for v, _ in answers]
    flip_at = versions.index(report.version)
    assert set(versions[:flip_at]) == {old} and set(versions[flip_at:]) == {report.version}
    # A restarted writer writes the new version with the new encoder.
    again = open_writer(env)
    again.apply([change(media("late"))])
    reader.poll()
    assert reader.item("late") is not None and len(reader.vector("late")) == 32
    assert status(client, store, keys)["active"] == report.version
    assert retire(client, store, old, keys=keys) == 40
    assert old not in status(client, store, keys)["versions"]


def test_rebuild_hands_over_to_a_live_writer(env):
    client, store, keys = env
    writer = open_writer(env)
    writer.apply([change(media(f"m{i}")) for i in range(10)])
    done = threading.Event()

    def writer_loop():
        n = 0
        while not done.is_set():
            writer.tick()
            writer.apply([change(media(f"live{n}"))])
            n += 1
            time.sleep(0.02)

    thread = threading.Thread(target=writer_loop)
    thread.start()
    try:
        report = rebuild(client, store, PARAMS, "hashing-v1", 24, keys=keys, wait_s=10)
    finally:
        done.set()
        thread.join()
    assert report.flipped_by == "writer" and writer.version == report.version
    reader = reader_of(env)
    reader.load()
    # Nothing written during the rebuild was lost by the flip.
    assert len(reader) == len(writer.replica.index) == len(writer.replica.records)
    assert all(len(reader.vector(m)) == 24 for m in writer.replica.index.ids())


COMPACTING = IndexParams(ef_search=64, snapshot_every_s=3600, compaction_share=0.3)


def half_removed(env):
    """A writer and a reader of 20 items, 10 of them then removed (past the compaction
    share); the reader has seen the 20, not the removals."""
    client, store, keys = env
    writer = IndexWriter.open(client, store, COMPACTING, keys, "hashing-v1", DIM)
    reader = IndexReader(client, store, keys, COMPACTING, version_check_s=0.0)
    reader.load()
    writer.apply([change(media(f"m{i}")) for i in range(20)])
    reader.poll()
    writer.apply([change(media(f"m{i}", status="removed")) for i in range(10)])
    return writer, reader


def test_compaction_rebuilds_the_writer_and_readers_adopt_it(env):
    writer, reader = half_removed(env)
    writer.tick()  # compacts in a forked child; the writer adopts the result once it is done
    assert writer.settle(30.0)
    assert writer.replica.index.deleted_count == 0 and len(writer.replica.index) == 10
    reader.poll()  # applies the removals: half its points are deleted
    reader.poll()
    assert len(reader) == 10 and reader.status()["deleted"] == 0
    hits = reader.query(reader.vector("m15"), 20)
    assert {m for m, _ in hits} == {f"m{i}" for i in range(10, 20)}


class GatedStore(DirSnapshotStore):
    """Snapshots that wait while `<root>/hold` exists, until `<root>/release` does, and fail
    while `<root>/fail` exists: a test decides when a snapshot child finishes, and how."""

    def save(self, manifest, write):
        if (self.root / "fail").exists():
            raise OSError("the snapshot store refused the write")
        if manifest.compacted and (self.root / "fail-compaction").exists():
            raise MemoryError("the compaction ran out of memory")
        deadline = time.monotonic() + 30
        while (self.root / "hold").exists() and not (self.root / "release").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return super().save(manifest, write)


def newest(store, version):
    """The manifest of the newest snapshot of `version` (there must be one)."""
    found = store.latest(version)
    assert found is not None
    return found[0]


def _snapshots(kind, outcome):
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "feedflow_index_snapshots_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


def test_items_stay_searchable_on_time_while_a_snapshot_is_written(any_redis_client, tmp_path):
    client, keys = any_redis_client, IndexKeys(f"t{time.time_ns()}")
    store = GatedStore(tmp_path / "index")
    params = IndexParams(ef_search=64, snapshot_every_s=0.0)
    writer = IndexWriter.open(client, store, params, keys, "hashing-v1", DIM)
    reader = IndexReader(client, store, keys, params, block_ms=50, version_check_s=0.0)
    reader.load()
    writer.apply([change(media(f"m{i}")) for i in range(10)])
    (store.root / "hold").touch()
    writer.tick()  # a snapshot child starts, and waits on the gate
    forked_at = writer.replica.log_id
    assert writer.snapshot_running
    for i in range(20):  # the writer publishes and the reader sees each item at once
        started = time.monotonic()
        writer.apply([change(media(f"new{i}"))])
        writer.tick()
        reader.poll()
        assert reader.item(f"new{i}") is not None
        assert time.monotonic() - started < 1.0
    assert writer.snapshot_running
    assert newest(store, writer.version).items == 0  # only the first, empty one so far
    (store.root / "release").touch()
    assert writer.settle(30.0)
    manifest = newest(store, writer.version)
    assert (manifest.items, manifest.log_id) == (10, forked_at)  # the index as at the fork
    # a restart from that snapshot plus the log has everything
    again = IndexReader(client, store, keys, params, version_check_s=0.0)
    again.load()
    assert len(again) == 30


def _unsaved() -> float:
    return REGISTRY.get_sample_value("feedflow_index_unsnapshotted_seconds") or 0.0


def test_a_failed_snapshot_child_is_counted_keeps_the_log_and_is_tried_again(
    any_redis_client, tmp_path
):
    client, keys = any_redis_client, IndexKeys(f"t{time.time_ns()}")
    store = GatedStore(tmp_path / "index")
    params = IndexParams(ef_search=64, snapshot_every_s=0.3)
    writer = IndexWriter.open(client, store, params, keys, "hashing-v1", DIM)
    writer.apply([change(media(f"m{i}")) for i in range(5)])
    writer.snapshot()
    assert _unsaved() == 0.0
    writer.apply([change(media(f"n{i}")) for i in range(5)])
    failed = _snapshots("snapshot", "failed")
    (store.root / "fail").touch()
    time.sleep(0.35)
    writer.tick()
    assert writer.settle(30.0)
    assert _snapshots("snapshot", "failed") == failed + 1
    writer.tick()
    assert _unsaved() >= 0.35  # the changes no snapshot holds, and for how long
    assert newest(store, writer.version).items == 5
    writer.tick()  # no new child before snapshot_every_s has passed again
    assert not writer.snapshot_running and writer.settle(0.0)
    (store.root / "fail").unlink()
    time.sleep(0.35)
    writer.tick()
    assert writer.settle(30.0)
    assert newest(store, writer.version).items == 10
    writer.tick()
    assert _unsaved() == 0.0
    reader = IndexReader(client, store, keys, params, version_check_s=0.0)
    reader.load()
    assert len(reader) == 10  # nothing was lost to the failure


def test_a_reader_over_the_deleted_share_waits_for_a_compacted_snapshot(env, caplog):
    # The newest snapshot predates the removals: reloading it would bring the removals back
    # from the log, again and again. The reader waits for the compacted one instead.
    client, store, keys = env
    params = IndexParams(ef_search=64, snapshot_every_s=3600, compaction_share=0.3)
    writer = IndexWriter.open(client, store, params, keys, "hashing-v1", DIM)
    writer.apply([change(media(f"m{i}")) for i in range(20)])
    writer.snapshot()
    reader = IndexReader(client, store, keys, params, version_check_s=0.0)
    reader.load()
    writer.apply([change(media(f"m{i}", status="removed")) for i in range(10)])
    with caplog.at_level("INFO", logger="state.index_reader"):
        for _ in range(3):
            reader.poll()
        assert reader.status()["deleted"] == 10
        assert "reloading" not in caplog.text
        writer.tick()  # the compacted snapshot
        assert writer.settle(30.0)
        reader.poll()
        assert caplog.text.count("adopting the compacted snapshot") == 1
    assert reader.status()["deleted"] == 0 and len(reader) == 10
    # adopting the graph alone (records kept) gives what a reader loading afresh gets
    writer.apply([change(media("late"))])
    reader.poll()
    fresh = IndexReader(client, store, keys, params, version_check_s=0.0)
    fresh.load()
    every = [f"m{i}" for i in range(20)] + ["late"]
    assert [reader.item(m) for m in every] == [fresh.item(m) for m in every]
    assert reader.query(reader.vector("late"), 5) == fresh.query(fresh.vector("late"), 5)


def test_a_reader_behind_a_compacted_snapshot_loads_it_whole(env):
    # Adopting only the graph keeps the replica's records: right only when the replica is
    # at least as far in the log as the snapshot. One behind it loads the snapshot whole.
    client, store, keys = env
    writer, reader = half_removed(env)
    reader.poll()
    writer.apply([change(media("m10", status="removed")), change(media("d"))])  # not polled
    writer.tick()
    assert writer.settle(30.0)
    reader.poll()
    fresh = IndexReader(client, store, keys, COMPACTING, version_check_s=0.0)
    fresh.load()
    every = [f"m{i}" for i in range(20)] + ["d"]
    assert reader.item("m10") is None and reader.item("d") is not None
    assert [reader.item(m) for m in every] == [fresh.item(m) for m in every]


def test_after_a_failed_compaction_a_plain_snapshot_comes_next_then_compaction_again(
    any_redis_client, tmp_path
):
    client, keys = any_redis_client, IndexKeys(f"t{time.time_ns()}")
    store = GatedStore(tmp_path / "index")
    params = IndexParams(ef_search=64, snapshot_every_s=0.3, compaction_share=0.3)
    writer = IndexWriter.open(client, store, params, keys, "hashing-v1", DIM)
    writer.apply([change(media(f"m{i}")) for i in range(20)])
    writer.apply([change(media(f"m{i}", status="removed")) for i in range(10)])
    (store.root / "fail-compaction").touch()
    failed = _snapshots("compaction", "failed")
    writer.tick()
    assert writer.settle(30.0) and _snapshots("compaction", "failed") == failed + 1
    time.sleep(0.35)
    writer.tick()  # a plain snapshot, not the compaction again
    assert writer.settle(30.0)
    plain = newest(store, writer.version)
    assert not plain.compacted and (plain.items, plain.deleted) == (10, 10)
    (store.root / "fail-compaction").unlink()
    writer.tick()
    assert writer.settle(30.0)
    assert newest(store, writer.version).compacted
    assert writer.replica.index.deleted_count == 0
