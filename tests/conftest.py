"""Shared fixtures. Integration tests run against a real Tansu broker and a real
redis-server, started once per session by the same code as `feedflow stack up`, on their own
free loopback ports (never a server that happens to run on a standard port)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feedflow.stack import LocalStack, StackInfo

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
