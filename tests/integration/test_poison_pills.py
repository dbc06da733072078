"""No input a broker accepts stops a flow: hostile payloads through the engagement, content
and learning flows as `feedflow flow` processes on a real broker, each answered by one bounded
dead letter.

Payloads from 1 byte to 2 MB (the producer's size limit raised to send them), binary, deeply
nested, huge numbers and every field of the wrong type. After them, one valid message on the
engagement and media topics: when its result is in Redis the flow has read past every bad
one, and it must still be running (the learning flow: while its letters arrive). Every dead
letter points at its original (partition and offset, 0 included), carries its size and
digest, and fits the broker's default message limit.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path

import msgspec
import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from feedflow.stack import StackInfo
from flows.sinks import DeadLetterSink
from kernel.metrics import DEADLETTERS_STRIPPED
from operators.contracts import (
    DEADLETTER_PAYLOAD_BYTES,
    TOPIC_DEADLETTER,
    TOPIC_ENGAGEMENT,
    TOPIC_IMPRESSIONS,
    TOPIC_MEDIA,
    DeadLetter,
    dead_letter,
    decode_deadletter,
)
from state.feature_store import USER, feature_key
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import start_flow

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
T0 = 1_700_000_000_000
BROKER_LIMIT = 1_000_000  # the default message.max.bytes of brokers and clients


def hostile(kind: str) -> list[bytes]:
    """Payloads every flow must refuse, without stopping."""
    wrong = {
        "event_id": 1, "event_type": ["x"], "user_id": {"a": 1}, "media_id": 2.5,
        "ts": "yesterday", "position_s": "far", "published_at": None, "title": 7,
    }  # fmt: skip
    tag = kind.encode()
    return [  # each unique per flow, so its dead letter can be told apart by digest
        b"{" + tag,
        bytes(range(256)) * 4 + tag,  # binary, not UTF-8
        b"[" * 100_000 + tag + b"]" * 100_000,  # deeply nested
        b'{"kind": "' + tag + b'", "ts": 1' + b"0" * 5_000 + b"}",  # a huge number
        orjson.dumps({**wrong, "kind": kind}),
        far_future(kind),  # valid but for a stamp past 2100
        orjson.dumps({"kind": kind, "padding": "x" * 100_000}),
        orjson.dumps({"kind": kind, "padding": "x" * 900_000}),
        orjson.dumps({"kind": kind, "padding": "x" * 2_000_000}),  # ~2 MB
    ]


def far_future(kind: str) -> bytes:
    """A valid engagement event of the year 2200 (state packs seconds as uint32)."""
    return orjson.dumps({
        "event_id": f"far-{kind}", "event_type": "media_started", "user_id": "u-far",
        "media_id": "m-far", "ts": 7_258_118_400_000, "position_s": 0.0, "kind": kind,
    })  # fmt: skip


def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000})
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def dead_letters(bootstrap: str, want: int, timeout_s: float = 60.0) -> list[tuple[int, bytes]]:
    """(size, value) of the dead-letter topic's records, from the start of every partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.partition.eof": True})  # fmt: skip
    partitions = consumer.list_topics(TOPIC_DEADLETTER, timeout=10).topics[TOPIC_DEADLETTER]
    consumer.assign([TopicPartition(TOPIC_DEADLETTER, p, 0) for p in partitions.partitions])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        for msg in consumer.consume(100, 1.0):
            if msg.error() is None:
                out.append((len(msg.value() or b""), msg.value() or b""))
    consumer.close()
    return out


