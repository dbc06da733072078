"""Event → feature freshness probes: produce a probe event, time it into Redis and a consumer.

A probe is a `media_liked` with ts = now for a dedicated probe user: new explicit feedback
makes the user logic emit the user's feature record at once, stamped with the probe's ts.
A like is also a positive engagement: the liked item's co-engagement record gains a link
to the item the same probe user liked before, and the probe times that too (event →
neighbour list in Redis: the record stamped at least the probe's ts *and* listing that
item). Every probe user walks its own slice of the catalogue, so no other probe makes the
same pair; a user's first probe has no earlier item and is not timed for co-engagement.
Probes go out on a fixed schedule (every `interval_s`, whether or not earlier ones have
landed); one loop sends them and polls Redis for all outstanding probes in one `MGET` per
millisecond. A bare consumer on the topic's tail notes when each probe is fetched, which is
the broker round trip the flow cannot beat (polled like the flow's Kafka source: batches
of up to 1000 with a 1 ms timeout, the flows' consumer settings).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from feedflow.bench.flow_harness import engagement_payload
from flows.kafka_in import CONSUMER_CONFIG
from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent, decode_engagement
from operators.dedup import id_hash64
from operators.feature_codecs import decode_co_record
from state.feature_store import CO_ENGAGEMENT, USER, feature_key, unstamp
from state.redis_client import JOB, connect

PROBE = "bench-probe-"


@dataclass
class Probe:
    """One probe and when it was sent, seen by the consumer and visible in Redis (wall s)."""

    event_id: str
    key: str
    ts: int
    sent: float
    co_key: str = ""  # "" when the probe's user liked nothing before (not timed)
    prior: str = ""
    fetched: float | None = None
    visible: float | None = None
    co_visible: float | None = None

    def flow_ms(self) -> float | None:
        """Milliseconds from sending to the user's features in Redis; None if never seen."""
        return None if self.visible is None else (self.visible - self.sent) * 1000

    def co_ms(self) -> float | None:
        """Milliseconds from sending to the co-engagement link in Redis; None if never seen."""
        return None if self.co_visible is None else (self.co_visible - self.sent) * 1000

    def broker_ms(self) -> float | None:
        """Milliseconds from sending to the bare consumer's fetch; None if never fetched."""
        return None if self.fetched is None else (self.fetched - self.sent) * 1000


class ProbeWatcher:
    """A bare consumer on the tail of the topic noting when each probe is fetched."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                **CONSUMER_CONFIG,  # the flows' consumer settings: the same fetch behaviour
            }
        )
        where = [TopicPartition(TOPIC_ENGAGEMENT, p, OFFSET_END) for p in range(partitions)]
        self._consumer.assign(where)
        self.seen: dict[str, float] = {}
        self.background = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        prefix, seen, consume = PROBE.encode(), self.seen, self._consumer.consume
        while not self._stop.is_set():
            msgs = consume(1000, 0.001)  # as the flow's Kafka source polls
            now = time.time()
            for msg in msgs:
                key = msg.key()
                if msg.error() is None and key is not None and key.startswith(prefix):
                    event = decode_engagement(msg.value() or b"")
                    if isinstance(event, EngagementEvent):
                        seen.setdefault(event.event_id, now)
                else:
                    self.background += 1

    def close(self) -> None:
        """Stop the watcher thread (waits up to 5 s) and close the consumer."""
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _at_least(raw: object, ts: int) -> bool:
    stored = unstamp(raw) if isinstance(raw, bytes) else None
    return stored is not None and stored[0] >= ts


def _links(raw: object, probe: Probe) -> bool:
    if not _at_least(raw, probe.ts):
        return False
    stored = unstamp(raw)  # type: ignore[arg-type]
    assert stored is not None
    return any(m == probe.prior for m, _ in decode_co_record(stored[1]).neighbours)


class Prober:
    """Sends probes on a schedule and times each into Redis and into the bare consumer.

    Args:
        bootstrap, redis_url, partitions: the stack.
        media: catalogue ids the probes like (each (user, item) pair is used once, so the
            like is always new feedback).
        interval_s: time between probes.
        timeout_s: a probe not visible by then counts as a timeout.
    """

    def __init__(
        self,
        bootstrap: str,
        redis_url: str,
        partitions: int,
        media: list[str],
        interval_s: float = 0.05,
        timeout_s: float = 5.0,
    ) -> None:
        self.media, self.interval_s, self.timeout_s = media, interval_s, timeout_s
        self.client = connect(redis_url, JOB)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
        self.watcher = ProbeWatcher(bootstrap, partitions)
        # A user is reused only after its previous probe has landed or timed out.
        self.users = math.ceil(timeout_s / interval_s) + 8
        self.n = self.last_ts = 0

    def _send(self) -> Probe:
        i = self.n
        self.n += 1
        k = i % self.users
        user = f"{PROBE}{k}"
        media = self.media[self._slice(k, i // self.users)]
        prior = self.media[self._slice(k, i // self.users - 1)] if i >= self.users else ""
        ts = self.last_ts = max(time.time_ns() // 1_000_000, self.last_ts + 1)
        co_key = feature_key(CO_ENGAGEMENT, id_hash64(media).hex()) if prior else ""
        probe = Probe(f"{PROBE}{uuid.uuid4().hex}", feature_key(USER, user), ts, time.time(),
                      co_key, prior)  # fmt: skip
        payload = engagement_payload(probe.event_id, user, media, ts)
        self.producer.produce(TOPIC_ENGAGEMENT, payload, user)
        self.producer.poll(0)
        return probe

    def _slice(self, user: int, n: int) -> int:
        """The `n`-th catalogue position of a probe user's own slice."""
        per_user = max(len(self.media) // self.users, 2)
        return (user * per_user + n % per_user) % len(self.media)

    def _land(self, pending: list[Probe]) -> list[Probe]:
        """Mark probes visible in Redis (features and co-engagement record); return those
        still outstanding."""
        pipe = self.client.pipeline(transaction=False)
        for p in pending:
            pipe.get(p.key)
            pipe.get(p.co_key or p.key)
        values = pipe.execute()
        now, left = time.time(), []
        for n, probe in enumerate(pending):
            if probe.visible is None and _at_least(values[2 * n], probe.ts):
                probe.visible = now
            if probe.co_key and probe.co_visible is None and _links(values[2 * n + 1], probe):
                probe.co_visible = now
            landed = probe.visible is not None and (
                probe.co_visible is not None or not probe.co_key
            )
            if not landed and now - probe.sent <= self.timeout_s:
                left.append(probe)
        return left

    def run(self, count: int) -> list[Probe]:
        """Send `count` probes every `interval_s`; return them once each landed or timed out."""
        probes: list[Probe] = []
        pending: list[Probe] = []
        next_send = time.perf_counter()
        while len(probes) < count or pending:
            if len(probes) < count and time.perf_counter() >= next_send:
                probes.append(self._send())
                pending.append(probes[-1])
                next_send += self.interval_s
            if pending:
                pending = self._land(pending)
            time.sleep(0.001)
        deadline = time.perf_counter() + self.timeout_s
        while time.perf_counter() < deadline and any(p.event_id not in self.watcher.seen
                                                      for p in probes):  # fmt: skip
            time.sleep(0.01)
        for p in probes:
            p.fetched = self.watcher.seen.get(p.event_id)
        return probes

    def close(self) -> None:
        """Close the watcher, flush the producer (up to 5 s) and close the Redis client."""
        self.watcher.close()
        self.producer.flush(5)
        self.client.close()
