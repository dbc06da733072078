"""The weekly run as a keyed Bytewax batch flow, so it scales with the cluster's processes
(`feedflow weights run --processes N`) instead of needing one large box.

    input(week)  the engagement topic's partitions, each read up to its end when the run began
                 (or one JSONL file)
      └ route, per batch: decode; invalid and erased payloads only counted; events grouped by
        the shard of their user
          └ key(shard) ─ tally: one WeekAggregator per shard; at EOF, its users' tallies ───┐
                           └ partial sums (prior, cohort cells, counts) ─ key(run)           │
                               └ reduce at EOF ─ summary ─┬─ cohort lists, run counts → Redis│
                                                          └ the prior, once per shard ───────┤
                                                         key(shard) ─ shrink: tallies × prior ┘
                                                           └ per-user weights ──────────────→ Redis

A user's events all reach one shard (:data:`SHARDS` keys, which Bytewax spreads over every
worker of every process), in the order of their partition (the topic is keyed by user), so a
user's tally is what the single-process run (:func:`feedflow.weights_job.run_week`) computes.
The prior and the cohort tally are sums over shards: equal to a single pass's up to float
rounding. Memory per process is its shards' users' tallies; the cohort model is fitted once,
on one worker (cohorts × the heaviest items: small).

No recovery store: a batch run that fails is marked `failed` by the command that launched
it, and run again. The command registers the version before the members start, and marks it
complete (with the counts the summary step staged in Redis) after every member exited 0.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from feedflow.week_events import (
    Counts,
    WeekInput,
    decoded,
    erasures,
    file_payloads,
    kafka_payloads,
    lake_events,
)
from flows.topic_reader import TopicReadError, partitions_of
from kernel.settings import Settings
from operators.cold_start import CohortModel, CohortTally
from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent
from operators.dedup import id_hash32
from operators.erasure import Tombstones
from operators.item_info import ItemLookup
from operators.week_aggregate import WeekAggregator
from operators.weekly_weights import PriorSums, UserWeights, WeekPrior, WeekTally, shrink
from state.item_lookup import job_lookup
from state.redis_client import JOB, RedisClient, connect
from state.weights_registry import RunSummary, WeightsRegistry

SHARDS: Final = 256  # keys spread over workers: enough for even shares on tens of workers
RUN: Final = "run"
BATCH: Final = 2_000
FLOW_ID: Final = "weekly"
log = logging.getLogger(__name__)


def shard_of(user_id: str) -> str:
    """The shard key of a user (a hash every process computes alike).

    Example:
        >>> shard_of("alice") == shard_of("alice"), shard_of("alice").startswith("s")
        (True, True)
    """
    return _shard(id_hash32(user_id) % SHARDS)


def _shard(n: int) -> str:
    return f"s{n}"


@dataclass(frozen=True)
class WeekJob:
    """What a member process computes: the version (registered as `writing`), its week's
    bounds, where the events come from, and the cohort model's seed."""

    version: str
    start_ms: int
    end_ms: int
    seed: int
    source: WeekInput = field(default_factory=WeekInput)


@dataclass
class Partial:
    """Sums of some users' week (and of some payloads' counts); partials of disjoint users add."""

    sums: PriorSums = field(default_factory=PriorSums)
    cohorts: CohortTally = field(default_factory=CohortTally)
    events: int = 0
    late: int = 0
    outside: int = 0
    duplicates: int = 0
    invalid: int = 0
    erased: int = 0

    def merge(self, other: Partial) -> Partial:
        """Add `other` into this one; returns self."""
        self.sums.merge(other.sums)
        self.cohorts.merge(other.cohorts)
        self.events += other.events
        self.late += other.late
        self.outside += other.outside
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.erased += other.erased
        return self


@dataclass(frozen=True)
class ShardTallies:
    """Every tally of one shard's users, at the end of the input."""

    tallies: dict[str, WeekTally]


# -- input -----------------------------------------------------------------------------


class _Payloads(StatefulSourcePartition[Any, None]):
    def __init__(self, payloads: Iterator[bytes | EngagementEvent]) -> None:
        self.payloads = payloads

    def next_batch(self) -> list[bytes | EngagementEvent]:
        batch = list(itertools.islice(self.payloads, BATCH))
        if not batch:
            raise StopIteration
        return batch

    def snapshot(self) -> None:
        return None


