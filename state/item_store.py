"""Items in Redis: packed metadata, per-version vectors and the source event, one key each.

A serving process reads the features of 500 candidates with one MGET (records and, when
asked, vectors of the active version). Writes are full values queued on the writer's
pipeline, so replaying them is harmless.

Example (key layout only):
    >>> from state.index_keys import IndexKeys
    >>> IndexKeys().item("m1")
    'ff:item:{m1}'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from operators.content import ItemRecord, pack_record, unpack_record
from state.index_keys import IndexKeys
from state.redis_client import RedisClient, mget
from state.update_log import REMOVE, LogEntry


class ItemFeatures(NamedTuple):
    """A live item's record and, when requested, its vector."""

    record: ItemRecord
    vector: npt.NDArray[np.float32] | None


class ItemStore:
    """The Redis side of the catalogue."""

    def __init__(self, client: RedisClient, keys: IndexKeys) -> None:
        self._client: Any = client
        self.keys = keys

    def queue(self, pipe: Any, entry: LogEntry, version: str) -> None:
        """Queue the writes of one change on a pipeline."""
        media_id = entry.record.media_id
        pipe.set(self.keys.item(media_id), pack_record(entry.record))
        if entry.op == REMOVE:
            # One key per DEL: a cluster's pipeline takes no multi-key command.
            pipe.delete(self.keys.vec(version, media_id))
            pipe.delete(self.keys.src(media_id))
            return
        pipe.set(self.keys.vec(version, media_id), entry.vector)
        pipe.set(self.keys.src(media_id), entry.source)

    def queue_vector(self, pipe: Any, version: str, media_id: str, vector: bytes) -> None:
        """Queue one vector write (rebuilds filling a new version)."""
        pipe.set(self.keys.vec(version, media_id), vector)

    def features(self, ids: Sequence[str], version: str | None = None) -> list[ItemFeatures | None]:
        """Records (and vectors of `version`) of `ids` in one MGET; None when absent or removed."""
        keys = [self.keys.item(i) for i in ids]
        if version is not None:
            keys += [self.keys.vec(version, i) for i in ids]
        values = mget(self._client, keys) if keys else []
        out: list[ItemFeatures | None] = []
        for n in range(len(ids)):
            raw = values[n]
            record = unpack_record(raw) if raw is not None else None
            if record is None or record.removed:
                out.append(None)
                continue
            vec_raw = values[len(ids) + n] if version is not None else None
            vector = np.frombuffer(vec_raw, dtype=np.float32) if vec_raw is not None else None
            out.append(ItemFeatures(record, vector))
        return out

    def sources(self, ids: Sequence[str]) -> list[bytes | None]:
        """The stored source events of `ids` (one MGET)."""
        return mget(self._client, [self.keys.src(i) for i in ids]) if ids else []

    def drop_vectors(self, version: str, batch: int = 1000) -> int:
        """Delete every vector key of a retired version; returns how many."""
        dropped = 0
        chunk: list[bytes] = []
        for key in self._client.scan_iter(match=self.keys.vec_pattern(version), count=batch):
            chunk.append(key)
            if len(chunk) >= batch:
                dropped += int(self._client.unlink(*chunk))
                chunk = []
        if chunk:
            dropped += int(self._client.unlink(*chunk))
        return dropped
