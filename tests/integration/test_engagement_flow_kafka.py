"""The engagement flow on a real broker and a real Redis, run as `feedflow flow` processes.

Each test gets a broker of its own (topics are not shared with other tests), publishes the
catalogue through the content flow, then plays simulated traffic through the engagement flow.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo
from flows.topic_reader import read_topic
from operators.contracts import (
    TOPIC_DEADLETTER,
    TOPIC_ENGAGEMENT,
    TOPIC_MEDIA,
    EngagementEvent,
    decode_deadletter,
    decode_engagement,
)
from operators.dedup import id_hash64
from operators.user_features import decode_user_features
from state.feature_store import USER, RedisFeatureStore
from state.lake import HOUR_MS, Lake
from state.lake_schema import EVENTS, VIEWS
from tests.integration.processes import stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_600_000_000_000  # historical on purpose: a replay years old must still work


def publish(stack: StackInfo, users: int, rate: int, duration: int, malformed: float) -> dict:
    sim = Simulation(
        SimConfig(users=users, items=400, rate=rate, duration_s=duration, seed=11,
                  malformed=malformed, start_ms=START_MS),
        now_ms=START_MS,
    )  # fmt: skip
    sink = _Tee(KafkaSink(stack.bootstrap))
    summary = sim.run(sink).as_dict()
    return {"summary": summary, "truth": sim.truth(), "users": sink.users}


class _Tee:
    """Forwards to the broker and remembers which users sent a valid event."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner, self.users = inner, set[str]()

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        if topic == TOPIC_ENGAGEMENT and isinstance(
            decode_engagement(value.encode()), EngagementEvent
        ):
            self.users.add(key)
        self.inner.write(topic, key, ts, value)

    def idle(self, seconds: float) -> None:
        self.inner.idle(seconds)

    def close(self) -> None:
        self.inner.close()


