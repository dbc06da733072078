"""The Bytewax sink that owns the authoritative vector index.

A `FixedPartitionedSink` with exactly one partition: whatever `-w`/`-i`, one worker builds
it and every change (keyed to that partition) reaches it, so there is one index writer.
Ticks keep snapshots, heartbeats and blue/green hand-overs going when no change arrives.
"""

from __future__ import annotations

import time

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.sources import Tick
from kernel.settings import Settings
from state.index_keys import IndexKeys
from state.index_replica import IndexParams, snapshot_store
from state.index_writer import Change, IndexWriter
from state.redis_client import INDEX_WRITER, RedisClient, connect

PARTITION = "index"
TICK_EVERY_S = 0.5
# hnswlib threads for batch inserts and compaction; single changes use one.
WRITER_THREADS = 2
IndexItem = Change | Tick


class IndexSink(FixedPartitionedSink[IndexItem, None]):
    """Routes every keyed item to the single index partition."""

    def __init__(self, settings: Settings, keys: IndexKeys | None = None) -> None:
        self.settings = settings
        self.keys = keys or IndexKeys()

    def list_parts(self) -> list[str]:
        """One partition, listed by every worker; Bytewax gives it to exactly one."""
        return [PARTITION]

    def part_fn(self, item_key: str) -> int:
        """Everything goes to partition 0."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _IndexPartition:
        """Open the writer: newest snapshot plus the update log after it."""
        s = self.settings
        client = connect(s.redis_url, INDEX_WRITER)
        writer = IndexWriter.open(
            client,
            snapshot_store(s),
            IndexParams.from_settings(s, threads=WRITER_THREADS),
            self.keys,
            s.encoder,
            s.embedding_dim,
        )
        return _IndexPartition(client, writer)


class _IndexPartition(StatefulSinkPartition[IndexItem, None]):
    def __init__(self, client: RedisClient, writer: IndexWriter) -> None:
        self._client, self.writer = client, writer
        self._last_tick = 0.0

    def write_batch(self, values: list[IndexItem]) -> None:
        changes = [v for v in values if isinstance(v, Change)]
        if changes:
            self.writer.apply(changes)
        now = time.monotonic()
        if now - self._last_tick >= TICK_EVERY_S:
            self._last_tick = now
            self.writer.tick()

    def snapshot(self) -> None:
        # Index state lives in its own snapshots + log; Bytewax only keeps the offsets.
        return None

    def close(self) -> None:
        self.writer.close()
        self._client.close()
