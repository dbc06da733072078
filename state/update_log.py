"""The index update log: one Redis stream per index version, carrying every change.

Each entry holds the full new state of one item (record, vector, source event), so applying
the log is idempotent and only the last entry per item matters. Readers start from a
snapshot's `log_id` and read on; the writer trims entries older than the previous snapshot.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from operators.content import ItemRecord
from state.index_keys import IndexKeys
from state.redis_client import RedisClient

START: Final = "0-0"
ADD: Final = "add"
UPDATE: Final = "update"
REMOVE: Final = "remove"
_FIELD: Final = b"e"


class LogEntry(msgspec.Struct, array_like=True, frozen=True):
    """One change: `op` is add, update or remove; `vector` is float32 bytes (empty on remove)."""

    op: str
    record: ItemRecord
    vector: bytes = b""
    source: bytes = b""

    def array(self) -> npt.NDArray[np.float32]:
        """The vector as a float32 array."""
        return np.frombuffer(self.vector, dtype=np.float32)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LogEntry)


def stream_id(value: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable pair.

    Example:
        >>> stream_id("1700000000000-3") > stream_id(b"1700000000000-2")
        True
    """
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _entries(rows: Any) -> list[tuple[str, LogEntry]]:
    out = []
    for raw_id, fields in rows:
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        out.append((entry_id, _decoder.decode(fields[_FIELD])))
    return out


class UpdateLog:
    """Append, read and trim the log of one index version."""

    def __init__(self, client: RedisClient, keys: IndexKeys, version: str) -> None:
        self._client, self._keys, self.version = client, keys, version
        self.key = keys.log(version)

    def append(self, pipe: Any, entry: LogEntry) -> None:
        """Queue one XADD on a pipeline; its result is the new entry's id."""
        pipe.xadd(self.key, {_FIELD: _encoder.encode(entry)})

    def read(
        self, after: str, count: int = 10_000, block_ms: int = 0
    ) -> list[tuple[str, LogEntry]]:
        """Entries strictly after `after`, oldest first; waits up to `block_ms` for the first."""
        if block_ms <= 0:
            return _entries(self._client.xrange(self.key, f"({after}", "+", count=count))
        reply: Any = self._client.xread({self.key: after}, count=count, block=block_ms)
        if not reply:
            return []
        # RESP3 answers {key: [[entries]]}, RESP2 [[key, [entries]]].
        rows = next(iter(reply.values()))[0] if isinstance(reply, dict) else reply[0][1]
        return _entries(rows)

    def last_id(self) -> str:
        """The newest entry's id, or START when empty."""
        rows = self._client.xrevrange(self.key, "+", "-", count=1)
        return _entries(rows)[0][0] if rows else START

    def length(self) -> int:
        """Entries currently retained."""
        return int(self._client.xlen(self.key))

    def trim_before(self, min_id: str) -> None:
        """Drop entries older than `min_id`, recording the mark first so readers notice gaps."""
        if min_id == START:
            return
        self._client.set(self._keys.trim(self.version), min_id)
        self._client.xtrim(self.key, minid=min_id, approximate=False)

    def trimmed_before(self) -> str:
        """The id below which entries may be gone (START if never trimmed)."""
        raw = self._client.get(self._keys.trim(self.version))
        return raw.decode() if isinstance(raw, bytes) else START

    def delete(self) -> None:
        """Remove the log and its trim mark (retiring a version)."""
        self._client.delete(self.key, self._keys.trim(self.version))
