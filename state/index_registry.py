"""Index versions in Redis: which exist, what state each is in, and the active pointer.

A version is `<encoder version>.<n>`: one encoder per index, never two. A rebuild creates a
new version (`building`), marks it `ready` when it has caught up, and the writer flips the
active pointer with one SET, so readers move from one complete version to another.
"""

from __future__ import annotations

import time
from typing import Final

import msgspec

from kernel.errors import FeedflowError
from state.index_keys import IndexKeys
from state.redis_client import RedisClient

BUILDING: Final = "building"
READY: Final = "ready"
ACTIVE: Final = "active"
RETIRED: Final = "retired"


class IndexStateError(FeedflowError):
    """The index registry is missing something an operation needs."""


class VersionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One index version: its encoder (name and dim) and lifecycle state."""

    version: str
    encoder: str
    dim: int
    state: str
    created_ms: int = 0


class WriterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What the index writer announces with each heartbeat: the version it writes, its live
    and deleted items, and the last log entry applied. Readers hold the same items once
    they have applied the log up to `log_id`."""

    version: str
    items: int
    deleted: int
    log_id: str
    ts_ms: int


class IndexRegistry:
    """Read and change index versions and the active pointer."""

    def __init__(self, client: RedisClient, keys: IndexKeys) -> None:
        self._client, self.keys = client, keys

    def active(self) -> str | None:
        """The active version, or None before the first one exists."""
        raw = self._client.get(self.keys.active)
        return raw.decode() if isinstance(raw, bytes) else None

    def versions(self) -> dict[str, VersionInfo]:
        """Every registered version."""
        raw: dict[bytes, bytes] = self._client.hgetall(self.keys.versions)  # type: ignore[assignment]
        return {k.decode(): msgspec.msgpack.decode(v, type=VersionInfo) for k, v in raw.items()}

    def get(self, version: str) -> VersionInfo:
        """One version's info.

        Raises:
            IndexStateError: if it is not registered.
        """
        raw = self._client.hget(self.keys.versions, version)
        if not isinstance(raw, bytes):
            raise IndexStateError(f"index version {version!r} is not registered")
        return msgspec.msgpack.decode(raw, type=VersionInfo)

    def new_version(self, encoder_version: str, encoder: str, dim: int) -> VersionInfo:
        """Register a fresh `building` version for an encoder."""
        n = int(self._client.incr(self.keys.sequence))
        info = VersionInfo(
            version=f"{encoder_version}.{n}",
            encoder=encoder,
            dim=dim,
            state=BUILDING,
            created_ms=time.time_ns() // 10**6,
        )
        self.put(info)
        return info

    def put(self, info: VersionInfo) -> None:
        """Store a version's info."""
        self._client.hset(self.keys.versions, info.version, msgspec.msgpack.encode(info))

    def set_state(self, version: str, state: str) -> VersionInfo:
        """Move a version to `state`."""
        info = msgspec.structs.replace(self.get(version), state=state)
        self.put(info)
        return info

    def flip(self, version: str) -> None:
        """Make `version` active in one atomic step; the previous one becomes retired."""
        previous = self.active()
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self.keys.active, version)
        pipe.hset(
            self.keys.versions,
            version,
            msgspec.msgpack.encode(msgspec.structs.replace(self.get(version), state=ACTIVE)),
        )
        if previous and previous != version:
            retired = msgspec.structs.replace(self.get(previous), state=RETIRED)
            pipe.hset(self.keys.versions, previous, msgspec.msgpack.encode(retired))
        pipe.execute()

    def forget(self, version: str) -> None:
        """Drop a retired version from the registry."""
        self._client.hdel(self.keys.versions, version)

    def heartbeat(self, ttl_s: float, status: WriterStatus | None = None) -> None:
        """Announce that the index writer is alive for `ttl_s` seconds, and what it holds."""
        value = b"1" if status is None else msgspec.msgpack.encode(status)
        self._client.set(self.keys.writer, value, px=int(ttl_s * 1000))

    def writer_alive(self) -> bool:
        """Whether a writer has announced itself recently."""
        return bool(self._client.exists(self.keys.writer))

    def writer_status(self) -> WriterStatus | None:
        """What a live writer last announced (None: no writer, or one that did not say)."""
        raw = self._client.get(self.keys.writer)
        if not isinstance(raw, bytes) or raw == b"1":
            return None
        try:
            return msgspec.msgpack.decode(raw, type=WriterStatus)
        except msgspec.DecodeError:
            return None
