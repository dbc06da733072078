"""Reading a whole topic once, bounded: from the beginning (or a time) up to its end *now*.

For commands that report on what a topic holds (`feedflow ab report`): every partition is
read from its first offset, or from the first message at or after `since_ms`, up to the end
offset it had when reading began, so the read ends even while producers keep writing.

The end offsets are the high watermarks of the first fetch answers, not of a ListOffsets
request: the embedded broker (Tansu) answers ListOffsets for the latest offset with 1
whatever the partition holds, while its fetch answers carry the true high watermark.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterator
from typing import Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from flows.kafka_in import CONSUMER_CONFIG
from kernel.errors import FeedflowError

METADATA_TIMEOUT_S: Final = 10.0
BATCH: Final = 5_000


class TopicReadError(FeedflowError):
    """A topic could not be read to its end (missing, broker unreachable, too slow)."""


def read_topic(
    bootstrap: str,
    topic: str,
    since_ms: int | None = None,
    timeout_s: float | None = 300.0,
    idle_timeout_s: float | None = None,
    client: dict[str, str] | None = None,
    partitions: Collection[int] | None = None,
) -> Iterator[bytes]:
    """Every message value of `topic` from `since_ms` (or the start) to today's end;
    `client`: Kafka client properties (`Settings.kafka_client`: SASL, SSL, …); `partitions`:
    only these (all by default).

    Raises:
        TopicReadError: the topic does not exist, the broker does not answer, or the read
            did not reach the end offsets within `timeout_s` (None: no limit), or no message
            came for `idle_timeout_s` (None: no limit) before the end.
    """
    consumer = _consumer(bootstrap, client)
    try:
        starts = _starts(consumer, topic, since_ms, partitions)
        consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])
        remaining, ends = set(starts), dict[int, int]()
        started = last_message = time.monotonic()
        while remaining:
            now = time.monotonic()
            if timeout_s is not None and now - started > timeout_s:
                raise TopicReadError(f"{topic}: not read to its end within {timeout_s:.0f} s")
            if idle_timeout_s is not None and now - last_message > idle_timeout_s:
                raise TopicReadError(
                    f"{topic}: partitions {sorted(remaining)} sent nothing for "
                    f"{idle_timeout_s:.0f} s before their end"
                )
            messages = consumer.consume(BATCH, 0.5)
            if messages:
                last_message = time.monotonic()
            for msg in messages:
                partition, offset, err = msg.partition() or 0, msg.offset() or 0, msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise TopicReadError(f"{topic}: consumer error {err}")
                if partition not in remaining:
                    continue
                if partition not in ends:  # the first answer fixes where this read ends
                    tp = TopicPartition(topic, partition)
                    ends[partition] = consumer.get_watermark_offsets(tp, cached=True)[1]
                if err is None and offset < ends[partition]:
                    yield msg.value() or b""
                if err is not None or offset >= ends[partition] - 1:
                    remaining.discard(partition)
    except KafkaException as exc:
        raise TopicReadError(f"{topic}: {exc}") from exc
    finally:
        consumer.close()


def _consumer(bootstrap: str, client: dict[str, str] | None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"feedflow-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **CONSUMER_CONFIG,
            **(client or {}),
        }
    )


def partitions_of(bootstrap: str, topic: str, client: dict[str, str] | None = None) -> list[int]:
    """The partitions of `topic`, in order.

    Raises:
        TopicReadError: the topic does not exist, or the broker does not answer.
    """
    consumer = _consumer(bootstrap, client)
    try:
        return topic_partitions(consumer, topic)
    except KafkaException as exc:
        raise TopicReadError(f"{topic}: {exc}") from exc
    finally:
        consumer.close()


def topic_partitions(consumer: Consumer, topic: str) -> list[int]:
    """The partitions of `topic`, in order.

    Raises:
        TopicReadError: the topic does not exist.
    """
    meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise TopicReadError(f"{topic}: no such topic ({found.error if found else 'missing'})")
    return sorted(found.partitions)


def _starts(
    consumer: Consumer, topic: str, since_ms: int | None, partitions: Collection[int] | None
) -> dict[int, int]:
    """Partition → the first offset to read (the beginning, or the first at `since_ms`)."""
    found = topic_partitions(consumer, topic)
    if partitions is not None:
        missing = set(partitions).difference(found)
        if missing:
            raise TopicReadError(f"{topic}: no partition {sorted(missing)}")
        found = [p for p in found if p in partitions]
    starts = dict.fromkeys(found, OFFSET_BEGINNING)
    if since_ms is not None:
        wanted = [TopicPartition(topic, p, since_ms) for p in starts]
        for tp in consumer.offsets_for_times(wanted, METADATA_TIMEOUT_S):
            # -1: nothing at or after since_ms: read from the end (EOF comes at once)
            starts[tp.partition] = tp.offset if tp.offset >= 0 else OFFSET_END
    return starts
