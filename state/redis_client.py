"""The one way Feedflow opens a Redis client: timeouts and retries by the caller's role.

Every process gets its clients here, so TLS (a `rediss://` URL), credentials in the URL and
the time a caller waits are decided in one place. A `redis+cluster://` (or
`rediss+cluster://`) URL names any node of a Redis Cluster and gets the cluster client, which
follows slot redirects; Feedflow's keys carry hash tags, so every transaction and script
touches one slot, and :func:`mget` splits a multi-key read by slot (one pipelined round trip
per node, not per key). Roles:

- :data:`FLOW` — dataflows and their sinks: 5 s, the library's retries (the sinks add
  their own bounded retry and then fail the flow loudly);
- :data:`JOB` — commands and weekly jobs: 30 s per call;
- :data:`INDEX_WRITER` — the content flow's index writes: 10 s (its pipelines are large);
- :data:`BACKGROUND` — serving's refresher: 2 s, no retries (the next round tries again);
  :data:`LOG_READER` — serving's index-log reader: 5 s, no retries;
- :func:`request_role` — the request path: the configured budget, no retries (the
  degradation ladder handles a miss).

Example:
    >>> client = connect("redis://127.0.0.1:1/0", FLOW)
    >>> client.connection_pool.connection_kwargs["socket_timeout"]
    5.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

RedisClient: TypeAlias = redis.Redis | RedisCluster
"""What :func:`connect` returns: a single server's client or a cluster's (same commands)."""

CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class Role(NamedTuple):
    """How long a caller waits for Redis, and whether the client retries by itself."""

    timeout_s: float
    connect_timeout_s: float
    retries: bool = True
    max_connections: int | None = None


FLOW: Final = Role(5.0, 5.0)
JOB: Final = Role(30.0, 5.0)
BACKGROUND: Final = Role(2.0, 1.0, retries=False)
LOG_READER: Final = Role(5.0, 1.0, retries=False)
INDEX_WRITER: Final = Role(10.0, 5.0)  # the content flow's index pipelines are the largest


def request_role(timeout_ms: int, max_connections: int = 32) -> Role:
    """The request path's role: `timeout_ms` for connect and reply, no retries."""
    return Role(
        timeout_ms / 1000, timeout_ms / 1000, retries=False, max_connections=max_connections
    )


def is_cluster_url(url: str) -> bool:
    """True when `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`).

    Example:
        >>> is_cluster_url("redis+cluster://127.0.0.1:7000"), is_cluster_url("redis://h:1/0")
        (True, False)
    """
    return url.partition("://")[0] in CLUSTER_SCHEMES


def connect(url: str, role: Role = FLOW) -> RedisClient:
    """A client for `url` in `role`: redis:// or rediss:// (credentials in the URL), or a
    cluster's `redis+cluster://` / `rediss+cluster://` (any node; the rest are discovered).
    """
    options: dict[str, Any] = {
        "socket_timeout": role.timeout_s,
        "socket_connect_timeout": role.connect_timeout_s,
    }
    if not role.retries:
        options["retry"] = Retry(NoBackoff(), 0)
    if role.max_connections is not None:
        options["max_connections"] = role.max_connections  # per node on a cluster
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)
    return redis.Redis.from_url(url, **options)


def mget(client: RedisClient, keys: Sequence[str | bytes]) -> list[bytes | None]:
    """The values of `keys` in their order: one MGET, or on a cluster one per slot,
    pipelined so that each node is asked once.
    """
    if isinstance(client, RedisCluster):
        return list(client.mget_nonatomic(keys))
    return list(client.mget(keys))  # type: ignore[arg-type]


def nodes(client: RedisClient) -> list[redis.Redis]:
    """A client per primary (a single server's client is its own only node): for commands
    that act on one server's keyspace (FLUSHDB, INFO, DBSIZE).
    """
    if isinstance(client, RedisCluster):
        primaries = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(n) for n in primaries]
    return [client]
