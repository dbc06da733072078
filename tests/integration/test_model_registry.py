"""One contract suite for the ranker registry, run against the in-memory twin and real Redis;
and serving's refresher hot-loading what it publishes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from operators.online_ranker import ModelVersion
from operators.ranking_contract import default_model, parse_model
from serving.caches import FreshItems, ItemStatsCache, SideVectors, TrendingCache
from serving.catalogue import MemoryCatalogue
from serving.feed import ModelHolder
from serving.item_table import ItemTable
from serving.refresher import Refresher
from state.model_registry import MemoryModelRegistry, ModelRegistry, RedisModelRegistry
from state.redis_client import JOB, RedisClient, connect
from tests.conftest import BACKENDS, emptied_redis_url


def version(n: int, bias: float = 0.0) -> ModelVersion:
    return ModelVersion(version=f"online-{n:06d}", seq=n, ts=n * 1000, examples=10 * n,
                        weights={"similarity": float(n), "trending": -0.5}, bias=bias)  # fmt: skip


@pytest.fixture(
    params=["memory", *(pytest.param(b, marks=pytest.mark.integration) for b in BACKENDS)]
)
def registry(request: pytest.FixtureRequest) -> Iterator[ModelRegistry]:
    if request.param == "memory":
        yield MemoryModelRegistry(keep=3)
        return
    client = connect(emptied_redis_url(request, request.param), JOB)
    yield RedisModelRegistry(client, keep=3)
    client.close()


def test_nothing_is_active_before_the_first_version(registry: ModelRegistry) -> None:
    assert registry.active() is None and registry.versions() == []
    assert registry.get("online-000001") is None


def test_a_published_version_is_active_and_parses_as_serving_reads_it(
    registry: ModelRegistry,
) -> None:
    registry.publish(version(1, bias=0.25))
    assert registry.active() == "online-000001"
    model = parse_model(registry.get("online-000001") or b"")
    assert (model.version, float(model.bias), float(model.vector[0])) == (
        "online-000001",
        0.25,
        1.0,
    )


def test_only_the_newest_versions_are_kept(registry: ModelRegistry) -> None:
    for n in range(1, 6):
        registry.publish(version(n))
    assert registry.versions() == ["online-000003", "online-000004", "online-000005"]
    assert registry.get("online-000002") is None
    assert registry.active() == "online-000005"


def test_publishing_a_version_again_changes_nothing(registry: ModelRegistry) -> None:
    registry.publish(version(1))
    registry.publish(version(2))
    before = (registry.active(), registry.versions(), registry.get("online-000002"))
    registry.publish(version(2))  # the replayed epoch after a crash
    assert (registry.active(), registry.versions(), registry.get("online-000002")) == before


def serving_ranker(client: RedisClient) -> tuple[Refresher, ModelHolder]:
    """A serving process's refresher (empty catalogue) and the ranker it keeps current."""
    table, models = ItemTable(), ModelHolder(default_model())
    refresher = Refresher(
        client, MemoryCatalogue(dim=2), ItemStatsCache(table, 30.0), TrendingCache(),
        FreshItems(86_400_000.0), models, SideVectors(), table,
    )  # fmt: skip
    return refresher, models


@pytest.mark.integration
def test_serving_hot_loads_each_published_version(any_redis_client: RedisClient) -> None:
    refresher, models = serving_ranker(any_redis_client)
    registry = RedisModelRegistry(any_redis_client)
    for n in (1, 2):
        before = time.time()
        registry.publish(version(n))
        refresher.refresh()
        assert refresher.redis_ok
        assert models.model.version == f"online-{n:06d}"
        assert float(models.model.vector[0]) == float(n)
        loaded = REGISTRY.get_sample_value("feedflow_ranker_loaded_timestamp_seconds")
        assert loaded is not None and before <= loaded <= time.time()  # for RankerStale
