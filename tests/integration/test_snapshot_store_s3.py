"""Index snapshots in object storage: a local S3-compatible server (moto in server mode), the
writer's forked snapshot child uploading, readers on "other hosts" (their own caches) loading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from state.index_keys import IndexKeys
from state.index_reader import IndexReader
from state.index_replica import IndexParams
from state.index_writer import IndexWriter
from state.snapshots import UrlSnapshotStore, snapshot_store_at
from tests.integration.test_index_store import DIM, change, media

pytestmark = pytest.mark.integration
PARAMS = IndexParams(ef_search=64, snapshot_every_s=0.0)


def test_the_writer_snapshots_to_s3_in_its_child_and_another_host_loads_it(
    s3_endpoint: str, redis_client, tmp_path: Path
) -> None:
    url = f"s3://feedflow-test/run-{time.time_ns()}/index"
    writer_store = snapshot_store_at(url, tmp_path / "writer-cache", keep=2)
    assert isinstance(writer_store, UrlSnapshotStore)
    keys = IndexKeys(f"t{time.time_ns()}")
    writer = IndexWriter.open(redis_client, writer_store, PARAMS, keys, "hashing-v1", DIM)
    for batch in range(3):  # three snapshots, each by a forked child uploading to S3
        writer.apply([change(media(f"b{batch}-{i}")) for i in range(10)])
        writer.tick()
        assert writer.settle(60.0)
    # A replica on another host: its own cache, nothing shared with the writer but S3.
    elsewhere = snapshot_store_at(url, tmp_path / "other-host-cache")
    found = elsewhere.latest(writer.version)
    assert found is not None
    manifest, local = found
    assert manifest.items == 30 and local.is_relative_to(tmp_path / "other-host-cache")
    reader = IndexReader(redis_client, elsewhere, keys, PARAMS, version_check_s=0.0)
    reader.load()
    assert len(reader) == 30 and reader.item("b2-9") is not None
    # Only `keep` snapshots stay in the bucket; a retired version goes entirely.
    assert len(writer_store._names(writer.version)) == 2
    writer_store.drop(writer.version)
    assert elsewhere.latest(writer.version) is None


def test_a_bucket_that_went_away_fails_the_snapshot_loudly_and_the_log_is_kept(
    s3_endpoint: str, redis_client, tmp_path: Path
) -> None:
    import s3fs

    from state.update_log import UpdateLog
    from tests.integration.test_index_store import _snapshots

    bucket = f"feedflow-gone-{time.time_ns()}"
    s3 = s3fs.S3FileSystem(skip_instance_cache=True)
    s3.mkdir(bucket)
    store = snapshot_store_at(f"s3://{bucket}/index", tmp_path / "cache")
    keys = IndexKeys(f"t{time.time_ns()}")
    writer = IndexWriter.open(redis_client, store, PARAMS, keys, "hashing-v1", DIM)
    writer.apply([change(media(f"m{i}")) for i in range(5)])
    s3.rm(bucket, recursive=True)
    failed = _snapshots("snapshot", "failed")
    writer.tick()
    assert writer.settle(60.0)
    assert _snapshots("snapshot", "failed") == failed + 1
    assert UpdateLog(redis_client, keys, writer.version).length() == 5  # nothing trimmed
