"""A Bytewax sink that publishes ranker versions to the model registry in Redis.

Publishing is a full value per version plus a pointer move, so the versions an epoch
replayed after a crash publish again harmlessly. A Redis outage is retried inside the
registry; when it persists the registry raises and the dataflow stops loudly.
"""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from kernel.metrics import RANKER_VERSIONS
from operators.online_ranker import ModelVersion
from state.model_registry import RedisModelRegistry
from state.redis_client import FLOW, RedisClient, connect

log = logging.getLogger(__name__)


class ModelSink(DynamicSink[ModelVersion]):
    """Publishes each :class:`ModelVersion` and makes it the active ranker."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ModelPartition:
        """Bytewax: the partition of a worker (one registry client each)."""
        client = connect(self.redis_url, FLOW)
        return _ModelPartition(client)


class _ModelPartition(StatelessSinkPartition[ModelVersion]):
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.registry = RedisModelRegistry(client)

    def write_batch(self, items: list[ModelVersion]) -> None:
        for model in items:
            self.registry.publish(model)
            RANKER_VERSIONS.inc()
            log.info("ranker %s published (%d examples)", model.version, model.examples)

    def close(self) -> None:
        self.client.close()
