"""Shared fixtures. Integration tests run against a real Tansu broker and a real
redis-server, started once per session by the same code as `feedflow stack up`, on their own
free loopback ports (never a server that happens to run on a standard port).

`any_redis_url` / `any_redis_client` run a test twice: on the single server and on a real
3-node Redis Cluster (`feedflow stack up --redis-cluster`), started at the first such test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feedflow.stack import LocalStack, StackInfo
from state.redis_client import JOB, RedisClient, connect, nodes

_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A live broker + Redis for the whole session; topics have 4 partitions."""
    local = LocalStack(Path(tmp_path_factory.mktemp("stack")), partitions=4, redis_url=None)
    info = local.up()
    try:
        yield info
    finally:
        local.down()


@pytest.fixture(scope="session")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A broker + a 3-node Redis Cluster for the session, started when first asked for."""
    local = LocalStack(Path(tmp_path_factory.mktemp("cluster")), partitions=4, redis_cluster=True)
    info = local.up()
    try:
        yield info
    finally:
        local.down(timeout_s=2.0)


BACKENDS = ("single", "cluster")


def emptied_redis_url(request: pytest.FixtureRequest, backend: str) -> str:
    """An emptied Redis of `backend`: the single server (a database of its own) or the
    session's cluster (every primary flushed)."""
    if backend == "single":
        return str(request.getfixturevalue("redis_url"))
    url = str(request.getfixturevalue("cluster_stack").redis_url)
    client = connect(url, JOB)
    for node in nodes(client):
        node.flushall()
    client.close()
    return url


@pytest.fixture(params=BACKENDS)
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """An emptied Redis: the single server, then the cluster (the test runs twice)."""
    return emptied_redis_url(request, request.param)


@pytest.fixture
def any_redis_client(any_redis_url: str) -> Iterator[RedisClient]:
    client = connect(any_redis_url, JOB)
    yield client
    client.close()


@pytest.fixture
def redis_url(stack: StackInfo) -> Iterator[str]:
    """A Redis URL on a database of its own, emptied before the test.

    Databases 1-15 rotate, so tests never see each other's keys.
    """
    db = next(_db_numbers) % 15 + 1
    url = stack.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
