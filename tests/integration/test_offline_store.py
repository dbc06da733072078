"""The offline half on the real stack: served feeds and engagement through the broker, the
engagement and learning flows writing one lake, `feedflow features export` reading it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from feedflow import cli
from feedflow.simulator.feeds import FeedWorld, feed_traffic
from feedflow.stack import StackInfo
from operators.contracts import TOPIC_ENGAGEMENT, TOPIC_IMPRESSIONS, Impression, decode_impression
from state.lake import Lake
from state.lake_schema import EVENTS, IMPRESSIONS
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import start_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T0 = 1_600_000_000_000


def test_export_joins_each_served_item_with_its_features_and_label(
    private_stack: StackInfo,
    tmp_path: Path,
    stack_lake: Lake,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = FeedWorld(users=12, items=120, seed=3)
    msgs = feed_traffic(world, feeds_per_user=4, feed_size=10, candidates=30, seed=5, start_ms=T0)
    producer = Producer({"bootstrap.servers": private_stack.bootstrap})
    for topic, key, _ts, value in msgs:
        producer.produce(topic, value.encode(), key=key.encode())
    assert producer.flush(30) == 0
    feeds = [f for t, _, _, v in msgs if t == TOPIC_IMPRESSIONS
             if isinstance(f := decode_impression(v.encode()), Impression)]  # fmt: skip
    served = sum(len(f.items) for f in feeds)
    events = sum(t == TOPIC_ENGAGEMENT for t, *_ in msgs)
    lake = stack_lake
    flows = [start_flow(n, private_stack, tmp_path / n) for n in ("engagement", "learning")]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if lake.read(IMPRESSIONS).num_rows >= served and lake.read(EVENTS).num_rows >= events:
                break
            time.sleep(0.5)
    finally:
        for proc in flows:
            stop(proc)
    assert lake.read(IMPRESSIONS).num_rows == served  # once each, from the learning flow
    assert lake.read(EVENTS).num_rows == events  # once each, from the engagement flow
    out = tmp_path / "train.parquet"
    first, last = min(f.ts for f in feeds), max(f.ts for f in feeds)
    code = cli.main(["features", "export", "--from", str(first), "--to", str(last + 1),
                     "--out", str(out), "--json"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["rows"] == served
    rows = pq.read_table(out).to_pylist()
    by_key = {(r["request_id"], r["media_id"]): r for r in rows}
    for f in feeds:
        for item in f.items:
            r = by_key[f.request_id, item.media_id]
            assert r["features"] == pytest.approx(item.features) and r["position"] == item.position
    assert {r["label"] for r in rows} == {True, False}
    assert all(r["user.engagement_count"] is not None for r in rows)
    assert any(r.get("item.play_count_total") for r in rows)
