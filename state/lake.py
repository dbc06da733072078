"""The event lake: Parquet files of events, closed views and impressions, by event hour.

The offline half of the feature store. Layout under the lake's root, a directory or a URL
(`s3://bucket/lake`, any fsspec protocol):

    <dataset>/date=YYYY-MM-DD/hour=HH/<part>-<run>-<seq>.parquet    one writer epoch's rows
    <dataset>/date=YYYY-MM-DD/hour=HH/compacted-<digest>.parquet     an hour's files merged
    _journal/<part>/<run>-<seq>.json                                 the files an epoch wrote

Writes are exactly once per epoch. A flow's lake sink (:mod:`flows.lake_sink`) buffers an
epoch's rows and writes them when the epoch closes, journal first: the files it is about to
write. The journal outlives the epoch's commit by a margin; a writer resumed at epoch `seq`
deletes the files of its journals at or past `seq` (written, never committed) before it
writes that epoch again, so a replayed epoch rewrites its rows and never duplicates them.

Compaction merges an hour's small files into one. The merged file names its sources in its
metadata, and a reader skips any file a merged file names, so a compaction that stopped
half-way (merged file written, sources not yet deleted) duplicates nothing; the next one
finishes it. Files named by a journal (an epoch perhaps not committed) are left for later,
for up to `journal_horizon_ms` (an hour) after it was written: a part whose flow goes quiet
keeps its last journals (Bytewax snapshots only the parts an epoch touched), and its hours
must still compact. Past the horizon the epoch is taken as committed. The one case that
breaks: a flow killed with an uncommitted epoch and restarted more than the horizon later,
after a compaction merged that epoch's files; its replay then adds those rows again, and
readers drop them by each dataset's key (:func:`unique`).

Local writes go through a temporary name and a rename, so a reader never sees half a file;
object stores write whole objects anyway.

Example:
    >>> import tempfile
    >>> from operators.contracts import EngagementEvent
    >>> from state.lake_schema import EVENTS
    >>> lake = Lake(tempfile.mkdtemp())
    >>> ev = EngagementEvent(event_id="e1", event_type="media_started", user_id="u1", ts=0)
    >>> [p.split("/", 1)[1] for p in lake.write_epoch("w0", "r1", 0, {EVENTS: [ev]})]
    ['date=1970-01-01/hour=00/w0-r1-0000000000.parquet']
    >>> lake.read(EVENTS).column("event_id").to_pylist()
    ['e1']
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kernel.errors import FeedflowError
from state.lake_schema import DATASETS, SCHEMA_VERSION, VERSION_KEY, Dataset

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
JOURNAL: Final = "_journal"
COMPACTED: Final = "compacted-"
SOURCES_KEY: Final = b"feedflow.sources"
COMPRESSION: Final = "zstd"
_HOUR_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


class LakeError(FeedflowError):
    """A lake file could not be read as this version understands it."""


class Compaction(NamedTuple):
    """What one compaction did: hours merged, files merged and removed, rows kept."""

    hours: int
    files: int
    rows: int


def new_run() -> str:
    """An id for a writer that starts without a resume state (its file names never collide
    with an earlier run's)."""
    return f"{int(time.time()):x}{secrets.token_hex(2)}"


def hour_dir(hour: int) -> str:
    """The partition directory of an hour (hours since the epoch, UTC).

    Example:
        >>> hour_dir(24 * 365 + 13)
        'date=1971-01-01/hour=13'
    """
    at = datetime.fromtimestamp(hour * 3600, UTC)
    return f"date={at:%Y-%m-%d}/hour={at:%H}"


def hour_of_dir(path: str) -> int | None:
    """The hour of a partition directory (the inverse of :func:`hour_dir`), or None."""
    m = _HOUR_DIR.search(path.rstrip("/"))
    if m is None:
        return None
    at = datetime.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(at.timestamp()) // 3600


# Rising stamps: stored as deltas they take under a byte a row (plain, over 3).
DELTA_COLUMNS: Final = ("arrival",)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as one Parquet file's bytes."""
    out = io.BytesIO()
    delta = [c for c in DELTA_COLUMNS if c in table.column_names]
    if delta:
        others = [c for c in table.column_names if c not in delta]
        encoding = dict.fromkeys(delta, "DELTA_BINARY_PACKED")
        pq.write_table(table, out, compression=COMPRESSION, use_dictionary=others,
                       column_encoding=encoding)  # fmt: skip
    else:
        pq.write_table(table, out, compression=COMPRESSION)
    return out.getvalue()


def by_hour(dataset: Dataset, table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """The table's rows split by the hour of the dataset's time column."""
    hours = table.column(dataset.time_column).to_numpy() // HOUR_MS
    if len(hours) == 0:
        return
    first = int(hours[0])
    if (hours == first).all():
        yield first, table
        return
    order = np.argsort(hours, kind="stable")
    ordered, sorted_hours = table.take(order), hours[order]
    starts = np.flatnonzero(np.diff(sorted_hours)) + 1
    bounds = [0, *starts.tolist(), len(sorted_hours)]
    for lo, hi in itertools.pairwise(bounds):
        yield int(sorted_hours[lo]), ordered.slice(lo, hi - lo)


def in_arrival_order(table: pa.Table) -> pa.Table:
    """Events in the order the flow read them: by `arrival`, a row without one (schema
    version 1) at its event time; ties keep their order.

    Example:
        >>> t = pa.table({"ts": [5, 1, 3], "arrival": [9_000, None, 2_000]})
        >>> in_arrival_order(t).column("ts").to_pylist()
        [1, 3, 5]
    """
    if table.num_rows == 0:
        return table
    ts_us = pc.multiply(table.column("ts"), 1000)
    key = pc.coalesce(table.column("arrival"), ts_us)
    return table.take(pc.sort_indices(pa.table({"k": key}), [("k", "ascending")]))


def unique(dataset: Dataset, table: pa.Table) -> pa.Table:
    """The first row of each of the dataset's keys: one per event id (client retries reach
    the lake as the broker got them), per view, per served item. Rows repeat when a flow
    read its topics again (`--no-recovery`, `--rebuild`); exactly-once epochs never do."""
    if table.num_rows == 0:
        return table
    keys = [table.column(k).to_pylist() for k in dataset.key]
    seen: set[tuple[Any, ...]] = set()
    keep = np.zeros(table.num_rows, dtype=bool)
    for n, key in enumerate(zip(*keys, strict=True)):
        if key not in seen:
            seen.add(key)
            keep[n] = True
    return table.filter(pa.array(keep))


class Lake:
    """The lake at a root directory or URL.

    Args:
        root: a directory, or a URL (`s3://bucket/prefix`); credentials and endpoint come
            from the usual environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, …) or
            `options`.
        options: fsspec storage options.
    """

    def __init__(self, root: str, options: Mapping[str, Any] | None = None) -> None:
        text = str(root)
        self.local = "://" not in text or text.startswith("file://")
        self.root = (os.path.abspath(text.removeprefix("file://")) if self.local else text).rstrip(
            "/"
        )
        self._options = dict(options or {})
        self._fs: Any = None
        self._pid = -1

    @property
    def fs(self) -> Any:
        """The filesystem, made afresh in a forked child (fsspec's are not fork-safe)."""
        if self._fs is None or self._pid != os.getpid():
            import fsspec

            protocol = "file" if self.local else self.root.split("://", 1)[0]
            self._fs = fsspec.filesystem(protocol, skip_instance_cache=True, **self._options)
            self._pid = os.getpid()
        return self._fs

    def path(self, *parts: str) -> str:
        """A path under the root."""
        return "/".join([self.root, *parts])

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # Writing ---------------------------------------------------------------------------

    def put(self, rel: str, data: bytes) -> None:
        """Write a document under the root (whole, or not at all where the store allows)."""
        self._put(self.path(rel), data)

    def get(self, rel: str) -> bytes:
        """A document under the root.

        Raises:
            FileNotFoundError: there is none.
        """
        data: bytes = self.fs.cat_file(self.path(rel))
        return data

    def write_epoch(
        self, part: str, run: str, seq: int, records: Mapping[Dataset, Sequence[Any]]
    ) -> list[str]:
        """Write one epoch of a writer's records (journal first); the files written, relative
        to the root."""
        tables = {d: d.table(rows) for d, rows in records.items() if rows}
        name = f"{part}-{run}-{seq:010d}.parquet"
        files = [
            (f"{d.name}/{hour_dir(hour)}/{name}", t)
            for d, table in tables.items()
            for hour, t in by_hour(d, table)
        ]
        if not files:
            return []
        written = int(time.time() * 1000)
        journal = json.dumps({"written_ms": written, "files": [f for f, _ in files]}).encode()
        self._put(self.path(JOURNAL, part, f"{run}-{seq:010d}.json"), journal)
        for rel, table in files:
            self._put(self.path(rel), parquet_bytes(table))
        return [f for f, _ in files]

    def settle(self, part: str, run: str, resume_seq: int | None) -> int:
        """Ready a writer part to write epoch `resume_seq` of `run` (None: a new run).

        Files of journals at or past `resume_seq` were written for epochs never committed:
        they are deleted (the replay writes them again). A part starting without a resume
        state has had no epoch committed (or runs without recovery, and then reads its
        topics again from their start): every journal's files go. Other journals only lose
        their journal. Returns the number of files deleted.
        """
        deleted = 0
        for run_of, seq, journal in self._journals(part):
            if resume_seq is None or (run_of == run and seq >= resume_seq):
                for rel in self._journal_files(journal):
                    deleted += self._rm(self.path(rel))
            self._rm(journal)
        if deleted:
            log.info("lake part %s: removed %d files of uncommitted epochs", part, deleted)
        return deleted

    def forget_journals(self, part: str, run: str, below_seq: int) -> None:
        """Drop the journals of `run`'s epochs before `below_seq` (committed by now)."""
        for run_of, seq, journal in self._journals(part):
            if run_of == run and seq < below_seq:
                self._rm(journal)

    # Reading ---------------------------------------------------------------------------

    def hours(self, dataset: Dataset) -> list[int]:
        """The hours the dataset has partitions for, oldest first."""
        pattern = self.path(dataset.name, "date=*", "hour=*")
        found = (hour_of_dir(p) for p in self._glob(pattern))
        return sorted(h for h in found if h is not None)

    def files(
        self, dataset: Dataset, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[str]:
        """The live files (not merged into a compacted one) of hours overlapping
        [start_ms, end_ms), oldest hour first."""
        out: list[str] = []
        for hour in self.hours(dataset):
            if start_ms is not None and (hour + 1) * HOUR_MS <= start_ms:
                continue
            if end_ms is not None and hour * HOUR_MS >= end_ms:
                continue
            names, covered = self._hour_listing(dataset, hour)
            out += [self.path(dataset.name, hour_dir(hour), n) for n in names if n not in covered]
        return out

    def read(
        self,
        dataset: Dataset,
        start_ms: int | None = None,
        end_ms: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The dataset's rows with time in [start_ms, end_ms) (all without bounds)."""
        tables = [
            self.read_file(f, dataset, columns) for f in self.files(dataset, start_ms, end_ms)
        ]
        schema = dataset.schema if columns is None else _select(dataset.schema, columns)
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        if start_ms is None and end_ms is None:
            return table
        t = table.column(dataset.time_column).to_numpy()
        keep = np.ones(len(t), dtype=bool)
        if start_ms is not None:
            keep &= t >= start_ms
        if end_ms is not None:
            keep &= t < end_ms
        return table.filter(pa.array(keep))

    def read_file(
        self, path: str, dataset: Dataset, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """One file's rows in this code's schema (columns an older version lacks are null);
        refuses a schema version newer than this code's."""
        names = list(columns) if columns is not None else list(dataset.schema.names)
        if dataset.time_column not in names:
            names.append(dataset.time_column)
        parquet = pq.ParquetFile(io.BytesIO(self.fs.cat_file(path)))
        meta = parquet.schema_arrow.metadata or {}
        version = int(meta.get(VERSION_KEY, b"0"))
        if not 1 <= version <= SCHEMA_VERSION:
            raise LakeError(
                f"{path}: schema version {version}, this Feedflow reads 1..{SCHEMA_VERSION}"
            )
        present = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[n for n in names if n in present])
        for name in names:
            if name not in present:
                field = dataset.schema.field(name)
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        out = table.select(names).replace_schema_metadata(dataset.schema.metadata)
        return out.select(list(columns)) if columns is not None else out

    # Maintenance -----------------------------------------------------------------------

    def compact(
        self, dataset: Dataset, before_ms: int, journal_horizon_ms: int = HOUR_MS
    ) -> Compaction:
        """Merge the small files of every hour that ended before `before_ms`, except files
        of journals younger than `journal_horizon_ms`."""
        since = int(time.time() * 1000) - journal_horizon_ms
        pending = {
            rel for *_, j in self.journals() for rel in self._journal_files(j, written_since=since)
        }
        hours = files = rows = 0
        for hour in self.hours(dataset):
            if (hour + 1) * HOUR_MS > before_ms:
                continue
            merged = self._compact_hour(dataset, hour, pending)
            if merged is not None:
                hours, files, rows = hours + 1, files + merged[0], rows + merged[1]
        return Compaction(hours, files, rows)

    def expire(self, before_ms: int) -> int:
        """Delete every dataset's hours that ended before `before_ms` (retention); how many."""
        gone = 0
        for dataset in DATASETS.values():
            for hour in self.hours(dataset):
                if (hour + 1) * HOUR_MS <= before_ms:
                    self.fs.rm(self.path(dataset.name, hour_dir(hour)), recursive=True)
                    gone += 1
        return gone

    def forget(self, user_id: str) -> dict[str, int]:
        """Rewrite every file holding rows of `user_id` without them; rows removed per
        dataset (an erasure request; reads every file's `user_id` column)."""
        removed: dict[str, int] = {}
        for dataset in DATASETS.values():
            for path in self.files(dataset) + self._covered_files(dataset):
                table = self.read_file(path, dataset)
                keep = pa.array(table.column("user_id").to_numpy(zero_copy_only=False) != user_id)
                gone = len(table) - int(np.count_nonzero(keep))
                if gone:
                    self._put(path, parquet_bytes(table.filter(keep)))
                    removed[dataset.name] = removed.get(dataset.name, 0) + gone
        return removed

    def holds(self, user_id: str) -> bool:
        """True when any file still has a row of `user_id`."""
        for dataset in DATASETS.values():
            for path in self.files(dataset):
                ids = self.read_file(path, dataset, ["user_id"]).column("user_id")
                if user_id in ids.to_pylist():
                    return True
        return False

    # Internals -------------------------------------------------------------------------

    def _compact_hour(
        self, dataset: Dataset, hour: int, pending: set[str]
    ) -> tuple[int, int] | None:
        directory = hour_dir(hour)
        names, covered = self._hour_listing(dataset, hour)
        for name in covered & set(names):  # a compaction that stopped before deleting
            self._rm(self.path(dataset.name, directory, name))
        live = [n for n in names if n not in covered]
        inputs = sorted(n for n in live if f"{dataset.name}/{directory}/{n}" not in pending)
        if len(inputs) < 2:
            return None
        paths = [self.path(dataset.name, directory, n) for n in inputs]
        table = pa.concat_tables([self.read_file(p, dataset) for p in paths])
        digest = hashlib.sha1("\n".join(inputs).encode()).hexdigest()[:16]
        meta = {**(table.schema.metadata or {}), SOURCES_KEY: json.dumps(inputs).encode()}
        merged = table.replace_schema_metadata(meta)
        self._put(
            self.path(dataset.name, directory, f"{COMPACTED}{digest}.parquet"),
            parquet_bytes(merged),
        )
        for p in paths:
            self._rm(p)
        return len(inputs), len(table)

    def _hour_listing(self, dataset: Dataset, hour: int) -> tuple[list[str], set[str]]:
        """The Parquet files of an hour and the names its compacted files merged."""
        directory = self.path(dataset.name, hour_dir(hour))
        try:
            entries = self.fs.ls(directory, detail=False)
        except FileNotFoundError:
            return [], set()
        names = sorted(n for n in (_basename(e) for e in entries) if n.endswith(".parquet"))
        covered: set[str] = set()
        for n in names:
            if n.startswith(COMPACTED):
                meta = pq.read_schema(io.BytesIO(self.fs.cat_file(f"{directory}/{n}"))).metadata
                covered.update(json.loads((meta or {}).get(SOURCES_KEY, b"[]")))
        return names, covered

    def _covered_files(self, dataset: Dataset) -> list[str]:
        """Files merged into a compacted file but not yet deleted (erasure reaches them too)."""
        out = []
        for hour in self.hours(dataset):
            names, covered = self._hour_listing(dataset, hour)
            out += [self.path(dataset.name, hour_dir(hour), n) for n in names if n in covered]
        return out

    def _journals(self, part: str) -> Iterable[tuple[str, int, str]]:
        for path in self._glob(self.path(JOURNAL, part, "*.json")):
            run, _, seq = _basename(path).removesuffix(".json").rpartition("-")
            yield run, int(seq), path

    def journals(self) -> Iterable[tuple[str, int, str]]:
        """Every part's journals (run, epoch, path): epochs that may not be committed yet."""
        for part_dir in self._glob(self.path(JOURNAL, "*")):
            yield from self._journals(_basename(part_dir))

    def _journal_files(self, journal: str, written_since: int | None = None) -> list[str]:
        """The files a journal names (none if it was written before `written_since`)."""
        try:
            doc = json.loads(self.fs.cat_file(journal))
        except FileNotFoundError:
            return []
        if written_since is not None and doc["written_ms"] < written_since:
            return []
        files: list[str] = doc["files"]
        return files

    def _glob(self, pattern: str) -> list[str]:
        if not self.local:
            self.fs.invalidate_cache()  # other processes write here too
        return sorted(str(p) for p in self.fs.glob(pattern))

    def _put(self, path: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _rm(self, path: str) -> int:
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return 0
        return 1


def _basename(path: object) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _select(schema: pa.Schema, columns: Sequence[str]) -> pa.Schema:
    return pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
