"""Where a weekly run reads its week of engagement events: the topic, or a file.

From Kafka, each partition of `user.engagement.events` is read from the first offset at or
after the week's start (less the allowed lateness; from the beginning when the broker cannot
say) up to its end at the time of reading; the aggregation keeps the events stamped inside
the week. It does not stop at the first message stamped after the week: message timestamps
are the events' own and need not rise along a partition (a broker that cannot seek by time
serves older traffic first, and a replayed backfill can follow newer events), so an early
stop could skip part of the week. Reading past the week costs at most the day or so between
the week's end and the run. Keep the topic's retention above eight days so the whole week is
still there when the run starts. A file holds the simulator's `--out` lines
(`{"topic", "key", "ts", "value"}`) or one raw event per line (a backfill or a replay).

Payloads that fail validation are counted (`invalid`) and skipped: the engagement flow
already sent them to the dead-letter topic when they first arrived.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent, decode_engagement
from operators.errors import FeedflowError
from operators.settings import Settings

IDLE_TIMEOUT_S: Final = 60.0


class WeekInputError(FeedflowError):
    """The week's events could not be read (broker unreachable, a file unreadable)."""


@dataclass
class Counts:
    """What a reader saw."""

    read: int = 0
    invalid: int = 0


def decoded(payloads: Iterator[bytes], counts: Counts) -> Iterator[EngagementEvent]:
    """Valid engagement events of raw payloads; the rest only counted."""
    for raw in payloads:
        counts.read += 1
        event = decode_engagement(raw)
        if isinstance(event, EngagementEvent):
            yield event
        else:
            counts.invalid += 1


def file_payloads(path: Path) -> Iterator[bytes]:
    """Engagement payloads of a JSONL file (simulator output or one event per line)."""
    try:
        with path.open("rb") as lines:
            for line in lines:
                if not line.strip():
                    continue
                if line.startswith(b'{"topic"'):
                    record = orjson.loads(line)
                    if record.get("topic") == TOPIC_ENGAGEMENT:
                        yield str(record.get("value", "")).encode()
                else:
                    yield line.rstrip(b"\r\n")
    except OSError as exc:
        raise WeekInputError(f"weekly input {path}: {exc}") from exc


def kafka_payloads(
    settings: Settings, start_ms: int, idle_timeout_s: float = IDLE_TIMEOUT_S
) -> Iterator[bytes]:
    """Engagement payloads of the week from the topic (see module doc).

    Raises:
        WeekInputError: when the broker cannot be read, or a partition stalls for
            `idle_timeout_s` before its end.
    """
    margin = settings.allowed_lateness_s * 1000
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"feedflow-weights-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        remaining = _assign(consumer, start_ms - margin)
        last_progress = time.monotonic()
        while remaining:
            messages = consumer.consume(1000, timeout=1.0)
            if messages:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout_s:
                raise WeekInputError(
                    f"weekly input: partitions {sorted(remaining)} of {TOPIC_ENGAGEMENT} "
                    f"sent nothing for {idle_timeout_s:.0f}s before their end"
                )
            for msg in messages:
                err, part = msg.error(), msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(part)
                        continue
                    raise WeekInputError(f"weekly input: {err}")
                if part not in remaining:
                    continue
                value = msg.value()
                yield value if isinstance(value, bytes) else b""
    finally:
        consumer.close()


def _assign(consumer: Consumer, from_ms: int) -> set[int]:
    """Assign every partition at its first offset at or after `from_ms`; their numbers."""
    try:
        meta = consumer.list_topics(TOPIC_ENGAGEMENT, timeout=10)
    except Exception as exc:
        raise WeekInputError(f"weekly input: cannot list {TOPIC_ENGAGEMENT}: {exc}") from exc
    topic = meta.topics.get(TOPIC_ENGAGEMENT)
    if topic is None or topic.error is not None or not topic.partitions:
        raise WeekInputError(f"weekly input: topic {TOPIC_ENGAGEMENT} is not available")
    parts = sorted(topic.partitions)
    wanted = [TopicPartition(TOPIC_ENGAGEMENT, p, max(from_ms, 0)) for p in parts]
    try:
        found = consumer.offsets_for_times(wanted, timeout=10)
    except Exception:  # a broker that cannot search by time: read from the beginning
        found = [TopicPartition(TOPIC_ENGAGEMENT, p, OFFSET_BEGINNING) for p in parts]
    assignment = []
    for tp in found:
        offset = OFFSET_BEGINNING if tp.error is not None else tp.offset
        if offset == -1:  # OFFSET_END: nothing at or after the start in this partition
            continue
        assignment.append(TopicPartition(TOPIC_ENGAGEMENT, tp.partition, offset))
    consumer.assign(assignment)
    return {tp.partition for tp in assignment}
