"""Kafka sinks that never lose a message silently.

Bytewax's `KafkaSink` sets no delivery callback and ignores `flush()`'s result, so a failed
delivery vanishes. :class:`DeadLetterSink` waits for every delivery of a batch and raises
when one failed: the dataflow stops loudly and resumes from its last snapshot instead.

No input may wedge a flow that way, though. A letter is bounded before it is produced (at
most `payload_bytes` of the payload; the coordinates, size and digest always), and one the
broker or client still refuses *for its size* (a broker configured with a smaller
`message.max.bytes`) is sent again with no payload at all, its coordinates pointing at the
original, and counted (`feedflow_deadletter_stripped_total`). Only what would fail for any
message — the broker unreachable past the flush timeout — stops the flow: that is an outage,
which a restart retries, not a poison pill.
"""

from __future__ import annotations

from typing import Any

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kernel.errors import FeedflowError
from kernel.metrics import DEADLETTERS, DEADLETTERS_STRIPPED
from kernel.settings import Settings
from operators.contracts import DEADLETTER_PAYLOAD_BYTES, TOPIC_DEADLETTER, DeadLetter, encode

FLUSH_TIMEOUT_S = 30.0
# Refusals that concern the message itself: sending it smaller is the answer.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})


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
        payload_bytes: int = DEADLETTER_PAYLOAD_BYTES,
    ) -> None:
        self.brokers, self.topic = brokers, topic
        self.add_config = dict(add_config or {})
        self.flush_timeout_s = flush_timeout_s
        self.payload_bytes = max(payload_bytes, 0)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        """Bytewax: the partition of a worker (one producer each)."""
        config = {
            "bootstrap.servers": self.brokers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            **self.add_config,
        }
        return _DeadLetterPartition(
            Producer(config), self.topic, self.flush_timeout_s, self.payload_bytes
        )


def deadletter_sink(settings: Settings) -> DeadLetterSink:
    """The dead-letter sink of a flow: its broker, client properties and payload bound."""
    return DeadLetterSink(
        settings.kafka_bootstrap_servers,
        add_config=settings.kafka_client,
        payload_bytes=settings.deadletter_payload_bytes,
    )


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(
        self, producer: Producer, topic: str, flush_timeout_s: float, payload_bytes: int
    ) -> None:
        self._producer, self._topic, self._timeout = producer, topic, flush_timeout_s
        self._keep = payload_bytes
        self._failures: list[str] = []
        self._too_large: list[DeadLetter] = []

    def _refused(self, letter: DeadLetter, code: object) -> bool:
        """Keep a letter refused for its size (and still carrying payload) for a resend."""
        if code in _TOO_LARGE and letter.payload_b64:
            self._too_large.append(letter)
            return True
        return False

    def _send(self, letter: DeadLetter) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None and not self._refused(letter, err.code()):
                self._failures.append(str(err))

        try:
            self._producer.produce(self._topic, value=encode(letter), on_delivery=delivered)
        except BufferError:  # the local queue is full: make room, then try once more
            self._producer.flush(self._timeout)
            self._producer.produce(self._topic, value=encode(letter), on_delivery=delivered)
        except KafkaException as exc:  # refused before queueing (the client's own size limit)
            if not self._refused(letter, exc.args[0].code() if exc.args else None):
                raise
        self._producer.poll(0)

    def write_batch(self, items: list[DeadLetter]) -> None:
        for letter in items:
            self._send(letter.bounded(self._keep))
        remaining = self._producer.flush(self._timeout)
        while self._too_large and not remaining:
            stripped, self._too_large = self._too_large, []
            for letter in stripped:
                DEADLETTERS_STRIPPED.inc()
                self._send(msgspec.structs.replace(letter, payload_b64="", truncated=True))
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
