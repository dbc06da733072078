"""Ranker versions in Redis, in the document format of :mod:`operators.ranking_contract`.

Keys (hash-tagged to one slot): `ACTIVE_KEY` holds the version serving should use,
`version_key(v)` each published document, `VERSIONS_KEY` the versions by sequence number.

Publishing a version writes its weight document (`version_key`), records it in a sorted set
by sequence number and moves the active pointer (`ACTIVE_KEY`), in one MULTI, so serving's
refresher never sees a pointer to a document that is not there. Only the newest `keep`
versions are kept (never the active one is deleted). Publishing the same version again
writes the same values: the learning flow's replayed epoch after a crash is harmless.

Example (with the in-memory twin):
    >>> reg = MemoryModelRegistry(keep=2)
    >>> for n in (1, 2, 3):
    ...     reg.publish(ModelVersion(version=f"v{n}", seq=n, ts=0, examples=n,
    ...                              weights={"trending": 1.0}, bias=0.0))
    >>> reg.active(), reg.versions()
    ('v3', ['v2', 'v3'])
"""

from __future__ import annotations

from typing import Final, Protocol, cast

from operators.online_ranker import ModelVersion
from operators.ranking_contract import encode_model
from state.feature_store import retry
from state.redis_client import RedisClient

ACTIVE_KEY: Final = "ff:{model}:ranker:active"
VERSIONS_KEY: Final = "ff:{model}:ranker:versions"  # sorted set: version → sequence number
KEEP_VERSIONS: Final = 20


def version_key(version: str) -> str:
    """The key of one published weight document.

    Example:
        >>> version_key("v7")
        'ff:{model}:ranker:v:v7'
    """
    return f"ff:{{model}}:ranker:v:{version}"


def document(model: ModelVersion) -> bytes:
    """The published weight document of a version."""
    return encode_model(model.version, model.weights, model.bias)


class ModelRegistry(Protocol):
    """Where the learning flow publishes ranker versions."""

    def publish(self, model: ModelVersion) -> None:
        """Store the version's document and make it the active one."""
        ...

    def active(self) -> str | None:
        """The version serving should use, None before any was published."""
        ...

    def get(self, version: str) -> bytes | None:
        """A version's weight document, None if absent."""
        ...

    def versions(self) -> list[str]:
        """Kept versions, oldest first."""
        ...


class MemoryModelRegistry:
    """Exact in-memory twin of :class:`RedisModelRegistry`."""

    def __init__(self, keep: int = KEEP_VERSIONS) -> None:
        self.keep = keep
        self.docs: dict[str, bytes] = {}
        self.seqs: dict[str, int] = {}
        self.active_version: str | None = None

    def publish(self, model: ModelVersion) -> None:
        """Store the document, make it active, drop versions beyond the newest `keep`."""
        self.docs[model.version] = document(model)
        self.seqs[model.version] = model.seq
        self.active_version = model.version
        for old in self.versions()[: -self.keep]:
            if old != self.active_version:
                del self.docs[old], self.seqs[old]

    def active(self) -> str | None:
        """The version serving should use, None before any was published."""
        return self.active_version

    def get(self, version: str) -> bytes | None:
        """A version's weight document, None if absent or pruned."""
        return self.docs.get(version)

    def versions(self) -> list[str]:
        """Kept versions, oldest first (by sequence number, then name)."""
        return sorted(self.seqs, key=lambda v: (self.seqs[v], v))


class RedisModelRegistry:
    """Versions and the active pointer in Redis (keys share the `{model}` hash tag)."""

    def __init__(
        self,
        client: RedisClient,
        keep: int = KEEP_VERSIONS,
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        self.client, self.keep = client, keep
        self.attempts, self.backoff_s = attempts, backoff_s

    def publish(self, model: ModelVersion) -> None:
        """Document, sorted set and active pointer in one MULTI, then pruning beyond `keep`.

        Raises:
            StoreUnavailableError: Redis stayed unreachable through every retry.
        """
        doc = document(model)

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(version_key(model.version), doc)
            pipe.zadd(VERSIONS_KEY, {model.version: model.seq})
            pipe.set(ACTIVE_KEY, model.version)
            pipe.execute()

        retry(write, self.attempts, self.backoff_s, "redis")
        retry(lambda: self._prune(model.version), self.attempts, self.backoff_s, "redis")

    def _prune(self, active: str) -> None:
        raw = cast(list[bytes], self.client.zrange(VERSIONS_KEY, 0, -(self.keep + 1)))
        old = [v.decode() for v in raw if v.decode() != active]
        if not old:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*(version_key(v) for v in old))
        pipe.zrem(VERSIONS_KEY, *old)
        pipe.execute()

    def active(self) -> str | None:
        """The version serving should use, None before any was published (one GET, no retry)."""
        raw = self.client.get(ACTIVE_KEY)
        return raw.decode(errors="replace") if isinstance(raw, bytes) else None

    def get(self, version: str) -> bytes | None:
        """A version's weight document, None if absent or pruned (one GET, no retry)."""
        raw = self.client.get(version_key(version))
        return raw if isinstance(raw, bytes) else None

    def versions(self) -> list[str]:
        """Kept versions, oldest first (by sequence number; one ZRANGE, no retry)."""
        raw = cast(list[bytes], self.client.zrange(VERSIONS_KEY, 0, -1))
        return [v.decode() for v in raw]
