"""A Bytewax sink that writes feature values to the feature store.

Each worker writes its own batches through one connection, in bounded pipelines. A Redis
outage is retried with backoff inside the store; when it persists the store raises, the
dataflow stops loudly, and recovery resumes it from the last snapshot: no feature is
dropped silently, and replayed writes are harmless because every value is event-time guarded.

An erased user's features are deleted in the same ordered stream (:class:`FeatureErase`), and
a flow's acknowledgements of erasure requests (:class:`ErasureAck`) are written after the
batch's changes, so an acknowledged erasure has already been applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from kernel.metrics import FEATURE_FRESHNESS
from state.erasure_log import ErasureLog
from state.feature_store import (
    LAST_WRITE_KEY,
    USER,
    Change,
    FeatureErase,
    FeatureWrite,
    RedisFeatureStore,
    chunked,
    retry,
)
from state.redis_client import FLOW, connect

PIPELINE_SIZE = 500
MARK_EVERY_S = 1.0  # how often a worker notes the time of its newest write (LAST_WRITE_KEY)


@dataclass(frozen=True, slots=True)
class ErasureAck:
    """`flow` has dropped the state of the user of `request_id`."""

    request_id: str
    flow: str


Output = Change | ErasureAck


class FeatureSink(DynamicSink[Output]):
    """Writes feature changes and erasure acks; records event time → Redis freshness for
    user features."""

    def __init__(self, redis_url: str, pipeline_size: int = PIPELINE_SIZE) -> None:
        self.redis_url = redis_url
        self.pipeline_size = pipeline_size

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FeaturePartition:
        """Bytewax: the partition of a worker (one Redis connection each)."""
        client = connect(self.redis_url, FLOW)
        return _FeaturePartition(RedisFeatureStore(client), self.pipeline_size)


class _FeaturePartition(StatelessSinkPartition[Output]):
    def __init__(self, store: RedisFeatureStore, pipeline_size: int) -> None:
        self.store = store
        self.pipeline_size = pipeline_size
        self.erasures = ErasureLog(store.client)
        self._marked = 0.0  # when this worker last noted its newest write (monotonic s)

    def write_batch(self, items: list[Output]) -> None:
        # Values are whole and each key's changes arrive in event-time order from one step,
        # so only the last change per key can matter — except a write after an erasure of
        # its key: the new history's first record may be stamped older than what the erasure
        # deletes, so the erasure is written first, never coalesced away.
        latest: dict[tuple[str, str], Change] = {}
        for w in items:
            if isinstance(w, ErasureAck):
                continue
            key = (w.kind, w.entity_id)
            if isinstance(latest.get(key), FeatureErase) and isinstance(w, FeatureWrite):
                self._put(list(latest.values()))
                latest = {}
            latest[key] = w
        self._put(list(latest.values()))
        if latest and time.monotonic() - self._marked >= MARK_EVERY_S:
            self._marked = time.monotonic()
            client, now_ms = self.store.client, int(time.time() * 1000)
            retry(lambda: client.set(LAST_WRITE_KEY, now_ms), self.store.attempts,
                  self.store.backoff_s, "redis")  # fmt: skip
        acks = [x for x in items if isinstance(x, ErasureAck)]
        if acks:
            retry(lambda: self._ack(acks), self.store.attempts, self.store.backoff_s, "redis")

    def _put(self, changes: list[Change]) -> None:
        for batch in chunked(changes, self.pipeline_size):
            self.store.put_many(batch)
            now_ms = time.time() * 1000
            for w in batch:
                if w.kind == USER and isinstance(w, FeatureWrite):
                    FEATURE_FRESHNESS.observe(max(now_ms - w.ts_ms, 0.0) / 1000)

    def _ack(self, acks: list[ErasureAck]) -> None:
        done_ms = int(time.time() * 1000)
        for ack in acks:
            self.erasures.ack(ack.request_id, ack.flow, done_ms)

    def close(self) -> None:
        self.store.client.close()
