"""Impressions and `feedflow ab report` on the real broker: served feeds arrive on
`feed.impressions` with arm and versions, a dead broker changes nothing for a feed, and the
report finds a planted uplift (and no A/A difference) in traffic read back from the topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from feedflow.cli import main
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import LocalStack, StackInfo, free_port
from flows.topic_reader import read_topic
from kernel.settings import Settings
from operators.ab import Assigner, parse_config
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_IMPRESSIONS,
    Impression,
    decode_impression,
    encode,
)
from operators.ranking_contract import FEATURES
from serving.impressions import ImpressionPublisher, impression_sink
from tests.unit.ab_traffic import Traffic, simulate
from tests.unit.serving_fixtures import build_world, request, service_for

pytestmark = pytest.mark.integration
SPLIT = b"""{"salt": "exp-it", "control": "control", "arms": [
    {"name": "control", "share": 0.5, "personalised": false},
    {"name": "treatment", "share": 0.5}]}"""
HOUR_MS = 3_600_000


def test_served_feeds_arrive_on_the_topic_with_arm_and_versions(stack: StackInfo) -> None:
    world = build_world()
    arms = Assigner(parse_config(SPLIT))
    # Fresh ids for the session's shared topic; the experiment's users, not the 2 % holdback.
    candidates = (f"imp-{time.time_ns()}-{n}" for n in range(100))
    users = [u for u in candidates if arms.assign(u).name != "holdback"][:12]
    for user in users:
        world.user(user, "music", "AUDIO")
    service, _ = service_for(world)
    service.arms = arms
    service.impressions = impression_sink(Settings(kafka_bootstrap_servers=stack.bootstrap))
    service.impressions.start()
    bodies = {b["request_id"]: b for b in (service.feed(request(u)) for u in users)}
    service.impressions.stop()  # delivers what is buffered
    assert service.impressions.status()["dropped"] == 0

    found: dict[str, Impression] = {}
    for raw in read_topic(stack.bootstrap, TOPIC_IMPRESSIONS, timeout_s=30):
        imp = decode_impression(raw)
        if isinstance(imp, Impression) and imp.request_id in bodies:
            found[imp.request_id] = imp
    assert found.keys() == bodies.keys()
    for request_id, imp in found.items():
        body = bodies[request_id]
        assert (imp.user_id, imp.arm, imp.model_version, imp.index_version) == (
            body["user_id"], body["arm"], body["model_version"], body["index_version"])  # fmt: skip
        assert [i.media_id for i in imp.items] == [i["media_id"] for i in body["items"]]
        assert all(len(i.features) == len(FEATURES) for i in imp.items)
    assert {imp.arm for imp in found.values()} == {"control", "treatment"}


class WatchedProducer:
    """The real producer, noting which threads call into it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.threads = inner, set[str]()

    def __getattr__(self, name: str) -> Any:
        self.threads.add(threading.current_thread().name)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def test_a_dead_broker_never_fails_or_slows_a_feed() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    dead = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", impressions_buffer=20)
    publisher = impression_sink(dead)
    assert isinstance(publisher, ImpressionPublisher)
    producer = publisher.producer = WatchedProducer(publisher.producer)
    service.impressions = publisher
    publisher.start()
    try:
        took = []
        for _ in range(60):
            started = time.perf_counter()
            assert len(service.feed(request("u1"))["items"]) == 20
            took.append(time.perf_counter() - started)
            time.sleep(0.01)
        # Structure, not timing: the request thread never touches the producer. The bounds
        # only catch a feed that waits for the broker (a connect timeout is seconds).
        assert producer.threads == {"impressions"}
        assert sorted(took)[30] < 0.1 and max(took) < 2.0, took
        deadline = time.monotonic() + 5
        while publisher.broker_reachable and time.monotonic() < deadline:
            time.sleep(0.05)
        status = publisher.status()
        assert status["broker_reachable"] is False and status["queued"] >= 20
    finally:
        publisher.stop(flush_s=0.2)


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """Topics of this module's own: other tests' impressions must not enter the report."""
    local = LocalStack(tmp_path_factory.mktemp("ab-stack"), partitions=2)
    try:
        yield local.up()
    finally:
        local.down()


def send(bootstrap: str, traffic: Traffic) -> None:
    sink = KafkaSink(bootstrap)
    for imp in traffic.impressions:
        sink.write(TOPIC_IMPRESSIONS, imp.user_id, imp.ts, encode(imp).decode())
    for ev in traffic.events:
        sink.write(TOPIC_ENGAGEMENT, ev.user_id, ev.ts, encode(ev).decode())
    sink.close()


def report(tmp_path: Path, since_ms: int, name: str) -> tuple[int, dict]:
    out = tmp_path / f"{name}.json"
    code = main(["ab", "report", "--since", str(since_ms), "--json", str(out)])
    return code, orjson.loads(out.read_bytes())


def test_ab_report_finds_a_planted_uplift_and_no_a_a_difference(
    private_stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ab.json"
    config.write_bytes(SPLIT)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", private_stack.bootstrap)
    monkeypatch.setenv("FEEDFLOW_AB_CONFIG", str(config))
    assigner = Assigner(parse_config(SPLIT))
    now_ms = int(time.time() * 1000)

    a_a = simulate(assigner, {"*": 0.12}, users=3000, seed=51, start_ms=now_ms - 8 * HOUR_MS)
    send(private_stack.bootstrap, a_a)
    code, same = report(tmp_path, now_ms - 8 * HOUR_MS, "a_a")
    assert code == 0 and same["read"]["impressions"] == len(a_a.impressions)
    assert not same["comparisons"][0]["significant"] and not same["srm"]["mismatch"]

    uplift = {"control": 0.10, "treatment": 0.15, "*": 0.10}
    a_b = simulate(assigner, uplift, users=3000, seed=52, start_ms=now_ms - 4 * HOUR_MS)
    send(private_stack.bootstrap, a_b)
    code, found = report(tmp_path, now_ms - 4 * HOUR_MS, "a_b")  # the A/A run is before it
    assert code == 0 and found["read"]["impressions"] == len(a_b.impressions)
    treatment = next(c for c in found["comparisons"] if c["arm"] == "treatment")
    assert treatment["significant"] and treatment["p_value"] < 0.01
    assert found["arms"]["treatment"]["clicks"] == a_b.clicks["treatment"]
    assert not found["srm"]["mismatch"]
