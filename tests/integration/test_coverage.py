"""Catalogue coverage on a real Redis (a single node, and a 3-node Redis Cluster): replicas
note what they serve, each one's refresher adds it to the day's HyperLogLog, and every one
reads back the seven days' distinct count."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from serving.coverage import DAY_MS, ServedItems, day_key
from state.redis_client import RedisClient

pytestmark = [pytest.mark.integration]
NOW = 1_764_892_800_000 + 12 * 3_600_000  # noon UTC


def test_replicas_count_the_distinct_items_of_the_last_seven_days(
    any_redis_client: RedisClient,
) -> None:
    client = any_redis_client
    for n in range(8):
        client.delete(day_key(NOW - n * DAY_MS))
    a, b, old = ServedItems(), ServedItems(), ServedItems()
    old.note(f"gone-{n}" for n in range(3_000))
    old.flush(client, NOW - 7 * DAY_MS)  # eight days back: outside the week
    a.note(f"m{n}" for n in range(1_000))
    a.flush(client, NOW - 2 * DAY_MS)
    b.note(f"m{n}" for n in range(500, 1_500))  # half of them served by the other replica too
    distinct = b.flush(client, NOW)
    assert distinct == pytest.approx(1_500, rel=0.02)
    assert REGISTRY.get_sample_value("feedflow_served_items_distinct_7d") == distinct
    assert 0 < client.ttl(day_key(NOW)) <= 8 * 86_400
    assert a.flush(client, NOW) == distinct  # nothing new: the same count


def test_ids_noted_while_redis_fails_wait_for_the_next_round(
    any_redis_client: RedisClient,
) -> None:
    class Failing:
        def pipeline(self, transaction: bool = False) -> object:
            raise ConnectionError("redis down")

    client = any_redis_client
    client.delete(*(day_key(NOW - n * DAY_MS) for n in range(7)))
    served = ServedItems()
    served.note(["x1", "x2", "x3"])
    with pytest.raises(ConnectionError):
        served.flush(Failing(), NOW)
    assert served.flush(client, NOW) == 3
