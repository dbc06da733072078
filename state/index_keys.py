"""The Redis key layout of the item store and the vector index, with Cluster hash tags.

Per-item keys tag on the `media_id`, so an item's keys share a slot and items spread over a
cluster; index control keys share the `{idx}` slot; each index version's log has its own.

Example:
    >>> k = IndexKeys("ff")
    >>> k.item("m1"), k.vec("hashing-v1-d64.1", "m1"), k.log("hashing-v1-d64.1")
    ('ff:item:{m1}', 'ff:vec:hashing-v1-d64.1:{m1}', 'ff:{idx:hashing-v1-d64.1}:log')
    >>> k.active
    'ff:{idx}:active'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexKeys:
    """Key names under one prefix (tests use a unique prefix for isolation)."""

    prefix: str = "ff"

    @property
    def active(self) -> str:
        """String: the active index version."""
        return f"{self.prefix}:{{idx}}:active"

    @property
    def versions(self) -> str:
        """Hash: version → packed :class:`state.index_registry.VersionInfo`."""
        return f"{self.prefix}:{{idx}}:versions"

    @property
    def sequence(self) -> str:
        """Counter numbering index versions."""
        return f"{self.prefix}:{{idx}}:seq"

    @property
    def writer(self) -> str:
        """String with a short TTL: the content flow's index writer is alive."""
        return f"{self.prefix}:{{idx}}:writer"

    def log(self, version: str) -> str:
        """Stream: every change to `version` since its oldest retained snapshot."""
        return f"{self.prefix}:{{idx:{version}}}:log"

    def trim(self, version: str) -> str:
        """String: the stream id below which the log of `version` was trimmed."""
        return f"{self.prefix}:{{idx:{version}}}:trim"

    def item(self, media_id: str) -> str:
        """String: the packed :class:`operators.content.ItemRecord` (ranking reads these)."""
        return f"{self.prefix}:item:{{{media_id}}}"

    def vec(self, version: str, media_id: str) -> str:
        """String: the item's float32 vector in the space of index `version`."""
        return f"{self.prefix}:vec:{version}:{{{media_id}}}"

    def vec_pattern(self, version: str) -> str:
        """SCAN pattern of every vector key of `version`."""
        return f"{self.prefix}:vec:{version}:*"

    def src(self, media_id: str) -> str:
        """String: the item's latest accepted catalogue event, as received (for re-encoding)."""
        return f"{self.prefix}:src:{{{media_id}}}"
