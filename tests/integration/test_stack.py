"""The local stack on real processes: up, idempotence, status, down."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from feedflow.stack import LocalStack, StackInfo, broker_answers, is_running, redis_answers
from operators.contracts import ALL_TOPICS, TOPIC_ENGAGEMENT, TOPIC_ERASURE

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    local = LocalStack(tmp_path, partitions=2)
    first = local.up()
    try:
        second = local.up()
        assert second.bootstrap == first.bootstrap
        assert second.redis_url == first.redis_url
        assert [p.pid for p in second.processes] == [p.pid for p in first.processes]
        status = local.status()
        assert status["broker_answers"] and status["redis_answers"]
    finally:
        stopped = local.down()
    assert sorted(stopped) == ["broker", "redis"]
    assert not any(is_running(p) for p in first.processes)
    assert not broker_answers(first.bootstrap, timeout=0.5)
    assert not redis_answers(first.redis_url)
    assert local.status() == {"running": False, "state_dir": str(tmp_path)}
    assert local.down() == []


def test_up_reuses_an_answering_redis_and_down_leaves_it_running(
    tmp_path: Path, stack: StackInfo
) -> None:
    local = LocalStack(tmp_path, partitions=1, redis_url=stack.redis_url)
    info = local.up()
    try:
        assert info.redis_external
        assert info.redis_url == stack.redis_url
        assert [p.name for p in info.processes] == ["broker"]
    finally:
        local.down()
    assert redis_answers(stack.redis_url)


def test_up_restarts_a_dead_broker_with_its_topics(tmp_path: Path) -> None:
    local = LocalStack(tmp_path, partitions=1)
    info = local.up()
    try:
        broker = next(p for p in info.processes if p.name == "broker")
        subprocess.run(["kill", "-9", str(broker.pid)], check=True)
        deadline = time.monotonic() + 10
        while is_running(broker) and time.monotonic() < deadline:  # SIGKILL is asynchronous
            time.sleep(0.02)
        again = local.up()
        assert again.bootstrap != info.bootstrap
        assert broker_answers(again.bootstrap)
        _assert_topics(again.bootstrap, partitions=1)
    finally:
        local.down()


def test_session_stack_has_every_topic_and_round_trips_keyed_messages(stack: StackInfo) -> None:
    _assert_topics(stack.bootstrap, partitions=4)
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for i in range(20):
        producer.produce(TOPIC_ENGAGEMENT, key=f"user-{i % 3}", value=b"{}")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": "t", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(TOPIC_ENGAGEMENT, p, 0) for p in range(4)])
    by_key: dict[str, set[int]] = {}
    eofs = 0
    while eofs < 4:
        for msg in consumer.consume(100, 5):
            if msg.error():
                eofs += 1
            else:
                key, part = msg.key(), msg.partition()
                assert key is not None and part is not None
                by_key.setdefault(key.decode(), set()).add(part)
    consumer.close()
    assert {k for k in by_key if k.startswith("user-")} >= {"user-0", "user-1", "user-2"}
    # One key, one partition: keyed state stays on one worker.
    assert all(len(parts) == 1 for parts in by_key.values())
    assert redis.Redis.from_url(stack.redis_url).ping()


def test_cli_prints_eval_lines_and_stops(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "feedflow.cli", "stack"]
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    up = subprocess.run(
        [*cli, "up", "--state-dir", str(tmp_path)], capture_output=True, text=True, env=env_free
    )
    try:
        assert up.returncode == 0, up.stderr
        *assignments, export = up.stdout.splitlines()
        assert export == "export KAFKA_BOOTSTRAP_SERVERS REDIS_URL"
        lines = dict(line.split("=", 1) for line in assignments)
        assert set(lines) == {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
        assert lines["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
        assert broker_answers(lines["KAFKA_BOOTSTRAP_SERVERS"])
        assert redis_answers(lines["REDIS_URL"])
    finally:
        down = subprocess.run(
            [*cli, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True,
            env=env_free,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    status = subprocess.run(
        [*cli, "status", "--state-dir", str(tmp_path)], capture_output=True, env=env_free
    )
    assert status.returncode == 3


def _assert_topics(bootstrap: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._config import ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for name in ALL_TOPICS:
        assert name in topics
        assert len(topics[name].partitions) == partitions
    # Erased users stay erased only while their requests stay: compacted, never expired.
    [future] = admin.describe_configs([ConfigResource("topic", TOPIC_ERASURE)]).values()
    config = {k: v.value for k, v in future.result(10).items()}
    assert config["cleanup.policy"] == "compact" and config["retention.ms"] == "-1"
