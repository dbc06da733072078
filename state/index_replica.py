"""One index version held in memory: the hnswlib graph, the mirrored records, the log position.

The writer, every reader and a rebuild all hold one of these; they differ only in who
appends to the log. Loading is: newest snapshot, then the log after the snapshot's `log_id`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import numpy as np

from kernel.settings import DEFAULTS, Settings
from operators.content import ItemRecord
from state.index_registry import VersionInfo
from state.snapshots import Manifest, SnapshotStore, snapshot_store_at
from state.update_log import REMOVE, START, LogEntry, UpdateLog, stream_id
from state.vector_index import HnswIndex

RECORDS_FILE: Final = "records.msgpack"
_records_encoder = msgspec.msgpack.Encoder()
_records_decoder = msgspec.msgpack.Decoder(list[ItemRecord])


@dataclass(frozen=True)
class IndexParams:
    """hnswlib and lifecycle parameters of the index."""

    m: int = DEFAULTS.index_m
    ef_construction: int = DEFAULTS.index_ef_construction
    ef_search: int = DEFAULTS.index_ef_search
    compaction_share: float = DEFAULTS.index_compaction_share
    snapshot_every_s: float = float(DEFAULTS.index_snapshot_every_s)
    threads: int = 1
    read_vectors: bool = False  # fill every vector's copy at load (serving readers)

    @classmethod
    def from_settings(cls, settings: Settings, threads: int = 1) -> IndexParams:
        """The index parameters of a process's settings."""
        return cls(
            m=settings.index_m,
            ef_construction=settings.index_ef_construction,
            ef_search=settings.index_ef_search,
            compaction_share=settings.index_compaction_share,
            snapshot_every_s=float(settings.index_snapshot_every_s),
            threads=threads,
        )


def _load_graph(path: Path, dim: int, params: IndexParams) -> HnswIndex:
    return HnswIndex.load(path, dim, threads=params.threads, ef_search=params.ef_search,
                          read_vectors=params.read_vectors)  # fmt: skip


def snapshot_store(settings: Settings) -> SnapshotStore:
    """The snapshot store of a process: `index_dir` (a directory, or a URL such as
    `s3://bucket/prefix` with a local cache under `<state_dir>/index-cache`), else
    `<state_dir>/index`."""
    state = Path(settings.state_dir)
    return snapshot_store_at(settings.index_dir or state / "index", state / "index-cache")


@dataclass
class IndexReplica:
    """A complete, consistent copy of one index version."""

    info: VersionInfo
    index: HnswIndex
    records: dict[str, ItemRecord] = field(default_factory=dict)
    log_id: str = START
    source: dict[str, int | str] = field(default_factory=dict)
    last_save_s: float = 0.0
    snapshot: str = ""  # name of the snapshot this replica was loaded from ("": none)

    @classmethod
    def empty(cls, info: VersionInfo, params: IndexParams) -> IndexReplica:
        """A replica with no items."""
        index = HnswIndex(
            info.dim,
            m=params.m,
            ef_construction=params.ef_construction,
            ef_search=params.ef_search,
            threads=params.threads,
        )
        return cls(info, index)

    @classmethod
    def load(cls, info: VersionInfo, store: SnapshotStore, params: IndexParams) -> IndexReplica:
        """The newest snapshot of `info.version`, or an empty replica when there is none."""
        found = store.latest(info.version)
        if found is None:
            return cls.empty(info, params)
        manifest, path = found
        index = _load_graph(path, info.dim, params)
        records = _records_decoder.decode((path / RECORDS_FILE).read_bytes())
        return cls(
            info,
            index,
            {r.media_id: r for r in records},
            manifest.log_id,
            dict(manifest.source),
            snapshot=manifest.name,
        )

    def with_graph_of(
        self,
        store: SnapshotStore,
        params: IndexParams,
        found: tuple[Manifest, Path] | None = None,
    ) -> IndexReplica:
        """A replica with the newest snapshot's graph (a compacted one) and this replica's
        records, positioned at the snapshot: `catch_up` then brings it to the log's end.

        A compaction changes the graph, never a record, so adopting one skips decoding the
        records (about half of a load at 1M items). A replica behind the snapshot has older
        records than the graph: it loads the snapshot whole instead. `found`: the newest
        snapshot when the caller has just looked it up.
        """
        found = found or store.latest(self.info.version)
        if found is None:
            raise FileNotFoundError(f"with_graph_of: no snapshot of {self.info.version}")
        manifest, path = found
        if stream_id(self.log_id) < stream_id(manifest.log_id):  # our records are older
            return IndexReplica.load(self.info, store, params)
        index = _load_graph(path, self.info.dim, params)
        return IndexReplica(
            self.info,
            index,
            dict(self.records),
            manifest.log_id,
            dict(self.source),
            snapshot=manifest.name,
        )

    def live(self, media_id: str) -> ItemRecord | None:
        """The record of a live (not removed) item."""
        record = self.records.get(media_id)
        return None if record is None or record.removed else record

    def apply(self, entries: Sequence[tuple[str, LogEntry]]) -> None:
        """Apply log entries in order (only each item's last entry matters)."""
        if not entries:
            return
        last: dict[str, LogEntry] = {}
        for _, entry in entries:
            last[entry.record.media_id] = entry
            self.records[entry.record.media_id] = entry.record
        removed = [i for i, e in last.items() if e.op == REMOVE]
        upserts = [(i, e) for i, e in last.items() if e.op != REMOVE]
        self.index.remove(removed)
        if upserts:
            vectors = np.stack([e.array() for _, e in upserts])
            self.index.upsert([i for i, _ in upserts], vectors)
        self.log_id = entries[-1][0]

    def catch_up(
        self,
        log: UpdateLog,
        batch: int = 10_000,
        on_batch: Callable[[Sequence[tuple[str, LogEntry]]], None] | None = None,
    ) -> int:
        """Apply the log until it has nothing newer (each batch also to `on_batch`); returns
        entries applied."""
        applied = 0
        while entries := log.read(self.log_id, count=batch):
            self.apply(entries)
            if on_batch is not None:
                on_batch(entries)
            applied += len(entries)
        return applied

    def manifest(self, compacted: bool = False) -> Manifest:
        """The manifest describing this replica now."""
        return Manifest(
            version=self.info.version,
            encoder=self.info.encoder,
            dim=self.info.dim,
            items=len(self.index),
            deleted=self.index.deleted_count,
            log_id=self.log_id,
            source=dict(self.source),
            params=self.index.params,
            compacted=compacted,
        )

    def save(self, store: SnapshotStore, compacted: bool = False) -> Manifest:
        """Write an atomic snapshot of this replica (`compacted`: just compacted)."""

        def write(path: Path) -> None:
            self.index.save(path)
            (path / RECORDS_FILE).write_bytes(_records_encoder.encode(list(self.records.values())))

        started = time.perf_counter()
        manifest = store.save(self.manifest(compacted), write)
        self.last_save_s = time.perf_counter() - started
        return manifest
