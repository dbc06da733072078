"""What a feed request reads from Redis: one pipelined round trip per source.

Serving's request path asks for a user's feature record (with their weekly weights) and for
co-engagement records of the user's recent items; both read GETs in one pipeline, so a
cluster client can split them by slot, and both return payloads with the write stamp
removed (:func:`state.feature_store.unstamp`). Failures are the caller's to handle: the
request client does not retry (see :func:`state.redis_client.request_role`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from state.feature_store import CO_ENGAGEMENT, USER, feature_key, unstamp
from state.redis_client import RedisClient
from state.weights_registry import user_key


class UserRaw(NamedTuple):
    """A user's packed features (stamp removed) and weekly weights, None where absent."""

    features: bytes | None
    weights: bytes | None = None


def _payload(value: object) -> bytes | None:
    found = unstamp(value) if isinstance(value, bytes) else None
    return found[1] if found is not None else None


class RedisUserSource:
    """The user's feature key and weekly weights in one pipelined round trip.

    Args:
        client: the request client.
        weights_version: the weekly-weights version in use (None: no weights read).
    """

    def __init__(self, client: RedisClient, weights_version: Callable[[], str | None]) -> None:
        self._client, self._version = client, weights_version

    def fetch_user(self, user_id: str) -> UserRaw:
        """Both values of one user in one pipelined round trip; raises when Redis fails."""
        pipe = self._client.pipeline(transaction=False)
        pipe.get(feature_key(USER, user_id))
        version = self._version()
        if version is not None:
            pipe.get(user_key(user_id, version))
        replies = pipe.execute()
        weights = replies[1] if len(replies) > 1 and isinstance(replies[1], bytes) else None
        return UserRaw(_payload(replies[0]), weights)


class RedisCoSource:
    """Co-engagement records by item digest in one pipelined round trip."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client

    def fetch(self, digests: Sequence[bytes]) -> list[bytes | None]:
        """Packed records (stamp removed) in order, None where absent; raises when Redis fails."""
        pipe = self._client.pipeline(transaction=False)
        for digest in digests:
            pipe.get(feature_key(CO_ENGAGEMENT, digest.hex()))
        return [_payload(v) for v in pipe.execute()]
