"""The one way Feedflow opens a Redis client: timeouts and retries by the caller's role.

Every process gets its clients here, so TLS (a `rediss://` URL), credentials in the URL and
the time a caller waits are decided in one place (and a cluster client would be added here):

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

from typing import Any, Final, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


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


def connect(url: str, role: Role = FLOW) -> redis.Redis:
    """A client for `url` (redis:// or rediss://, credentials in the URL) in `role`."""
    options: dict[str, Any] = {
        "socket_timeout": role.timeout_s,
        "socket_connect_timeout": role.connect_timeout_s,
    }
    if not role.retries:
        options["retry"] = Retry(NoBackoff(), 0)
    if role.max_connections is not None:
        options["max_connections"] = role.max_connections
    return redis.Redis.from_url(url, **options)
