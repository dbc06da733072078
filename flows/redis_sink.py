"""A Bytewax sink that writes feature values to the feature store.

Each worker writes its own batches through one connection, in bounded pipelines. A Redis
outage is retried with backoff inside the store; when it persists the store raises, the
dataflow stops loudly, and recovery resumes it from the last snapshot: no feature is
dropped silently, and replayed writes are harmless because every value is event-time guarded.
"""

from __future__ import annotations

import time

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.metrics import FEATURE_FRESHNESS
from state.feature_store import USER, FeatureWrite, RedisFeatureStore, chunked

PIPELINE_SIZE = 500


class FeatureSink(DynamicSink[FeatureWrite]):
    """Writes `FeatureWrite`s; records event time → Redis freshness for user features."""

    def __init__(self, redis_url: str, pipeline_size: int = PIPELINE_SIZE) -> None:
        self.redis_url = redis_url
        self.pipeline_size = pipeline_size

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FeaturePartition:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        return _FeaturePartition(RedisFeatureStore(client), self.pipeline_size)


class _FeaturePartition(StatelessSinkPartition[FeatureWrite]):
    def __init__(self, store: RedisFeatureStore, pipeline_size: int) -> None:
        self.store = store
        self.pipeline_size = pipeline_size

    def write_batch(self, items: list[FeatureWrite]) -> None:
        # Values are whole and each key's writes arrive in event-time order from one step,
        # so only the last write per key in a batch can matter.
        latest = {(w.kind, w.entity_id): w for w in items}
        for batch in chunked(latest.values(), self.pipeline_size):
            self.store.put_many(batch)
            now_ms = time.time() * 1000
            for w in batch:
                if w.kind == USER:
                    FEATURE_FRESHNESS.observe(max(now_ms - w.ts_ms, 0.0) / 1000)

    def close(self) -> None:
        self.store.client.close()
