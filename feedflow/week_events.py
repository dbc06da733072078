"""Where a weekly run reads its week of engagement events: the topic, the event lake, or a file.

From Kafka (:func:`flows.topic_reader.read_topic`), each partition of
`user.engagement.events` is read from the first offset at or after the week's start, less the
allowed lateness (the local broker cannot seek by time and answers with the beginning), up to
its end at the time of reading; the aggregation keeps the events stamped inside
the week. It does not stop at the first message stamped after the week: message timestamps
are the events' own and need not rise along a partition (a broker that cannot seek by time
serves older traffic first, and a replayed backfill can follow newer events), so an early
stop could skip part of the week. Reading past the week costs at most the day or so between
the week's end and the run. Keep the topic's retention above eight days so the whole week is
still there when the run starts. A file holds the simulator's `--out` lines
(`{"topic", "key", "ts", "value"}`) or one raw event per line (a backfill or a replay).

From the event lake (`--from-lake`, :func:`lake_events`), the week's rows are read in the order
the engagement flow read them (:func:`state.lake.in_arrival_order`), one per event id, so a
week stays reproducible after the topic's retention: the same events, in each user's order,
as the topic gives, hence the same weights. The lake holds valid events only (nothing to
count as `invalid`) and only the week (nothing `outside` it). The week is read into memory
(the columns of its events, ~100 bytes each); a run of `--processes N` spreads the users
over N processes, each reading the week and keeping its own.

Payloads that fail validation are counted (`invalid`) and skipped: the engagement flow
already sent them to the dead-letter topic when they first arrived. Events of erased users
(stamped at or before their erasure, :mod:`operators.erasure`) are counted (`erased`) and
skipped, so a weekly run never brings a forgotten user back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from flows.erasure_in import tombstones
from flows.lake_sink import lake_of
from flows.topic_reader import TopicReadError, read_topic
from kernel.errors import ConfigError, FeedflowError
from kernel.settings import Settings
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_ERASURE,
    EngagementEvent,
    decode_engagement,
)
from operators.erasure import Tombstones
from state.lake import LakeError, in_arrival_order, unique
from state.lake_schema import EVENTS, record_of

IDLE_TIMEOUT_S: Final = 60.0
log = logging.getLogger(__name__)


PROGRESS_EVERY: Final = 10_000


class WeekInputError(FeedflowError):
    """The week's events could not be read (broker unreachable, a file unreadable)."""


@dataclass
class Counts:
    """What a reader saw."""

    invalid: int = 0
    erased: int = 0


def decoded(
    payloads: Iterator[bytes | EngagementEvent], counts: Counts, erased: Tombstones | None = None
) -> Iterator[EngagementEvent]:
    """Valid engagement events of raw payloads (or events read already) not erased; the
    rest only counted."""
    for raw in payloads:
        event = raw if type(raw) is EngagementEvent else decode_engagement(raw)  # type: ignore[arg-type]
        if not isinstance(event, EngagementEvent):
            counts.invalid += 1
        elif erased is not None and erased.covers(event.user_id, event.ts):
            counts.erased += 1
        else:
            yield event


