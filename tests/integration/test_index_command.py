"""`feedflow index status|rebuild|retire` through its module API."""

from __future__ import annotations

import argparse

import orjson
import pytest
import redis

from feedflow import index_command
from kernel.settings import Settings
from operators.contracts import MediaPublished, encode
from state.index_keys import IndexKeys
from state.index_replica import IndexParams, snapshot_store
from state.index_writer import Change, IndexWriter

pytestmark = pytest.mark.integration


def _args(**kw):
    parser = argparse.ArgumentParser()
    index_command.add_parser(parser.add_subparsers())
    base = ["index", kw.pop("action"), "--json"]
    return parser.parse_args(base + [str(x) for x in kw.pop("extra", [])])


def test_status_rebuild_and_retire(redis_url, tmp_path, capsys):
    settings = Settings(redis_url=redis_url, state_dir=str(tmp_path), embedding_dim=16)
    assert index_command.run(_args(action="status"), settings) == 3  # nothing yet
    capsys.readouterr()
    client = redis.Redis.from_url(redis_url)
    writer = IndexWriter.open(
        client, snapshot_store(settings), IndexParams(), IndexKeys(), "hashing-v1", 16
    )
    events = [
        MediaPublished(
            media_id=f"m{i}",
            creator_id="c",
            content_type="AUDIO",
            category="x",
            duration_s=1.0,
            published_at=1,
        )
        for i in range(5)
    ]
    writer.apply([Change(e, encode(e), 0, n) for n, e in enumerate(events)])
    client.delete(IndexKeys().writer)
    assert index_command.run(_args(action="rebuild", extra=["--dim", 24]), settings) == 0
    rebuilt = orjson.loads(capsys.readouterr().out)
    assert rebuilt["items"] == 5 and rebuilt["version"].startswith("hashing-v1-d24.")
    assert index_command.run(_args(action="status"), settings) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["active"] == rebuilt["version"]
    assert report["versions"][rebuilt["previous"]]["state"] == "retired"
    assert report["versions"][rebuilt["version"]]["snapshot"]["items"] == 5
    extra = ["--version", rebuilt["previous"]]
    assert index_command.run(_args(action="retire", extra=extra), settings) == 0
    assert orjson.loads(capsys.readouterr().out)["vectors_deleted"] == 5
    client.close()


def test_status_shows_the_live_count_between_snapshots(redis_url, tmp_path, capsys):
    settings = Settings(redis_url=redis_url, state_dir=str(tmp_path), embedding_dim=16)
    client = redis.Redis.from_url(redis_url)
    writer = IndexWriter.open(
        client, snapshot_store(settings), IndexParams(), IndexKeys(), "hashing-v1", 16
    )

    def publish(ids: range) -> None:
        events = [
            MediaPublished(media_id=f"live{i}", creator_id="c", content_type="VIDEO",
                           category="x", duration_s=1.0, published_at=1)
            for i in ids
        ]  # fmt: skip
        writer.apply([Change(e, encode(e), 0, i) for i, e in zip(ids, events, strict=True)])
        writer.tick()  # the heartbeat, as the content flow sends it every half second

    def status() -> dict:
        assert index_command.run(_args(action="status"), settings) == 0
        report = orjson.loads(capsys.readouterr().out)
        return report["versions"][report["active"]]

    capsys.readouterr()
    publish(range(5))
    first = status()
    snapshot_items = (first["snapshot"] or {}).get("items", 0)
    assert first["live"]["items"] == 5 and snapshot_items < 5
    publish(range(5, 12))
    assert status()["live"]["items"] == 12
    client.delete(IndexKeys().writer)  # no writer: no live count to show
    assert status()["live"] is None
    client.close()