class WeekSource(FixedPartitionedSource[Any, None]):
    """The week's payloads: one partition per topic partition (each bounded by its end at
    the time it is first read), one for a file, or for the lake one per group of shards
    (`FEEDFLOW_PARTITIONS` of them; each reads the week and keeps its users' events, in the
    order the flow read them)."""

    def __init__(self, settings: Settings, start_ms: int, end_ms: int, source: WeekInput) -> None:
        self.settings, self.start_ms, self.end_ms = settings, start_ms, end_ms
        self.path, self.lake = source.path, source.lake

    def list_parts(self) -> list[str]:
        """Bytewax: the partitions every worker agrees on."""
        if self.path is not None:
            return ["file"]
        if self.lake:
            return [f"lake-{n}" for n in range(max(self.settings.partitions, 1))]
        s = self.settings
        try:
            found = partitions_of(s.kafka_bootstrap_servers, TOPIC_ENGAGEMENT, s.kafka_client)
        except TopicReadError as exc:
            raise RuntimeError(f"weekly input: {exc}") from exc
        return [str(p) for p in found]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Payloads:
        """Bytewax: a reader of one partition."""
        if self.path is not None:
            return _Payloads(file_payloads(self.path))
        if self.lake:
            n, parts = int(for_part.split("-")[1]), max(self.settings.partitions, 1)

            def mine(user_id: str) -> bool:
                return id_hash32(user_id) % SHARDS % parts == n

            return _Payloads(lake_events(self.settings, self.start_ms, self.end_ms, mine))
        return _Payloads(kafka_payloads(self.settings, self.start_ms, partitions=[int(for_part)]))


def _route(erased: Tombstones | None, raws: list[Any]) -> list[tuple[str, Any]]:
    """Valid events grouped by shard; one partial with what was only counted."""
    counts = Counts()
    shards: dict[str, list[EngagementEvent]] = {}
    for event in decoded(iter(raws), counts, erased):
        shards.setdefault(shard_of(event.user_id), []).append(event)
    out: list[tuple[str, Any]] = list(shards.items())
    if counts.invalid or counts.erased:
        out.append((RUN, Partial(invalid=counts.invalid, erased=counts.erased)))
    return out


# -- per shard ---------------------------------------------------------------------------


class _Tally(StatefulLogic[Any, Any, None]):
    """One shard's users: their week, then at EOF their tallies and the shard's partial."""

    def __init__(
        self,
        aggregator: WeekAggregator,
        recheck: Callable[[], Tombstones | None],
    ) -> None:
        self.agg, self.recheck = aggregator, recheck

    def on_item(self, value: list[EngagementEvent]) -> tuple[Iterable[Any], bool]:
        for event in value:
            self.agg.add(event)
        return (), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        agg = self.agg
        tallies = agg.finish()
        late = self.recheck()  # users forgotten while the run read the week are left out
        if late is not None:
            tallies = {u: t for u, t in tallies.items() if not late.covers(u, agg.end_ms)}
        partial = Partial(
            sums=PriorSums.of(tallies.values()),
            cohorts=agg.cohorts,
            events=agg.events,
            late=agg.late,
            outside=agg.outside,
            duplicates=agg.duplicates,
        )
        return [ShardTallies(tallies), partial], StatefulLogic.DISCARD

    def snapshot(self) -> None:
        return None


class _Shrink(StatefulLogic[Any, Any, None]):
    """One shard's tallies, held until the week's prior comes; then its users' weights."""

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.tallies: dict[str, WeekTally] | None = None
        self.prior: WeekPrior | None = None

    def on_item(self, value: ShardTallies | WeekPrior) -> tuple[Iterable[Any], bool]:
        if isinstance(value, ShardTallies):
            self.tallies = value.tallies
        else:
            self.prior = value
        if self.tallies is None or self.prior is None:
            return (), StatefulLogic.RETAIN
        prior, k = self.prior, self.strength
        weights = [(u, shrink(t, prior, k)) for u, t in self.tallies.items() if t.mass > 0.0]
        return [weights], StatefulLogic.DISCARD

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        if self.tallies is not None:  # the summary never came: the run must not complete
            raise RuntimeError("weekly: a shard's tallies got no prior")
        return (), StatefulLogic.DISCARD

    def snapshot(self) -> None:
        return None


