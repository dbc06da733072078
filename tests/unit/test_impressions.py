"""Impressions and arms in the feed service: every served feed goes to the publisher with its
arm, versions and the feature rows it was ranked on, and nothing the broker does reaches a
feed (a fake producer: down, full, hung, refusing)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from kernel.settings import Settings
from operators.ab import HOLDBACK_ARM, Assigner, parse_config
from operators.contracts import Impression, decode_impression
from operators.ranking_contract import FEATURES, default_model
from serving.feed import FeedConfig
from serving.impressions import ImpressionPublisher, NoImpressions, Served, impression_sink
from serving.params import Limits
from serving.ranking import ANN
from serving.runtime import Runtime
from tests.unit.serving_fixtures import build_world, hashes, request, service_for

SPLIT = b"""{"salt": "exp-1", "control": "control", "arms": [
    {"name": "control", "share": 0.5, "personalised": false},
    {"name": "treatment", "share": 0.5}]}"""
PERSONAL = ["similarity", "category_affinity", "session_genre", "creator_affinity",
            "type_match", "language_match", "continue_watching"]  # fmt: skip


class FakeProducer:
    """A producer whose broker can be up, down (queue fills, nothing delivered) or hung."""

    def __init__(self, capacity: int = 1_000_000, up: bool = True, fail: bool = False) -> None:
        self.capacity, self.up, self.fail = capacity, up, fail
        self.queue: list[tuple[str, bytes, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes, bytes]] = []
        self.threads: set[str] = set()
        self.hang: threading.Event | None = None

    def produce(self, topic: str, *, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.threads.add(threading.current_thread().name)
        if self.hang is not None:
            self.hang.wait(5.0)  # long enough to fail a feed that would wait for it
        if len(self.queue) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value, on_delivery))

    def poll(self, timeout: float) -> int:
        if not self.up:
            time.sleep(min(timeout, 0.005))
            return 0
        done, self.queue = self.queue, []
        for topic, key, value, callback in done:
            callback("refused" if self.fail else None, None)
            if not self.fail:
                self.delivered.append((topic, key, value))
        return len(done)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


def served(n: int) -> Served:
    items = [{"media_id": f"m{k}", "score": 1.0, "source": "ann"} for k in range(3)]
    rows = np.zeros((3, len(FEATURES)), dtype=np.float32)
    return Served(f"r{n}", f"u{n}", 1_700_000_000_000 + n, "default", "v1", "i1", items, rows)


def impressions_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("feedflow_impressions_total", {"outcome": outcome})
    return value or 0.0


def wait_until(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_broker_outage_buffers_then_drops_loudly_and_delivers_once_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer(capacity=10, up=False)
    publisher = ImpressionPublisher(producer, capacity=100, idle_poll_s=0.005)
    overflow = impressions_count("overflow")
    publisher.start()
    started = time.perf_counter()
    for n in range(5000):
        publisher.publish(served(n))
    spent = time.perf_counter() - started
    assert spent < 0.25, f"5,000 publishes took {spent:.3f} s"  # ~1 µs each; 50 µs is a bug
    wait_until(lambda: len(producer) == 10)
    # Kept: the hand-off queue, the producer's queue, the one waiting for room in it.
    kept = 5000 - (impressions_count("overflow") - overflow)
    assert 100 <= kept <= 100 + 10 + 1
    wait_until(lambda: any("dropped" in r.message for r in caplog.records))
    assert any(r.levelno == logging.ERROR and "is the broker" in r.message
               for r in caplog.records)  # fmt: skip
    producer.up, producer.capacity = True, 1_000_000
    wait_until(lambda: len(producer.delivered) == kept)  # every kept one, once
    publisher.stop()
    assert len(producer.delivered) == kept
    ids = [decode_impression(v).request_id for _, _, v in producer.delivered]
    assert ids == sorted(ids, key=lambda r: int(r[1:])) and ids[0] == "r0"
    assert producer.threads == {"impressions"}  # never the request thread


def test_a_hung_producer_never_slows_a_feed() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    producer = FakeProducer()
    producer.hang = threading.Event()
    publisher = ImpressionPublisher(producer, idle_poll_s=0.005)
    service, _ = service_for(world)
    service.impressions = publisher
    publisher.start()
    try:
        for _ in range(30):
            started = time.perf_counter()
            assert len(service.feed(request("u1"))["items"]) == 20
            assert time.perf_counter() - started < 2.0  # loose: a waiting feed takes 5 s
        wait_until(lambda: publisher.status()["queued"] >= 29)  # one is stuck in produce()
    finally:
        producer.hang.set()
        publisher.stop()
    assert len(producer.delivered) == 30


def test_refused_and_unsent_impressions_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    refusing = ImpressionPublisher(FakeProducer(fail=True))
    failed = impressions_count("failed")
    for n in range(3):
        refusing.publish(served(n))
    refusing.stop(flush_s=0.1)
    assert impressions_count("failed") - failed == 3
    down = ImpressionPublisher(FakeProducer(up=False, capacity=2))
    unsent = impressions_count("unsent_at_stop")
    for n in range(5):
        down.publish(served(n))
    down.stop(flush_s=0.05)
    assert impressions_count("unsent_at_stop") - unsent == 5
    assert any("not delivered" in r.message for r in caplog.records)


def feeds_with_impressions(users: list[str], world: Any, **kwargs: Any) -> list[tuple]:
    producer = FakeProducer()
    service, _ = service_for(world, FeedConfig())
    service.arms, service.impressions = kwargs.get("arms"), ImpressionPublisher(producer)
    bodies = [service.feed(request(u)) for u in users]
    service.impressions.pump(1000)
    producer.poll(0)
    found = {}
    for _, key, value in producer.delivered:
        imp = decode_impression(value)
        assert isinstance(imp, Impression) and key == imp.user_id.encode()
        found[imp.request_id] = imp
    return [(body, found[body["request_id"]]) for body in bodies]


def test_served_feeds_carry_their_arm_versions_and_the_scored_feature_rows() -> None:
    world = build_world()
    users = [f"u{n}" for n in range(24)]
    for n, user in enumerate(users):
        world.user(user, ("music", "news", "comedy")[n % 3], ("AUDIO", "VIDEO")[n % 2])
    assigner = Assigner(parse_config(SPLIT))
    pairs = feeds_with_impressions(users, world, arms=assigner)
    model, boost, fresh = default_model(), FeedConfig().new_boost, FEATURES.index("freshness")
    arms = set()
    for body, imp in pairs:
        arms.add(body["arm"])
        assert body["arm"] == imp.arm == assigner.assign(imp.user_id).name
        assert (imp.model_version, imp.index_version) == (body["model_version"],
                                                          body["index_version"])  # fmt: skip
        assert [(i.media_id, i.position, i.score, i.source) for i in imp.items] == [
            (i["media_id"], n, i["score"], i["source"]) for n, i in enumerate(body["items"])
        ]
        rows = np.asarray([i.features for i in imp.items], dtype=np.float64)
        assert rows.shape == (20, len(FEATURES))
        # The row is the one the item was scored with: the model and the new-release boost
        # give back the served score.
        rescored = rows @ model.vector.astype(np.float64) + boost * rows[:, fresh]
        assert np.allclose(rescored, [i.score for i in imp.items], atol=2e-4)
        if body["arm"] == "control":  # trending + rules: no personal signal at all
            personal = rows[:, [FEATURES.index(f) for f in PERSONAL]]
            assert not personal.any()
            assert all(i["source"] != ANN for i in body["items"])
    assert arms == {"control", "treatment"}


def test_holdback_users_get_the_non_personalised_feed_for_good() -> None:
    assigner = Assigner()
    user = next(f"u{n}" for n in range(1000) if assigner.assign(f"u{n}").name == HOLDBACK_ARM)
    world = build_world()
    world.user(user, "music", "AUDIO", recent=("music-A0",), consumed=hashes(["music-A0"]))
    [(held, imp)] = feeds_with_impressions([user], world, arms=assigner)
    assert held["arm"] == imp.arm == HOLDBACK_ARM and held["fallback"] is None
    assert all(i["reason"]["type"] != "because_you_watched" for i in held["items"])
    assert "music-A0" not in [i["media_id"] for i in held["items"]]  # hygiene still applies
    [(personal, _)] = feeds_with_impressions([user], world)  # no experiment: personalised
    assert personal["arm"] == "default"
    assert any(i["reason"]["type"] == "because_you_watched" for i in personal["items"])


def test_feed_metrics_are_labelled_with_the_arm() -> None:
    def total(arm: str) -> float:
        labels = {"stage": "total", "arm": arm}
        return REGISTRY.get_sample_value("feedflow_feed_request_seconds_count", labels) or 0.0

    world = build_world()
    service, _ = service_for(world)
    service.arms = Assigner(parse_config(SPLIT))
    before = {arm: total(arm) for arm in ("control", "treatment", HOLDBACK_ARM)}
    arms = [service.feed(request(f"m{n}"))["arm"] for n in range(60)]
    for arm, count in before.items():
        assert total(arm) - count == arms.count(arm)


def test_without_a_broker_impressions_are_off_and_readyz_says_so() -> None:
    sink = impression_sink(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(sink, NoImpressions)
    service, _ = service_for(build_world())
    service.impressions = sink
    detail = Runtime(service, Limits()).readiness()[1]
    assert detail["impressions"] == {"enabled": False,
                                     "reason": "KAFKA_BOOTSTRAP_SERVERS is not set"}  # fmt: skip