def start_flow(name: str, stack: StackInfo, state: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "REDIS_URL": stack.redis_url,
        "FEEDFLOW_STATE_DIR": str(state),
        "FEEDFLOW_SNAPSHOT_INTERVAL_S": "1",
    }
    state.mkdir(parents=True, exist_ok=True)
    with (state / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "flow", name, *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def feature_digest(client: redis.Redis, patterns: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            value = client.get(key)
            if value is not None:
                out[key.decode()] = hashlib.sha1(value).hexdigest()
    return out


def wait_until_stable(
    read: Callable[[], dict[str, str]], ready: Callable[[dict[str, str]], bool], timeout_s: float
) -> dict[str, str]:
    """Poll until `ready` holds and two reads 2 s apart agree; bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] | None = None
    while time.monotonic() < deadline:
        now = read()
        if ready(now) and now == last:
            return now
        last = now
        time.sleep(2.0)
    raise AssertionError(f"features did not settle within {timeout_s}s ({len(last or {})} keys)")


USERS, CO = "ff:{u:*", "ff:{c:*"
ALL_FEATURES = (USERS, "ff:{i:*", "ff:{t:*", CO)


def load_catalogue(stack: StackInfo, state: Path, client: redis.Redis) -> subprocess.Popen[bytes]:
    content = start_flow("content", stack, state / "content", "--no-recovery")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for _ in client.scan_iter("ff:item:*")) < 400:
        assert content.poll() is None, "the content flow died"
        time.sleep(0.5)
    return content


def test_features_reach_redis_and_malformed_events_are_dead_lettered(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    run = publish(private_stack, users=200, rate=20_000, duration=2, malformed=0.02)
    client = redis.Redis.from_url(private_stack.redis_url)
    content = load_catalogue(private_stack, tmp_path, client)
    flow = start_flow("engagement", private_stack, tmp_path / "eng")
    try:
        users = run["users"]
        features = wait_until_stable(
            lambda: feature_digest(client, (USERS,)), lambda d: len(d) == len(users), 120
        )
        assert flow.poll() is None, "one bad payload must never stop the flow"
    finally:
        stop(flow)
        stop(content)
    assert {k[len("ff:{u:") : -1] for k in features} == users
    stored = RedisFeatureStore(client).get_many(USER, sorted(users))
    records = [decode_user_features(raw) for raw in stored if raw is not None]
    assert len(records) == len(users)
    assert all(r.ts >= START_MS for r in records)
    assert sum(not r.cold_start for r in records) > 0.5 * len(records)
    some_user = max(records, key=lambda r: r.engagements)
    user_id = next(u for u, raw in zip(sorted(users), stored, strict=True)
                   if raw and decode_user_features(raw) == some_user)  # fmt: skip
    shown = inspect(private_stack, "user", user_id)
    assert shown["features"]["engagements"] == some_user.engagements
    assert shown["features"]["top_categories"] == list(some_user.top_categories)
    assert 0 < shown["ttl_s"] <= 35 * 86_400
    assert shown["catalogue"]["top_categories_7d"] == list(some_user.top_categories)
    assert shown["catalogue"]["engagement_count"] == some_user.engagements
    item = inspect(private_stack, "item", some_user.recent[0])
    assert item["metadata"]["media_id"] == some_user.recent[0] and item["has_vector"]
    assert item["stats"]["plays_total"] >= 1
    assert item["catalogue"]["play_count_total"] == item["stats"]["plays_total"]
    assert item["catalogue"]["publish_age_hours"] > 0  # published years ago (historical)
    assert item["catalogue"]["creator_subscriber_count"] >= 0
    creators = list(client.scan_iter("ff:{cr:*"))
    assert creators, "no creator record: subscriptions did not reach the creator step"
    # Co-engagement through the real broker and Redis: a user's newest positive item links
    # back to the one before it.
    catalogue = {id_hash64(m): m for m in catalogue_ids(client)}
    linked = [r.co_seeds() for r in records if len(r.co_seeds()) >= 2]
    assert linked, "no user had two positive items"
    newest, before = (catalogue[d] for d in linked[0][:2])
    co = inspect(private_stack, "item", newest)["co_engagement"]
    assert co["media_id"] == newest and co["engagements"] >= 1
    assert before in {m for m, _ in co["neighbours"]}
    letters = dead_letters(private_stack.bootstrap)
    assert len(letters) == run["summary"]["malformed"]
    assert all(letter.topic == TOPIC_ENGAGEMENT and letter.reason for letter in letters)
    # The lake (default: under the flow's state directory) holds every valid event once.
    lake = Lake(str(tmp_path / "eng" / "lake"))
    assert lake_ids(lake, valid_ids(private_stack)) == valid_ids(private_stack)
    assert lake.read(VIEWS).num_rows > 0


def test_the_lake_in_object_storage_holds_every_valid_event_once(
    private_stack: StackInfo, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(private_stack, users=100, rate=20_000, duration=1, malformed=0.02)
    client = redis.Redis.from_url(private_stack.redis_url)
    url = f"s3://feedflow-test/lake-{time.time_ns()}"
    monkeypatch.setenv("FEEDFLOW_LAKE_URL", url)
    content = load_catalogue(private_stack, tmp_path, client)
    lake = Lake(url)
    try:
        flow = start_flow("engagement", private_stack, tmp_path / "eng")
        expected = valid_ids(private_stack)
        got = lake_ids(lake, expected)
        stop(flow)
        # Restarted, the flow settles its parts (the files of an epoch it had not committed
        # go, and its replay writes them again): nothing is written twice.
        flow = start_flow("engagement", private_stack, tmp_path / "eng")
        time.sleep(3)
        again = lake_ids(lake, expected)
    finally:
        stop(flow)
        stop(content)
    assert got == again == expected
    assert not (tmp_path / "eng" / "lake").exists()
    hours = lake.hours(EVENTS)
    done = lake.compact(EVENTS, (hours[-1] + 1) * HOUR_MS, journal_horizon_ms=0)  # all stopped
    assert done.files > 1 and len(lake.files(EVENTS)) == len(hours)
    assert Counter(lake.read(EVENTS).column("event_id").to_pylist()) == expected


def valid_ids(stack: StackInfo) -> Counter[str]:
    """Event ids of the topic's valid events, as often as the topic holds them."""
    return Counter(
        ev.event_id
        for raw in read_topic(stack.bootstrap, TOPIC_ENGAGEMENT)
        if isinstance(ev := decode_engagement(raw), EngagementEvent)
    )


def lake_ids(lake: Lake, expected: Counter[str], timeout_s: float = 60) -> Counter[str]:
    """The lake's event ids once it holds as many rows as expected (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = Counter(lake.read(EVENTS, columns=["event_id"]).column("event_id").to_pylist())
        if got.total() >= expected.total() or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.mark.reliability
def test_kill_9_mid_stream_then_restart_gives_the_features_of_a_clean_run(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    run = publish(private_stack, users=300, rate=40_000, duration=3, malformed=0.0)
    client = redis.Redis.from_url(private_stack.redis_url)
    content = load_catalogue(private_stack, tmp_path, client)
    users = run["users"]

    def done(d: dict[str, str]) -> bool:
        return sum(k.startswith("ff:{u:") for k in d) == len(users)

    try:
        crashed = start_flow("engagement", private_stack, tmp_path / "crash")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not feature_digest(client, (USERS,)):
            time.sleep(0.05)
        time.sleep(1.5)  # past at least one snapshot, well before the end of the stream
        partial = feature_digest(client, ALL_FEATURES)
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
        resumed = start_flow("engagement", private_stack, tmp_path / "crash")
        after_crash = wait_until_stable(lambda: feature_digest(client, ALL_FEATURES), done, 180)
        stop(resumed)
        assert partial != after_crash, "the kill came after the stream was done: nothing tested"
        # A killed flow's lake: each valid event exactly once, nothing lost, nothing twice.
        expected = valid_ids(private_stack)
        assert lake_ids(Lake(str(tmp_path / "crash" / "lake")), expected) == expected

        for key in after_crash:
            client.delete(key)
        clean = start_flow("engagement", private_stack, tmp_path / "clean")
        clean_run = wait_until_stable(lambda: feature_digest(client, ALL_FEATURES), done, 180)
        stop(clean)
    finally:
        stop(content)
    assert sum(k.startswith("ff:{c:") for k in clean_run) > 100  # co-engagement records too
    assert after_crash == clean_run


def inspect(stack: StackInfo, kind: str, entity: str) -> dict:
    env = {**os.environ, "REDIS_URL": stack.redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "feedflow.cli", "inspect", kind, entity, "--json"],
        cwd=ROOT, env=env, capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def catalogue_ids(client: redis.Redis) -> list[str]:
    return [k.decode()[len("ff:item:{") : -1] for k in client.scan_iter("ff:item:{*")]


def dead_letters(bootstrap: str) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(TOPIC_DEADLETTER, p, 0) for p in range(2)])
    letters, eofs, deadline = [], 0, time.monotonic() + 30
    while eofs < 2 and time.monotonic() < deadline:
        for msg in consumer.consume(500, 1.0):
            if msg.error():
                eofs += 1
            else:
                letters.append(decode_deadletter(msg.value() or b""))
    consumer.close()
    return letters


@pytest.mark.reliability
def test_a_redis_outage_fails_the_flow_loudly_and_a_restart_loses_nothing(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    run = publish(private_stack, users=150, rate=20_000, duration=2, malformed=0.0)
    client = redis.Redis.from_url(private_stack.redis_url)
    content = load_catalogue(private_stack, tmp_path, client)
    stop(content)  # the catalogue is loaded; only the engagement flow talks to Redis now
    redis_pid = next(p.pid for p in private_stack.processes if p.name == "redis")
    flow = start_flow("engagement", private_stack, tmp_path / "eng")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not feature_digest(client, (USERS,)):
            time.sleep(0.05)
        os.kill(redis_pid, signal.SIGSTOP)  # Redis hangs: every call times out
        try:
            code = flow.wait(120)
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        log = (tmp_path / "eng" / "engagement.log").read_text(errors="replace")
        assert code != 0, "a Redis outage must stop the flow, not drop features"
        assert "StoreUnavailableError" in log and "redis unreachable" in log
        flow = start_flow("engagement", private_stack, tmp_path / "eng")
        users = run["users"]
        features = wait_until_stable(
            lambda: feature_digest(client, (USERS,)), lambda d: len(d) == len(users), 120
        )
    finally:
        stop(flow)
    assert {k[len("ff:{u:") : -1] for k in features} == users


@pytest.mark.reliability
def test_redis_lost_empty_is_rebuilt_from_the_log_identical(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    """Redis restarts empty (persistence off): `feedflow flow NAME --rebuild` for the content
    and the engagement flow brings every feature, board, co-engagement record and the
    catalogue back as they were; a plain restart (resuming its snapshots) would not."""
    run = publish(private_stack, users=150, rate=20_000, duration=2, malformed=0.01)
    client = redis.Redis.from_url(private_stack.redis_url)
    users = run["users"]

    def done(d: dict[str, str]) -> bool:
        return sum(k.startswith("ff:{u:") for k in d) == len(users)

    everything = (*ALL_FEATURES, "ff:item:*")
    content = load_catalogue(private_stack, tmp_path, client)
    flow = start_flow("engagement", private_stack, tmp_path / "eng")
    try:
        before = wait_until_stable(lambda: feature_digest(client, everything), done, 180)
    finally:
        stop(flow)
        stop(content)
    assert sum(k.startswith("ff:item:") for k in before) >= 400
    client.flushall()  # Redis restarted empty

    resumed = start_flow("engagement", private_stack, tmp_path / "eng")
    time.sleep(5.0)
    stop(resumed)
    assert not done(feature_digest(client, everything)), "a plain restart rebuilt: nothing tested"

    # In order, as the first time: the catalogue first (views are judged by item durations).
    content = start_flow("content", private_stack, tmp_path / "content", "--rebuild")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for _ in client.scan_iter("ff:item:*")) < 400:
        assert content.poll() is None, "the content flow died"
        time.sleep(0.5)
    flow = start_flow("engagement", private_stack, tmp_path / "eng", "--rebuild")
    try:
        after = wait_until_stable(
            lambda: feature_digest(client, everything), lambda d: done(d) and len(d) >= len(before),
            180,
        )  # fmt: skip
    finally:
        stop(flow)
        stop(content)
    assert after == before
    assert client.get("ff:{idx}:active") is not None  # the index has a version again
    assert list((tmp_path / "eng" / "recovery").glob("engagement.replaced-*"))


@pytest.mark.reliability
def test_kill_9_of_the_content_flow_then_restart_gives_the_catalogue_of_a_clean_build(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    items = 6_000  # enough to take the flow several epochs
    sink = KafkaSink(private_stack.bootstrap)
    words = ("jazz", "news", "physics", "comedy", "football", "cooking", "history", "rain")
    for n in range(items):
        media_id = f"k{n:05d}"
        item = {"media_id": media_id, "creator_id": f"c{n % 90}", "content_type": "VIDEO",
                "title": f"{words[n % 8]} {words[n * 7 % 8]} {n}", "category": words[n % 8],
                "duration_s": 60.0 + n % 600, "published_at": START_MS + n}  # fmt: skip
        sink.write(TOPIC_MEDIA, media_id, START_MS + n, orjson.dumps(item).decode())
    sink.close()
    client = redis.Redis.from_url(private_stack.redis_url)

    def catalogue() -> dict[str, str]:
        return feature_digest(client, ("ff:item:*",))

    def complete(d: dict[str, str]) -> bool:
        return len(d) == items

    crashed = start_flow("content", private_stack, tmp_path / "crash")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not catalogue():
            time.sleep(0.02)
        partial = catalogue()
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
        resumed = start_flow("content", private_stack, tmp_path / "crash")
        after_crash = wait_until_stable(catalogue, complete, 120)
        stop(resumed)
        assert not complete(partial), "the kill came after the catalogue was done: nothing tested"
        client.flushall()
        clean = start_flow("content", private_stack, tmp_path / "clean")
        clean_build = wait_until_stable(catalogue, complete, 120)
        stop(clean)
    finally:
        stop(crashed)
    assert after_crash == clean_build