def test_hostile_payloads_become_bounded_dead_letters_and_no_flow_stops(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    # Same keys as the valid messages: one partition each, so a valid one's result proves
    # the flow read past every bad one before it.
    bad = [(TOPIC_ENGAGEMENT, b"u-good", p) for p in hostile("engagement")]
    bad += [(TOPIC_MEDIA, b"m-good", p) for p in hostile("media")]
    bad += [(TOPIC_IMPRESSIONS, b"u-good", p) for p in hostile("impressions")]
    good_media = {
        "media_id": "m-good", "content_type": "VIDEO", "title": "After the storm",
        "category": "news", "creator_id": "c1", "duration_s": 60.0, "published_at": T0,
    }  # fmt: skip
    good_event = {"event_id": "e-good", "event_type": "media_started", "user_id": "u-good",
                  "media_id": "m-good", "ts": T0 + 1000, "position_s": 0.0}  # fmt: skip
    produce(private_stack.bootstrap, [
        *bad,
        (TOPIC_MEDIA, b"m-good", orjson.dumps(good_media)),
        (TOPIC_ENGAGEMENT, b"u-good", orjson.dumps(good_event)),
    ])  # fmt: skip
    client = redis.Redis.from_url(private_stack.redis_url)
    content = start_flow("content", private_stack, tmp_path / "content")
    engagement = start_flow("engagement", private_stack, tmp_path / "engagement")
    learning = start_flow("learning", private_stack, tmp_path / "learning")
    flows = {"content": content, "engagement": engagement, "learning": learning}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if client.exists("ff:item:{m-good}") and client.exists(feature_key(USER, "u-good")):
                break
            for name, flow in flows.items():
                assert flow.poll() is None, f"a hostile payload stopped the {name} flow"
            time.sleep(0.5)
        else:
            raise AssertionError("the valid messages after the hostile ones were not processed")
        # One more than expected, so the read waits out its timeout: no extra letter comes.
        letters = dead_letters(private_stack.bootstrap, len(bad) + 1, timeout_s=20.0)
        assert all(flow.poll() is None for flow in flows.values())
    finally:
        for flow in flows.values():
            stop(flow)
        client.close()
    decoded = [decode_deadletter(raw) for _, raw in letters]
    assert all(isinstance(letter, DeadLetter) for letter in decoded)
    assert len(decoded) == len(bad)
    assert max(size for size, _ in letters) < BROKER_LIMIT
    by_digest = {hashlib.blake2b(p, digest_size=16).hexdigest(): (t, p) for t, _, p in bad}
    for letter in decoded:
        assert isinstance(letter, DeadLetter)
        topic, payload = by_digest[letter.digest]
        assert letter.topic == topic and letter.size == len(payload) and letter.reason
        assert letter.partition >= 0 and letter.offset >= 0
        kept = letter.payload()
        assert payload.startswith(kept) and len(kept) <= DEADLETTER_PAYLOAD_BYTES
        assert letter.truncated == (len(kept) < len(payload))
    assert {letter.digest for letter in decoded} == set(by_digest)


def test_a_letter_refused_for_its_size_is_sent_again_without_payload(stack: StackInfo) -> None:
    """A sink configured to keep more than the client may send (as with a broker whose
    limit is below the prefix): the letter goes out stripped, never wedging the flow."""
    sink = DeadLetterSink(stack.bootstrap, payload_bytes=3_000_000, flush_timeout_s=20.0)
    part = sink.build("dlq", 0, 1)
    payload = uuid.uuid4().bytes * 100_000  # 1.6 MB, unique
    letter = dead_letter(TOPIC_ENGAGEMENT, 3, 0, "payload too large", payload, T0)
    big = msgspec.structs.replace(letter, payload_b64=base64.b64encode(payload).decode())
    stripped_before = DEADLETTERS_STRIPPED._value.get()
    part.write_batch([big])
    part.close()
    assert DEADLETTERS_STRIPPED._value.get() == stripped_before + 1
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    found = [
        x for _, raw in dead_letters(stack.bootstrap, 10_000, timeout_s=8.0)
        if isinstance(x := decode_deadletter(raw), DeadLetter) and x.digest == digest
    ]  # fmt: skip
    assert len(found) == 1
    assert found[0].payload() == b"" and found[0].truncated and found[0].size == len(payload)
    assert (found[0].partition, found[0].offset) == (3, 0)