def apply_events(
    payloads: Iterator[bytes | EngagementEvent],
    counts: Counts,
    add: Callable[[EngagementEvent], None],
    erased: Tombstones | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Hand every valid event not erased to `add` (the rest only counted), telling `progress`
    every :data:`PROGRESS_EVERY` events and at the end; how many were handed."""
    n = 0
    for n, event in enumerate(decoded(payloads, counts, erased), 1):
        add(event)
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None:
        progress(n % PROGRESS_EVERY)
    return n


def erasures(settings: Settings) -> Tombstones | None:
    """The users erased so far (from the erasure topic); None, with a warning, when no
    broker is configured (a run over a file on a machine without one).

    Raises:
        WeekInputError: the erasure topic cannot be read: a job that could not honour
            erasures must not run.
    """
    if not settings.kafka_bootstrap_servers:
        log.warning("no KAFKA_BOOTSTRAP_SERVERS: erasures on %s are not applied", TOPIC_ERASURE)
        return None
    try:
        return tombstones(settings)
    except TopicReadError as exc:
        raise WeekInputError(f"erasures: {exc}") from exc


def file_payloads(path: Path) -> Iterator[bytes]:
    """Engagement payloads of a JSONL file (simulator output or one event per line)."""
    try:
        with path.open("rb") as lines:
            for line in lines:
                if not line.strip():
                    continue
                if line.startswith(b'{"topic"'):
                    record = orjson.loads(line)
                    if record.get("topic") == TOPIC_ENGAGEMENT:
                        yield str(record.get("value", "")).encode()
                else:
                    yield line.rstrip(b"\r\n")
    except OSError as exc:
        raise WeekInputError(f"weekly input {path}: {exc}") from exc


@dataclass(frozen=True)
class WeekInput:
    """Where a run reads its events: a JSONL file, the event lake, or (neither) the topic.

    Example:
        >>> WeekInput().name, WeekInput(lake=True).argv, WeekInput(Path("w.jsonl")).name
        ('kafka', ['--from-lake'], 'file:w.jsonl')
    """

    path: Path | None = None
    lake: bool = False

    @property
    def name(self) -> str:
        """How the run's manifest names it: `file:<name>`, `lake` or `kafka`."""
        return f"file:{self.path.name}" if self.path else "lake" if self.lake else "kafka"

    @property
    def argv(self) -> list[str]:
        """The command-line flags that say it (for member processes)."""
        return ["--input", str(self.path)] if self.path else ["--from-lake"] if self.lake else []


def week_payloads(
    settings: Settings, source: WeekInput, start_ms: int, end_ms: int | None = None
) -> tuple[Iterator[bytes | EngagementEvent], str]:
    """A job's input and how to name it: the file, the lake's events of [start, end), else
    the engagement topic from `start_ms` (less the allowed lateness).

    Raises:
        ConfigError: no broker configured for the topic, or no lake for the lake.
    """
    if source.path is not None:
        return file_payloads(source.path), source.name
    if source.lake:
        return lake_events(settings, start_ms, end_ms), source.name
    settings.require("kafka_bootstrap_servers")
    return kafka_payloads(settings, start_ms), source.name


def lake_events(
    settings: Settings,
    start_ms: int,
    end_ms: int | None,
    keep: Callable[[str], bool] | None = None,
) -> Iterator[EngagementEvent]:
    """The lake's events of [start, end) in the order the flow read them, one per event id
    (see module doc); `keep`: only the users it keeps.

    Raises:
        ConfigError: the lake is off.
        WeekInputError: the lake cannot be read.
    """
    lake = lake_of(settings)
    if lake is None:
        raise ConfigError("the lake is off (FEEDFLOW_LAKE_ENABLED=false): no week to read")
    try:
        table = lake.read(EVENTS, start_ms, end_ms)
    except (OSError, LakeError) as exc:
        raise WeekInputError(f"weekly input from the lake: {exc}") from exc
    table = unique(EVENTS, in_arrival_order(table))
    for batch in table.to_batches(PROGRESS_EVERY):
        for row in batch.to_pylist():
            if keep is None or keep(row["user_id"]):
                yield record_of(EVENTS, row)


def kafka_payloads(
    settings: Settings,
    start_ms: int,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    partitions: Collection[int] | None = None,
) -> Iterator[bytes]:
    """Engagement payloads of the week from the topic (see module doc); `partitions`: only
    these (all by default).

    Raises:
        WeekInputError: when the broker cannot be read, or a partition stalls for
            `idle_timeout_s` before its end.
    """
    since_ms = max(start_ms - settings.allowed_lateness_s * 1000, 0)
    try:
        yield from read_topic(
            settings.kafka_bootstrap_servers, TOPIC_ENGAGEMENT, since_ms, None, idle_timeout_s,
            settings.kafka_client, partitions,
        )  # fmt: skip
    except TopicReadError as exc:
        raise WeekInputError(f"weekly input: {exc}") from exc
