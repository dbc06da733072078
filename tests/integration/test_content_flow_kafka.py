"""The content flow against the real broker and Redis: publish → searchable at a reader."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from operators.contracts import (
    TOPIC_DEADLETTER,
    TOPIC_MEDIA,
    MediaPublished,
    decode_deadletter,
    encode,
)
from state.index_reader import IndexReader
from state.snapshots import DirSnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 2.0


def _wait(pred, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


@pytest.fixture
def content_flow(stack, redis_url, tmp_path):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "REDIS_URL": redis_url,
        "FEEDFLOW_STATE_DIR": str(tmp_path),
        "FEEDFLOW_EMBEDDING_DIM": "32",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.content:build_flow()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield tmp_path / "index"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
        if proc.returncode not in (0, -15, 143):
            print(err.decode(errors="replace")[-3000:])


def test_published_item_is_searchable_within_budget_and_rejects_dead_letter(
    stack, redis_url, content_flow
):
    client = redis.Redis.from_url(redis_url)
    reader = IndexReader(client, DirSnapshotStore(content_flow), block_ms=50)
    assert _wait(reader.load, 30.0, 0.1), "the content flow never created an index version"
    reader.start()
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    try:
        media_id = f"m-{uuid.uuid4().hex[:8]}"
        published_ms = time.time_ns() // 10**6
        event = MediaPublished(
            media_id=media_id,
            creator_id="c1",
            content_type="VIDEO",
            title="Fresh jazz session",
            category="Music",
            tags=["Jazz"],
            language="en-US",
            duration_s=120.0,
            published_at=published_ms,
        )
        marker = f"broken-{uuid.uuid4().hex}".encode()
        producer.produce(TOPIC_MEDIA, key=media_id, value=encode(event))
        producer.produce(TOPIC_MEDIA, key=b"x", value=b'{"media_id": "' + marker)
        assert producer.flush(10) == 0
        assert _wait(lambda: reader.item(media_id) is not None, 10.0)
        searchable_s = time.time() - published_ms / 1000
        assert searchable_s <= BUDGET_S, f"publish → searchable took {searchable_s:.2f}s"
        assert reader.similar(media_id, 5) is not None
        assert reader.query(reader.vector(media_id), 1)[0][0] == media_id
        assert reader.item(media_id).category == "music"
        assert _dead_lettered(stack.bootstrap, marker)
        producer.produce(
            TOPIC_MEDIA,
            key=media_id,
            value=encode(MediaPublished(media_id=media_id, status="removed")),
        )
        producer.flush(10)
        assert _wait(lambda: reader.item(media_id) is None, 10.0)
    finally:
        reader.stop()
        client.close()


def _dead_lettered(bootstrap: str, marker: bytes) -> bool:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(TOPIC_DEADLETTER, p, 0) for p in range(4)])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            letter = decode_deadletter(msg.value())
            if hasattr(letter, "payload") and marker in letter.payload():
                return letter.topic == TOPIC_MEDIA and letter.offset >= 0
        return False
    finally:
        consumer.close()
