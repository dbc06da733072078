"""Reading Kafka in a flow: the source, and what to do with messages it could not read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeGuard, TypeVar, cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from bytewax.outputs import Sink

from kernel.metrics import EVENTS
from kernel.settings import Settings
from operators.contracts import DeadLetter, dead_letter
from operators.eventtime import now_ms

T = TypeVar("T")

# Step ids of the decode-and-dead-letter front of every flow (recovery keys: never rename).
STEP_SPLIT: Final = "split_consumer_errors"
STEP_DECODE: Final = "decode"
STEP_ROUTE: Final = "route"
STEP_CONSUMER_ERRORS: Final = "consumer_errors"
STEP_DEADLETTERS: Final = "deadletters"
STEP_DEADLETTER_OUT: Final = "deadletter_out"
FRONT_STEPS: Final = frozenset(
    {STEP_SPLIT, STEP_DECODE, STEP_ROUTE, STEP_CONSUMER_ERRORS, STEP_DEADLETTERS,
     STEP_DEADLETTER_OUT}
)  # fmt: skip


def decoded_input(
    flow: Dataflow,
    input_step: str,
    source: Source[Any],
    topic: str,
    decode: Callable[[KafkaSourceMessage[Any, Any]], T | DeadLetter],
    deadletters: Sink[DeadLetter],
) -> Stream[T]:
    """Read `topic`, decode every message, and send what fails to the dead-letter sink.

    Consumer errors and rejected payloads both become dead letters with their position; what
    comes back is the stream of decoded events only.
    """
    raw = op.input(input_step, flow, source)
    split = op.branch(STEP_SPLIT, raw, is_message)
    decoded = op.map(STEP_DECODE, split.trues, decode)
    routed = op.branch(STEP_ROUTE, decoded, is_dead_letter)
    errors = op.map(STEP_CONSUMER_ERRORS, split.falses, consumer_error(topic))
    op.output(STEP_DEADLETTER_OUT, op.merge(STEP_DEADLETTERS, routed.trues, errors), deadletters)
    # Bytewax narrows only the trues of a TypeGuard branch: the rest are the decoded events.
    return cast(Stream[T], routed.falses)


def is_dead_letter(x: object) -> TypeGuard[DeadLetter]:
    """True for a payload the decoder turned into a dead letter."""
    return isinstance(x, DeadLetter)


# Measured on the embedded broker (Tansu): produce → fetched took ~120 ms (P50) with
# librdkafka's default fetch wait (500 ms), ~26 ms with 50 ms and ~4 ms with 10 ms; a waiting
# fetch is answered late rather than when data arrives. Apache Kafka answers a waiting fetch
# as soon as data arrives, so there a shorter wait only means more empty fetches while a
# partition is idle.
CONSUMER_CONFIG: Final[dict[str, str]] = {"fetch.wait.max.ms": "50"}


# How long a partition that had nothing waits before it is polled again. Bytewax's Kafka
# partition asks for messages with a 1 ms timeout and no wake-up time, so the engine polls
# an idle partition as fast as it can (an idle learning flow, 12 partitions: 6.4 % of a core;
# paced: 4.9 %). Under load a batch is never empty and this never applies; after a quiet
# spell the first message waits at most this long, as long as librdkafka's own fetch wait.
IDLE_POLL: Final = timedelta(milliseconds=50)


class _PacedPartition(StatefulSourcePartition[Any, Any]):
    """A source partition that, after an empty batch, asks to be polled `idle` later."""

    def __init__(self, inner: StatefulSourcePartition[Any, Any], idle: timedelta) -> None:
        self._inner, self._idle = inner, idle
        self._awake: datetime | None = None

    def next_batch(self) -> list[Any]:
        """Bytewax: the inner partition's batch; an empty one sets the next wake-up."""
        found = self._inner.next_batch()
        batch = found if isinstance(found, list) else list(found)  # Kafka's: a list, not copied
        self._awake = None if batch else datetime.now(UTC) + self._idle
        return batch

    def next_awake(self) -> datetime | None:
        """Bytewax: when to poll again (None: as soon as the engine can)."""
        return self._awake

    def snapshot(self) -> Any:
        """Bytewax: the inner partition's resume state (its offset)."""
        return self._inner.snapshot()

    def close(self) -> None:
        """Bytewax: close the inner partition's consumer."""
        self._inner.close()


class PacedSource(FixedPartitionedSource[Any, Any]):
    """A partitioned source (Bytewax's Kafka source) whose idle partitions are polled every
    `idle` instead of continuously; partitions, offsets and recovery are the inner one's."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], idle: timedelta) -> None:
        self._inner, self._idle = inner, idle

    def list_parts(self) -> list[str]:
        """Bytewax: the inner source's partitions."""
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _PacedPartition:
        """Bytewax: the inner source's partition `for_part`, paced when idle."""
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _PacedPartition(inner, self._idle)


def kafka_source(settings: Settings, topics: list[str]) -> PacedSource:
    """`topics` from the beginning, or from the recovery store's offsets when resuming.

    Consumer errors become items (not crashes) so they can go to the dead-letter topic.
    """
    kafka = KafkaSource(
        brokers=[b.strip() for b in settings.kafka_bootstrap_servers.split(",")],
        topics=topics,
        tail=True,
        batch_size=settings.kafka_batch_size,
        raise_on_errors=False,
        add_config={**CONSUMER_CONFIG, **settings.kafka_client},
    )
    return PacedSource(kafka, IDLE_POLL)


def is_message(item: Any) -> TypeGuard[KafkaSourceMessage[Any, Any]]:
    """True for a message, False for a consumer error."""
    return isinstance(item, KafkaSourceMessage)


def coordinates(msg: KafkaSourceMessage[Any, Any]) -> tuple[int, int]:
    """(partition, offset) of a message; -1 where unknown (0 is a real partition and offset)."""
    partition = msg.partition if msg.partition is not None else -1
    offset = msg.offset if msg.offset is not None else -1
    return partition, offset


def consumer_error(topic: str) -> Callable[[KafkaError[Any, Any]], DeadLetter]:
    """A mapper from consumer errors on `topic` to counted dead letters."""

    def to_letter(err: KafkaError[Any, Any]) -> DeadLetter:
        EVENTS.labels(topic=topic, outcome="error").inc()
        msg = err.msg
        raw = msg.value if isinstance(msg.value, bytes) else b""
        now = now_ms()
        return dead_letter(msg.topic or topic, *coordinates(msg), str(err.err), raw, now)

    return to_letter
