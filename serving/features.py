"""User features for a request: one pipelined Redis round trip, bounded by a short timeout.

The same round trip reads the user's weekly weights of the active version
(:mod:`serving.weekly`), a second key in the user's hash slot.

When Redis is slow or down, the request does not wait: it answers from the last features
this process saw for the user, kept in a bounded LRU cache. `trip_after` failures in a row
open a breaker for `retry_s` (no request tries Redis meanwhile; one probe when it expires),
so an outage costs a few requests one timeout each, while one slow answer opens nothing.
The caller learns which rung answered from :attr:`Fetched.status`.

Example:
    >>> from operators.user_features import UserFeatures, encode_user_features
    >>> store = {"u1": encode_user_features(UserFeatures(engagements=7))}
    >>> fetcher = FeatureFetcher(MemoryUserSource(store), cache_users=10, retry_s=1.0)
    >>> got = fetcher.get("u1")
    >>> got.status, got.features.engagements, fetcher.get("nobody").features
    ('ok', 7, None)
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec
import redis

from operators.user_features import UserFeatures, decode_user_features
from operators.weekly_weights import UserWeights, decode_weights
from state.feature_store import StoreUnavailableError
from state.request_reads import UserRaw

log = logging.getLogger(__name__)

OK: Final = "ok"  # read from Redis (features may still be None: an unknown user)
CACHED: Final = "cached"  # Redis failed; the last features seen by this process
MISSING: Final = "missing"  # Redis failed and this process never saw the user
_FAILURES = (redis.RedisError, OSError, StoreUnavailableError)


class UserSource(Protocol):
    """Where a request reads one user's packed features and weekly weights."""

    def fetch_user(self, user_id: str) -> UserRaw:
        """Both values of one user; raises when unreachable."""
        ...


class MemoryUserSource:
    """Mappings of user id → packed features (and weights), for tests; `down` makes it fail."""

    def __init__(
        self, values: Mapping[str, bytes], weights: Mapping[str, bytes] | None = None
    ) -> None:
        self.values, self.down = values, False
        self.weights: Mapping[str, bytes] = weights if weights is not None else {}

    def fetch(self, user_id: str) -> bytes | None:
        """The packed features of one user (None if absent); raises ConnectionError when `down`."""
        if self.down:
            raise redis.ConnectionError("memory source is down")
        return self.values.get(user_id)

    def fetch_user(self, user_id: str) -> UserRaw:
        """Both values of one user; raises ConnectionError when `down`."""
        return UserRaw(self.fetch(user_id), self.weights.get(user_id))


@dataclass(frozen=True, slots=True)
class Fetched:
    """A user's features, the rung that produced them (OK, CACHED or MISSING), and weights."""

    features: UserFeatures | None
    status: str
    weights: UserWeights | None = None


class FeatureFetcher:
    """User features with a breaker and a last-known cache (see module doc)."""

    def __init__(
        self,
        source: UserSource,
        cache_users: int,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
        trip_after: int = 3,
    ) -> None:
        self._source, self._cache_users, self._retry_s = source, cache_users, retry_s
        self._clock, self._trip_after = clock, trip_after
        self._failures = 0
        self._cache: OrderedDict[str, tuple[UserFeatures | None, UserWeights | None]] = (
            OrderedDict()
        )
        self._open_until = 0.0
        self.last_error = ""

    @property
    def healthy(self) -> bool:
        """False while the breaker is open or after a failure."""
        return self._clock() >= self._open_until and self._failures == 0

    def get(self, user_id: str) -> Fetched:
        """The user's features from Redis, else from the cache (see module doc)."""
        if self._clock() < self._open_until:
            return self._cached(user_id)
        try:
            raw = self._source.fetch_user(user_id)
        except _FAILURES as exc:
            self._failures += 1
            if self._failures >= self._trip_after:
                self._open_until = self._clock() + self._retry_s
            if self.last_error != str(exc):
                log.warning("user features unavailable, serving cached: %s", exc)
            self.last_error = str(exc)
            return self._cached(user_id)
        self.last_error, self._failures = "", 0
        features = self._decode(user_id, raw.features)
        weights = self._weights(raw.weights)
        self._remember(user_id, features, weights)
        return Fetched(features, OK, weights)

    def _decode(self, user_id: str, raw: bytes | None) -> UserFeatures | None:
        if raw is None:
            return None
        try:
            return decode_user_features(raw)
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("unreadable features of one user (%d bytes): %s", len(raw), exc)
            return None

    def _weights(self, raw: bytes | None) -> UserWeights | None:
        if raw is None:
            return None
        try:
            return decode_weights(raw)
        except ValueError as exc:
            log.warning("unreadable weekly weights of one user (%d bytes): %s", len(raw), exc)
            return None

    def _cached(self, user_id: str) -> Fetched:
        if user_id in self._cache:
            self._cache.move_to_end(user_id)
            features, weights = self._cache[user_id]
            return Fetched(features, CACHED, weights)
        return Fetched(None, MISSING)

    def _remember(
        self, user_id: str, features: UserFeatures | None, weights: UserWeights | None
    ) -> None:
        cache = self._cache
        cache[user_id] = (features, weights)
        cache.move_to_end(user_id)
        if len(cache) > self._cache_users:
            cache.popitem(last=False)
