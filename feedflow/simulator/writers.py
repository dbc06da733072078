"""Where simulated messages go: the broker, a JSONL file, or a list (for tests).

Every sink takes `(topic, key, ts, value)` with `value` the payload text, and reports what it
delivered on `close()`. The Kafka sink fails loudly: a message the broker did not acknowledge
raises :class:`~feedflow.simulator.errors.DeliveryError` when the run ends.
"""

from __future__ import annotations

import time
from typing import IO, Any, Final, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from feedflow.simulator.errors import DeliveryError

# Throughput: big batches, a short linger, a deep local queue; acks from the leader only.
PRODUCER_CONFIG: Final[dict[str, Any]] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.max.bytes": 2_000_000,
    "acks": 1,
    "enable.idempotence": False,
    "delivery.report.only.error": True,
    "message.timeout.ms": 30_000,
}
CONNECT_TIMEOUT_S: Final = 10.0
FLUSH_TIMEOUT_S: Final = 60.0
_MAX_ERRORS_SHOWN: Final = 5


class Sink(Protocol):
    """Destination of simulated messages."""

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        """Send one message; `ts` is its event time in epoch ms."""

    def idle(self, seconds: float) -> None:
        """Wait while pacing, serving any background work."""

    def close(self) -> None:
        """Deliver everything still buffered; raise if anything was lost."""


class ListSink:
    """Keeps `(topic, key, ts, value)` tuples in memory."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, int, str]] = []

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        """Keep one message (`ts` in epoch ms) in :attr:`messages`."""
        self.messages.append((topic, key, ts, value))

    def idle(self, seconds: float) -> None:
        """Sleep for `seconds`: there is no background work."""
        time.sleep(seconds)

    def close(self) -> None:
        """Nothing to deliver: every message is already in the list."""
        return None


class JsonlSink:
    """One `{"topic","key","ts","value"}` object per line; `value` is the payload text."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._write = stream.write
        self._stream = stream
        self._prefixes: dict[str, bytes] = {}

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        """Write one message as a JSON line (`ts` in epoch ms)."""
        prefix = self._prefixes.get(topic)
        if prefix is None:
            prefix = self._prefixes[topic] = b'{"topic":' + orjson.dumps(topic) + b',"key":'
        self._write(
            prefix + orjson.dumps(key) + b',"ts":%d,"value":' % ts + orjson.dumps(value) + b"}\n"
        )

    def idle(self, seconds: float) -> None:
        """Sleep for `seconds`: there is no background work."""
        time.sleep(seconds)

    def close(self) -> None:
        """Flush the stream (closing it is the caller's)."""
        self._stream.flush()


class KafkaSink:
    """A confluent-kafka producer tuned for throughput, counting failed deliveries."""

    def __init__(
        self,
        bootstrap: str,
        config: dict[str, Any] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        conf = {**PRODUCER_CONFIG, "bootstrap.servers": bootstrap, **(config or {})}
        conf["on_delivery"] = self._on_delivery
        self._producer = Producer(conf)
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        try:
            self._producer.list_topics(timeout=connect_timeout_s)
        except KafkaException as exc:
            raise DeliveryError(
                f"KafkaSink: cannot reach the broker at {bootstrap}: {exc}"
            ) from exc

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < _MAX_ERRORS_SHOWN:
                self.errors.append(f"{msg.topic()}: {err}")

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        """Queue one message for the broker (`ts` in epoch ms), waiting while the local queue
        is full; raises DeliveryError once a delivery has failed (checked every 1024 messages)."""
        while True:
            try:
                self._produce(topic, value, key, timestamp=ts)
                break
            except BufferError:  # the local queue is full: let the broker catch up
                self._poll(0.05)
        self.sent += 1
        if not self.sent & 0x3FF:
            self._poll(0)
            if self.failed:
                raise DeliveryError(f"KafkaSink.write: deliveries failed: {self.errors}")

    def idle(self, seconds: float) -> None:
        """Serve delivery reports, then sleep for `seconds`."""
        # poll() returns early whenever it serves an event, so it cannot be the timer.
        self._poll(0)
        time.sleep(seconds)

    def close(self) -> None:
        """Wait up to `FLUSH_TIMEOUT_S` for every queued message.

        Raises:
            DeliveryError: a message failed, or some were still queued at the timeout.
        """
        try:
            left = self._producer.flush(FLUSH_TIMEOUT_S)
        except KafkaException as exc:
            raise DeliveryError(f"KafkaSink.close: flush failed: {exc}") from exc
        if left or self.failed:
            raise DeliveryError(
                f"KafkaSink.close: {self.failed} of {self.sent} messages failed and {left} were "
                f"still queued after {FLUSH_TIMEOUT_S:.0f} s; first errors: {self.errors}"
            )
