"""The learning flow on a real broker and a real Redis, run as a `feedflow flow` process:
simulated feeds and engagement in, a ranker version out that serving hot-loads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from feedflow.simulator.feeds import FeedWorld, feed_traffic
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo
from operators.contracts import TOPIC_IMPRESSIONS
from operators.ranking_contract import FEATURES, parse_model
from state.model_registry import ACTIVE_KEY, version_key
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import dead_letters, start_flow
from tests.integration.test_model_registry import serving_ranker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
START_MS = 1_600_000_000_000


def test_the_flow_process_publishes_a_version_serving_loads(
    private_stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = FeedWorld(users=40, items=300, seed=5)
    messages = feed_traffic(world, feeds_per_user=8, feed_size=10, candidates=30, seed=6,
                            start_ms=START_MS)  # fmt: skip
    sink = KafkaSink(private_stack.bootstrap)
    sink.write(TOPIC_IMPRESSIONS, "u-bad", START_MS, '{"request_id": "broken"}')
    for topic, key, ts, value in messages:
        sink.write(topic, key, ts, value)
    sink.close()
    client = redis.Redis.from_url(private_stack.redis_url)
    monkeypatch.setenv("FEEDFLOW_RANKER_MIN_EXAMPLES", "500")
    monkeypatch.setenv("FEEDFLOW_RANKER_PUBLISH_EVERY_S", "600")
    flow = start_flow("learning", private_stack, tmp_path / "learning")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and client.get(ACTIVE_KEY) is None:
            assert flow.poll() is None, "the learning flow died"
            time.sleep(0.5)
        assert client.get(ACTIVE_KEY) is not None, "no ranker version was published"
        letters = dead_letters(private_stack.bootstrap)
        while time.monotonic() < deadline and not letters:
            time.sleep(0.5)
            letters = dead_letters(private_stack.bootstrap)
        assert flow.poll() is None, "a malformed impression must never stop the flow"
    finally:
        stop(flow)
    active = client.get(ACTIVE_KEY)  # the newest, now that the flow has stopped
    assert active is not None
    model = parse_model(client.get(version_key(active.decode())) or b"")
    assert model.version.startswith("online-") and model.vector.shape == (len(FEATURES),)
    refresher, models = serving_ranker(client)
    refresher.refresh()
    assert models.model.version == active.decode()
    assert [(x.topic, x.payload()) for x in letters] == [
        (TOPIC_IMPRESSIONS, b'{"request_id": "broken"}')
    ]
    client.close()
