"""The Bytewax sink that writes a flow's records to the event lake, one file set per epoch.

Records reach it a batch at a time: :func:`lake_batches` turns each of the runtime's
batches of a stream into one list of what the lake keeps (Bytewax's per-item cost between
steps, not the lake's own, was most of what a per-record path cost the flow's ingest).

A `FixedPartitionedSink` with `partitions` parts (`<flow>-<n>`, keyed by a batch's first
record, so they spread over workers as the topic's partitions do). A part buffers the epoch's rows
and writes them when Bytewax snapshots it at the epoch's close; its state is the next epoch's
number within its run. Resumed after a crash, a part first deletes what it wrote for epochs
that were never committed (:meth:`state.lake.Lake.settle`), so the replay rewrites the same
rows instead of adding them again: exactly once per epoch, with or without a matching epoch
boundary on the replay.

A storage error is retried with backoff (`feedflow_store_retries_total{store="lake"}`), then
raised: the flow stops loudly and resumes from its last snapshot, losing nothing. Rows of a
user erased in this process (:class:`operators.erasure.Tombstones`) are not written;
`feedflow forget` removes what was written before the request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from kernel.metrics import LAKE_FILES, LAKE_ROWS, LAKE_WRITE, STORE_RETRIES
from kernel.settings import Settings
from operators.contracts import EngagementEvent, Impression
from operators.emissions import Segment
from operators.erasure import Tombstones
from state.feature_store import StoreUnavailableError
from state.lake import Lake, new_run
from state.lake_schema import Arrived, LakeRecord, dataset_of

log = logging.getLogger(__name__)

ATTEMPTS: Final = 5
BACKOFF_S: Final = 0.5
JOURNAL_MARGIN: Final = 12  # epochs a journal outlives its epoch (the commit trails it)
LakeState = tuple[str, int]  # (run, next epoch's number)
KINDS: Final = (EngagementEvent, Segment, Impression)


def lake_of(settings: Settings) -> Lake | None:
    """The lake of the settings, or None when it is switched off."""
    if not settings.lake_enabled:
        return None
    return Lake(settings.lake_url or str(Path(settings.state_dir) / "lake"))


def lake_sink(settings: Settings, flow_id: str, erased: Tombstones | None) -> LakeSink | None:
    """A flow's lake sink (one part per topic partition), or None when the lake is off."""
    lake = lake_of(settings)
    return None if lake is None else LakeSink(flow_id, settings.partitions, lake, erased)


class Arrivals:
    """Arrival stamps: microseconds of the wall clock, strictly increasing in this process
    (a clock stepped back does not reorder what was read after what)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        """The first of `n` consecutive stamps."""
        with self._lock:
            first = max(self._last + 1, time.time_ns() // 1000)
            self._last = first + n - 1
        return first


ARRIVALS: Final = Arrivals()


def lake_batches(
    step_id: str, stream: Stream[Any], kinds: tuple[type, ...] = KINDS
) -> Stream[tuple[str, list[Any]]]:
    """One `(key, records)` item per runtime batch of `stream`: its records of `kinds`
    (closed views only; `(key, value)` pairs are unwrapped), keyed by the first one's user."""

    def keep(batch: list[Any]) -> list[tuple[str, list[Any]]]:
        out: list[Any] = []
        for x in batch:
            v = x[1] if type(x) is tuple else x
            if isinstance(v, kinds) and (type(v) is not Segment or v.final):
                out.append(v)
        if not out:
            return []
        if EngagementEvent in kinds:  # in the order this worker read them
            stamp = ARRIVALS.take(len(out))
            out = [Arrived(v, stamp + n) if type(v) is EngagementEvent else v
                   for n, v in enumerate(out)]  # fmt: skip
        return [(out[0].user_id, out)]

    return op.flat_map_batch(step_id, stream, keep)


