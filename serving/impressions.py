"""Every served feed to `feed.impressions`, off the request path.

The request thread calls :meth:`ImpressionPublisher.publish` with a :class:`Served` record
(the response's items plus the feature rows they were ranked with): a length check and a
deque append, nothing else — no encoding, no I/O, no lock. A daemon thread builds the
contract records (:func:`impression_of`), encodes them and hands them to a confluent-kafka
producer, in small batches so it never holds the interpreter for long.

A broker outage never reaches a feed. The producer keeps undelivered impressions and retries
them until the broker is back (no message timeout), up to `impressions_buffer` of them; when
its queue is full the thread waits, and once the hand-off queue is full too, new impressions
are dropped: counted on `feedflow_impressions_total{outcome="overflow"}` and logged as an
error (at most every :data:`LOG_EVERY_S`), never silently. What the broker refuses for good is
counted as `failed`; what is still unsent when the process stops, as `unsent_at_stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, Message, Producer

from kernel.metrics import IMPRESSIONS, IMPRESSIONS_QUEUED
from kernel.settings import Settings
from operators.contracts import TOPIC_IMPRESSIONS, Impression, ImpressionItem, encode

log = logging.getLogger(__name__)

HANDOFF_CAPACITY: Final = 1024  # served feeds waiting for the publisher thread
BATCH: Final = 2  # encoded per turn (~0.1 ms holding the GIL), then the thread lets go
IDLE_POLL_S: Final = 0.05
STOP_FLUSH_S: Final = 3.0
LOG_EVERY_S: Final = 10.0
FEATURE_DECIMALS: Final = 6  # features are float32 in [-1, 1]-ish: 6 decimals lose nothing
_DOWN: Final = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


class Served(NamedTuple):
    """One served feed, as the request thread hands it over (cheap to build)."""

    request_id: str
    user_id: str
    ts: int
    arm: str
    model_version: str
    index_version: str
    items: list[dict[str, Any]]  # the response's items, in page order
    features: npt.NDArray[np.float32] | None  # one ranking row per item; None: unranked


def impression_of(served: Served) -> Impression:
    """The `feed.impressions` record of a served feed (positions count from 0).

    Example:
        >>> items = [{"media_id": "m1", "score": 1.5, "source": "ann"}]
        >>> rows = np.asarray([[0.25, 1 / 3]], dtype=np.float32)
        >>> imp = impression_of(Served("r1", "u1", 7, "default", "v1", "i1", items, rows))
        >>> imp.items[0].position, imp.items[0].features
        (0, [0.25, 0.333333])
    """
    rows: list[list[float]] = []
    if served.features is not None and len(served.features) == len(served.items):
        rounded = np.round(served.features.astype(np.float64), FEATURE_DECIMALS)
        rows = rounded.tolist()
    items = [
        ImpressionItem(
            media_id=item["media_id"],
            position=n,
            score=item["score"],
            source=item["source"],
            features=rows[n] if rows else [],
        )
        for n, item in enumerate(served.items)
    ]
    return Impression(
        request_id=served.request_id,
        user_id=served.user_id,
        ts=served.ts,
        arm=served.arm,
        model_version=served.model_version,
        index_version=served.index_version,
        items=items,
    )


class ImpressionSink(Protocol):
    """Where the feed service hands served feeds."""

    def publish(self, served: Served) -> None:
        """Take one served feed; never blocks, never raises."""

    def start(self) -> None:
        """Start publishing (the app's lifespan, at start-up)."""
        ...

    def stop(self) -> None:
        """Stop publishing, delivering what can still be delivered."""
        ...

    def status(self) -> dict[str, Any]:
        """For /readyz: enabled, queued, dropped, broker reachable."""
        ...


class NoImpressions:
    """Impressions switched off (no broker configured): says so, publishes nothing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def publish(self, served: Served) -> None:
        """Drop the served feed: impressions are off."""
        del served

    def start(self) -> None:
        """Nothing to start; logs a warning that impressions are off."""
        log.warning("impressions are off: %s", self.reason)

    def stop(self) -> None:
        """Nothing to stop."""
        pass

    def status(self) -> dict[str, Any]:
        """For /readyz: not enabled, and why."""
        return {"enabled": False, "reason": self.reason}


class ProducerLike(Protocol):
    """The part of confluent-kafka's Producer the publisher uses (fakes in tests)."""

    def produce(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """confluent-kafka: queue one message; raises BufferError when its queue is full."""
        ...

    def poll(self, timeout: float) -> int:
        """confluent-kafka: serve delivery callbacks, waiting up to `timeout` seconds."""
        ...

    def flush(self, timeout: float) -> int:
        """confluent-kafka: deliver what is queued within `timeout` seconds; how many are left."""
        ...

    def __len__(self) -> int: ...


class ImpressionPublisher:
    """A bounded hand-off queue and a thread that feeds a Kafka producer."""

    def __init__(
        self,
        producer: ProducerLike,
        topic: str = TOPIC_IMPRESSIONS,
        capacity: int = HANDOFF_CAPACITY,
        idle_poll_s: float = IDLE_POLL_S,
    ) -> None:
        self.producer, self.topic, self.capacity = producer, topic, capacity
        self.idle_poll_s = idle_poll_s
        self.broker_reachable = True
        self.dropped = 0
        self._queue: deque[Served] = deque()
        self._overflow = IMPRESSIONS.labels(outcome="overflow")
        self._pending: tuple[bytes, bytes] | None = None  # refused by a full producer queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_drops, self._logged_at = 0, -LOG_EVERY_S
        self._failures_logged_at = -LOG_EVERY_S

    def publish(self, served: Served) -> None:
        """Queue one served feed (the request path: O(1), never blocks, never raises)."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1  # racy across request threads: only for the log line
            self._overflow.inc()
            return
        self._queue.append(served)

    def start(self) -> None:
        """Start the publisher thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
            self._thread.start()
            log.info("publishing served feeds to %s", self.topic)

    def stop(self, flush_s: float = STOP_FLUSH_S) -> None:
        """Stop the thread, deliver what can be delivered within `flush_s`, count the rest."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(flush_s)
        # A thread still inside the producer owns it: never use it from two threads.
        while not (self._thread and self._thread.is_alive()) and self.pump(len(self._queue) + 1):
            pass
        unsent = self.producer.flush(flush_s) + len(self._queue) + (self._pending is not None)
        if unsent:
            IMPRESSIONS.labels(outcome="unsent_at_stop").inc(unsent)
            log.error("%d impressions not delivered to %s at stop (lost)", unsent, self.topic)
        self._report_drops(force=True)

    def status(self) -> dict[str, Any]:
        """For /readyz: topic, impressions queued (hand-off and producer), dropped, broker
        reachable."""
        return {
            "enabled": True,
            "topic": self.topic,
            "queued": len(self._queue) + len(self.producer),
            "dropped": self.dropped,
            "broker_reachable": self.broker_reachable,
        }

    def pump(self, max_items: int = BATCH) -> int:
        """Move up to `max_items` impressions into the producer; how many moved.

        Stops early when the producer's queue is full: the refused one waits for the next
        turn, and the hand-off queue fills behind it.
        """
        moved = 0
        while moved < max_items:
            if self._pending is None:
                if not self._queue:
                    break
                self._pending = self._encode(self._queue.popleft())
                if self._pending is None:
                    continue
            key, value = self._pending
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=self._done)
            except BufferError:
                break
            self._pending = None
            moved += 1
        return moved

    def _encode(self, served: Served) -> tuple[bytes, bytes] | None:
        try:
            return served.user_id.encode(), encode(impression_of(served))
        except Exception:  # a bug, not an outage: count it, keep publishing the others
            log.exception("impression of request %s could not be encoded", served.request_id)
            IMPRESSIONS.labels(outcome="invalid").inc()
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pump()
            # Waiting inside poll lets go of the GIL, so request threads never wait on this
            # one for longer than a batch; a full producer queue waits a whole idle period.
            busy = self._queue and self._pending is None
            self.producer.poll(0.0002 if busy else self.idle_poll_s)
            IMPRESSIONS_QUEUED.set(len(self._queue) + len(self.producer))
            self._report_drops()

    def _done(self, err: KafkaError | None, msg: Message) -> None:
        del msg
        if err is None:
            self.broker_reachable = True
            IMPRESSIONS.labels(outcome="delivered").inc()
            return
        IMPRESSIONS.labels(outcome="failed").inc()
        now = time.monotonic()
        if now - self._failures_logged_at >= LOG_EVERY_S:
            self._failures_logged_at = now
            log.error("the broker refused an impression for %s (dropped): %s", self.topic, err)

    def on_error(self, err: KafkaError) -> None:
        """The producer's error callback (librdkafka): notes an outage (it retries by itself)."""
        if err.code() in _DOWN:
            if self.broker_reachable:
                log.warning("impressions: broker unreachable, buffering (%s)", err)
            self.broker_reachable = False

    def _report_drops(self, force: bool = False) -> None:
        dropped, now = self.dropped, time.monotonic()
        if dropped > self._logged_drops and (force or now - self._logged_at >= LOG_EVERY_S):
            log.error(
                "impressions: dropped %d served feeds (%d in all): the buffer is full, is "
                "the broker at %s down? Feeds are unaffected.",
                dropped - self._logged_drops, dropped, self.topic,
            )  # fmt: skip
            self._logged_drops, self._logged_at = dropped, now


def producer_config(settings: Settings) -> dict[str, Any]:
    """Producer settings for impressions: durable, batched, retrying until the broker is back.

    `message.timeout.ms` 0 keeps an impression until it is delivered; the queue bound
    (`impressions_buffer`) is what limits an outage's memory.
    """
    return settings.kafka(**{
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 50,
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": settings.impressions_buffer,
        "queue.buffering.max.kbytes": 64 * 1024,
        "reconnect.backoff.max.ms": 5000,
        "logger": logging.getLogger("serving.impressions.kafka"),
    })  # fmt: skip


def impression_sink(settings: Settings) -> ImpressionSink:
    """The publisher for `settings`, or :class:`NoImpressions` when no broker is set."""
    if not settings.kafka_bootstrap_servers:
        return NoImpressions("KAFKA_BOOTSTRAP_SERVERS is not set")
    publisher: ImpressionPublisher | None = None

    def on_error(err: KafkaError) -> None:  # librdkafka may call it before the line below ends
        if publisher is not None:
            publisher.on_error(err)

    publisher = ImpressionPublisher(Producer({**producer_config(settings), "error_cb": on_error}))
    return publisher