# -- the run's summary ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Summary:
    summary: RunSummary
    lists: dict[str, list[str]]


def _summarise(seed: int, partial: Partial) -> _Summary:
    prior = partial.sums.prior()
    lists = CohortModel(seed=seed).fit(partial.cohorts).top_lists()
    summary = RunSummary(
        users=partial.sums.users,
        events=partial.events,
        invalid=partial.invalid,
        erased=partial.erased,
        late=partial.late,
        outside=partial.outside,
        duplicates=partial.duplicates,
        cohorts=len(lists),
        prior=prior,
    )
    return _Summary(summary, {c: list(ids) for c, ids in lists.items()})


class _RegistrySink(DynamicSink[Any]):
    """Writes per-user weights (lists of them) and the summary into the `writing` version."""

    def __init__(self, settings: Settings, version: str) -> None:
        self.settings, self.version = settings, version

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RegistryPartition:
        client = connect(self.settings.redis_url, JOB)
        return _RegistryPartition(client, self.settings.weights_ttl_days * 86_400, self.version)


class _RegistryPartition(StatelessSinkPartition[Any]):
    def __init__(self, client: RedisClient, ttl_s: int, version: str) -> None:
        self.client, self.version = client, version
        self.registry = WeightsRegistry(client, ttl_s)

    def write_batch(self, items: list[Any]) -> None:
        users: list[tuple[str, UserWeights]] = []
        for item in items:
            if isinstance(item, _Summary):
                self.registry.write_cohorts(self.version, item.lists)
                self.registry.stage(self.version, item.summary)
            else:
                users.extend(item)
        if users:
            self.registry.write_users(self.version, users)

    def close(self) -> None:
        self.client.close()


# -- the flow -------------------------------------------------------------------------------


def build_flow(
    settings: Settings,
    job: WeekJob,
    *,
    items: ItemLookup | None = None,
    erased: Tombstones | None = None,
    recheck: Callable[[], Tombstones | None] | None = None,
) -> Dataflow:
    """The weekly flow of `job`; the item lookup and erasures are read here unless given."""
    if items is None:
        items = job_lookup(connect(settings.redis_url, JOB))
    if recheck is None:
        recheck = functools.cache(lambda: erasures(settings))  # once per process, at EOF
    erased = erased if erased is not None else erasures(settings)
    flow = Dataflow(FLOW_ID)
    raws = op.input("week", flow, WeekSource(settings, job.start_ms, job.end_ms, job.source))
    routed = op.flat_map_batch("route", raws, functools.partial(_route, erased))
    events = op.branch("by_kind", routed, lambda kv: isinstance(kv[1], list))

    def tally(_resume: None) -> _Tally:
        return _Tally(WeekAggregator(settings, items, job.start_ms, job.end_ms), recheck)

    shards = cast(Any, events.trues)
    tallied = op.stateful("tally", shards, tally)
    out = op.branch("tallies", tallied, lambda kv: isinstance(kv[1], ShardTallies))
    partials = op.merge("partials", cast(Any, out.falses), cast(Any, events.falses))
    run = op.reduce_final("sum", op.key_on("to_run", op.key_rm("unkey", partials), _run_key),
                          Partial.merge)  # fmt: skip
    summary = op.map("summarise", op.key_rm("run_summary", run),
                     functools.partial(_summarise, job.seed))  # fmt: skip
    priors = op.flat_map("broadcast", summary, _broadcast)
    held = op.merge("to_shrink", cast(Any, out.trues), priors)
    strength = settings.weights_prior_strength
    weights = op.stateful("shrink", cast(Any, held), lambda _resume: _Shrink(strength))
    written: Stream[Any] = op.merge("written", op.key_rm("users", weights), summary)
    op.output("registry", written, _RegistrySink(settings, job.version))
    return flow


def _run_key(_partial: Partial) -> str:
    return RUN


def _broadcast(summary: _Summary) -> list[tuple[str, WeekPrior]]:
    prior = summary.summary.prior
    return [(_shard(n), prior) for n in range(SHARDS)]
