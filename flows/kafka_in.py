"""Reading Kafka in a flow: the source, and what to do with messages it could not read."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeGuard

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage

from operators.contracts import DeadLetter, dead_letter
from operators.metrics import EVENTS
from operators.settings import Settings


def kafka_source(settings: Settings, topics: list[str]) -> KafkaSource:
    """`topics` from the beginning, or from the recovery store's offsets when resuming.

    Consumer errors become items (not crashes) so they can go to the dead-letter topic.
    """
    return KafkaSource(
        brokers=[b.strip() for b in settings.kafka_bootstrap_servers.split(",")],
        topics=topics,
        tail=True,
        batch_size=settings.kafka_batch_size,
        raise_on_errors=False,
    )


def is_message(item: Any) -> TypeGuard[KafkaSourceMessage[Any, Any]]:
    """True for a message, False for a consumer error."""
    return isinstance(item, KafkaSourceMessage)


def consumer_error(topic: str) -> Callable[[KafkaError[Any, Any]], DeadLetter]:
    """A mapper from consumer errors on `topic` to counted dead letters."""

    def to_letter(err: KafkaError[Any, Any]) -> DeadLetter:
        EVENTS.labels(topic=topic, outcome="error").inc()
        msg = err.msg
        raw = msg.value if isinstance(msg.value, bytes) else b""
        now_ms = time.time_ns() // 1_000_000
        where = (msg.partition or -1, msg.offset or -1)
        return dead_letter(msg.topic or topic, *where, str(err.err), raw, now_ms)

    return to_letter
