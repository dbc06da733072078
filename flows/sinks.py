"""Kafka sinks that never lose a message silently.

Bytewax's `KafkaSink` sets no delivery callback and ignores `flush()`'s result, so a failed
delivery vanishes. :class:`DeadLetterSink` waits for every delivery of a batch and raises
when one failed: the dataflow stops loudly and resumes from its last snapshot instead.
"""

from __future__ import annotations

from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from operators.contracts import TOPIC_DEADLETTER, DeadLetter, encode
from operators.errors import FeedflowError
from operators.metrics import DEADLETTERS

FLUSH_TIMEOUT_S = 30.0


class DeliveryError(FeedflowError):
    """A Kafka message could not be delivered; the dataflow must stop and resume."""


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Writes dead letters to `feedflow.deadletter` (or `topic`), raising on any failure."""

    def __init__(
        self,
        brokers: str,
        topic: str = TOPIC_DEADLETTER,
        add_config: dict[str, Any] | None = None,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
    ) -> None:
        self.brokers, self.topic = brokers, topic
        self.add_config = dict(add_config or {})
        self.flush_timeout_s = flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        config = {
            "bootstrap.servers": self.brokers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            **self.add_config,
        }
        return _DeadLetterPartition(Producer(config), self.topic, self.flush_timeout_s)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, producer: Producer, topic: str, flush_timeout_s: float) -> None:
        self._producer, self._topic, self._timeout = producer, topic, flush_timeout_s
        self._failures: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def write_batch(self, items: list[DeadLetter]) -> None:
        for letter in items:
            self._producer.produce(self._topic, value=encode(letter), on_delivery=self._delivered)
            self._producer.poll(0)
        remaining = self._producer.flush(self._timeout)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(
                f"DeadLetterSink.write_batch: {remaining} undelivered to {self._topic!r} after "
                f"{self._timeout}s; failures: {failures[:3]}"
            )
        for letter in items:
            DEADLETTERS.labels(topic=letter.topic).inc()

    def close(self) -> None:
        self._producer.flush(self._timeout)