class LakeSink(FixedPartitionedSink[list[Any], LakeState]):
    """Writes batches of lake records (from :func:`lake_batches`) to the lake's datasets. A
    flow writes what it owns: the engagement flow events and views, the learning flow
    impressions."""

    def __init__(
        self,
        flow_id: str,
        parts: int,
        lake: Lake,
        erased: Tombstones | None = None,
    ) -> None:
        self.flow_id, self.parts = flow_id, max(parts, 1)
        self.lake, self.erased = lake, erased

    def list_parts(self) -> list[str]:
        """Every part, listed by every worker; Bytewax gives each to one."""
        return [f"{self.flow_id}-{n}" for n in range(self.parts)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: LakeState | None
    ) -> LakePartition:
        """A part resumed at its next epoch (what later epochs wrote is deleted first)."""
        lake = self.lake
        run, seq = resume_state if resume_state is not None else (new_run(), 0)
        _retried(lambda: lake.settle(for_part, run, seq if resume_state else None))
        return LakePartition(lake, for_part, run, seq, self.erased)


class LakePartition(StatefulSinkPartition[list[Any], LakeState]):
    """One part: the epoch's buffer, written at the epoch's close."""

    def __init__(
        self,
        lake: Lake,
        part: str,
        run: str,
        seq: int,
        erased: Tombstones | None = None,
    ) -> None:
        self.lake, self.part, self.run, self.seq = lake, part, run, seq
        self.erased = erased
        self._buffer: list[LakeRecord] = []

    def write_batch(self, values: list[list[Any]]) -> None:
        """Keep the batches' lake records for the epoch's file."""
        for records in values:
            self._buffer.extend(records)

    def snapshot(self) -> LakeState:
        """Write the epoch's rows, then name the next epoch."""
        self.flush()
        return self.run, self.seq

    def close(self) -> None:
        """Write what the last (finite) epoch left."""
        self.flush()

    def flush(self) -> None:
        """Write the buffer as this epoch's files (journal first), retrying storage errors."""
        records, self._buffer = self._buffer, []
        erased = self.erased
        if erased is not None and len(erased):
            records = [r for r in records if not erased.covers(r.user_id, _ts(r))]
        seq, self.seq = self.seq, self.seq + 1
        if seq % JOURNAL_MARGIN == 0 and seq:  # also while idle, so a quiet hour compacts
            _retried(lambda: self.lake.forget_journals(self.part, self.run, seq - JOURNAL_MARGIN))
        if not records:
            return
        by_dataset: dict[Any, list[LakeRecord]] = {}
        for r in records:
            by_dataset.setdefault(dataset_of(r), []).append(r)
        started = time.perf_counter()
        files = _retried(lambda: self.lake.write_epoch(self.part, self.run, seq, by_dataset))
        LAKE_WRITE.observe(time.perf_counter() - started)
        for dataset, rows in by_dataset.items():
            LAKE_ROWS.labels(dataset=dataset.name).inc(len(rows))
        for f in files:
            LAKE_FILES.labels(dataset=f.split("/", 1)[0]).inc()


def _ts(record: LakeRecord) -> int:
    return record.end_ts if isinstance(record, Segment) else record.ts


def _retried(fn: Callable[[], Any]) -> Any:
    """Call `fn`, retrying storage errors (OSError, fsspec's and botocore's) with backoff."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == ATTEMPTS or not _transient(exc):
                if _transient(exc):
                    raise StoreUnavailableError(
                        f"lake unreachable after {ATTEMPTS} attempts: {exc}"
                    ) from exc
                raise
            STORE_RETRIES.labels(store="lake").inc()
            log.warning("lake write failed (attempt %d of %d): %s", attempt, ATTEMPTS, exc)
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _transient(exc: BaseException) -> bool:
    """Errors of the storage, not of the data: worth a retry."""
    return isinstance(exc, OSError | TimeoutError | ConnectionError) or type(
        exc
    ).__module__.startswith(("botocore", "aiobotocore", "s3fs", "fsspec"))
