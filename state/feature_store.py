"""The feature store: full feature values in Redis, guarded by event time.

Outputs of a Bytewax flow are at least once: after a crash the last epoch is replayed and its
writes arrive again, possibly after newer ones. Every value is therefore written whole, never
incremented, and stamped with the event time it reflects; a write older than what is stored
is refused inside Redis (one Lua call per key, so the check and the write are atomic).

Values are `8-byte big-endian event time ‖ payload`. Fixed-width big-endian integers compare
like the numbers they encode, so the Lua guard is a plain string comparison.

Keys carry a hash tag (`ff:{u:<id>}`), so a Redis Cluster spreads users and items over slots
while every key of one entity stays together. Ids are length-limited by the contracts and
never reach another entity's key: `{`/`}` inside an id only move the tag within that key.

Example (with the in-memory twin):
    >>> store = MemoryFeatureStore()
    >>> new, old = FeatureWrite(USER, "u1", 20, b"new"), FeatureWrite(USER, "u1", 10, b"old")
    >>> store.put_many([new, old])
    1
    >>> store.get_many(USER, ["u1", "u2"])
    [b'new', None]
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import redis

from kernel.errors import FeedflowError
from kernel.metrics import STORE_RETRIES
from state.redis_client import RedisClient, mget

USER: Final = "u"
ITEM: Final = "i"
TRENDING: Final = "t"
CO_ENGAGEMENT: Final = "c"  # an item's co-engagement record, under its id's 8-byte digest
CREATOR: Final = "cr"  # a creator's record (subscriber count)
_STAMP = struct.Struct(">Q")

# KEYS[1] key; ARGV[1] stamped value; ARGV[2] ttl seconds (0 = none). Returns 1 when written.
_GUARDED_SET = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 8) > string.sub(ARGV[1], 1, 8) then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

T = TypeVar("T")


class StoreUnavailableError(FeedflowError):
    """A store stayed unreachable through every retry; the caller must fail loudly."""


@dataclass(frozen=True, slots=True)
class FeatureWrite:
    """One full value for one entity, as of event time `ts_ms`."""

    kind: str
    entity_id: str
    ts_ms: int
    payload: bytes
    ttl_s: int = 0


@dataclass(frozen=True, slots=True)
class FeatureErase:
    """Delete one entity's features (an erased user); `ts_ms` is the erasure's time."""

    kind: str
    entity_id: str
    ts_ms: int


Change = FeatureWrite | FeatureErase


def feature_key(kind: str, entity_id: str) -> str:
    """The Redis key of one entity's features, hash-tagged per entity.

    Example:
        >>> feature_key(USER, "alice")
        'ff:{u:alice}'
    """
    return f"ff:{{{kind}:{entity_id}}}"


# Wall-clock ms of the newest feature write by any flow worker (at most one SET per worker a
# second): how fresh the stored features are as a person or a probe sees it.
LAST_WRITE_KEY: Final = "ff:meta:last_feature_write"


def stamp(ts_ms: int, payload: bytes) -> bytes:
    """Prefix a payload with its event time."""
    return _STAMP.pack(max(ts_ms, 0)) + payload


def unstamp(value: bytes | None) -> tuple[int, bytes] | None:
    """Split a stored value into (event time, payload)."""
    if value is None:
        return None
    return _STAMP.unpack_from(value)[0], value[_STAMP.size :]


class FeatureStore(Protocol):
    """Where flows write features and serving reads them."""

    def put_many(self, writes: Sequence[Change]) -> int:
        """Write each value unless a newer one is stored, delete each erased one; return how
        many keys changed."""
        ...

    def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        """Payloads (without stamps) in the order of `ids`; None where absent."""
        ...


class MemoryFeatureStore:
    """Exact in-memory twin of :class:`RedisFeatureStore` for unit tests (TTLs ignored)."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def put_many(self, writes: Sequence[Change]) -> int:
        """Same contract as :meth:`RedisFeatureStore.put_many`, on a dict (TTLs ignored)."""
        written = 0
        for w in writes:
            if isinstance(w, FeatureErase):
                written += self.values.pop(feature_key(w.kind, w.entity_id), None) is not None
                continue
            key, value = feature_key(w.kind, w.entity_id), stamp(w.ts_ms, w.payload)
            cur = self.values.get(key)
            if cur is None or cur[:8] <= value[:8]:
                self.values[key] = value
                written += 1
        return written

    def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        """Payloads (stamps removed) in the order of `ids`; None where absent."""
        found = (unstamp(self.values.get(feature_key(kind, i))) for i in ids)
        return [None if f is None else f[1] for f in found]


class RedisFeatureStore:
    """Guarded full-value writes in pipelines; one MGET-style round trip per read."""

    def __init__(self, client: RedisClient, attempts: int = 5, backoff_s: float = 0.2) -> None:
        self.client = client
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._guarded: Any = None  # the guarded-write script, registered at the first write

    def put_many(self, writes: Sequence[Change]) -> int:
        """Guarded writes and deletes in one pipeline; how many keys changed.

        Raises:
            StoreUnavailableError: Redis stayed unreachable through every retry.
        """
        if not writes:
            return 0

        if self._guarded is None:
            self._guarded = self.client.register_script(_GUARDED_SET)

        def once() -> int:
            pipe = self.client.pipeline(transaction=False)
            for w in writes:
                if isinstance(w, FeatureErase):
                    pipe.delete(feature_key(w.kind, w.entity_id))
                    continue
                self._guarded(
                    keys=[feature_key(w.kind, w.entity_id)],
                    args=[stamp(w.ts_ms, w.payload), w.ttl_s],
                    client=pipe,
                )
            return sum(int(r) for r in pipe.execute())

        def attempt() -> int:
            try:
                return once()
            except redis.exceptions.NoScriptError:
                # A cluster's pipeline does not load scripts first as a single server's
                # does, and a restarted or promoted node starts with none. Every write is
                # guarded by its stamp, so running the whole batch again changes nothing twice.
                self.client.script_load(_GUARDED_SET)
                return once()

        return retry(attempt, self.attempts, self.backoff_s, "redis")

    def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        """Payloads (stamps removed) in the order of `ids`, None where absent: one MGET.

        Raises:
            StoreUnavailableError: Redis stayed unreachable through every retry.
        """
        if not ids:
            return []
        keys = [feature_key(kind, i) for i in ids]
        values = retry(lambda: mget(self.client, keys), self.attempts, self.backoff_s, "redis")
        return [None if (found := unstamp(v)) is None else found[1] for v in values]


def retry(fn: Callable[[], T], attempts: int, backoff_s: float, store: str) -> T:
    """Call `fn`, retrying connection failures with exponential backoff.

    Raises:
        StoreUnavailableError: after the last attempt failed; chained to the last error.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == attempts:
                raise StoreUnavailableError(
                    f"{store} unreachable after {attempts} attempts: {exc}"
                ) from exc
            STORE_RETRIES.labels(store=store).inc()
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def chunked(items: Iterable[T], size: int) -> Iterable[list[T]]:
    """Split an iterable into lists of at most `size` (pipelines stay bounded)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
