"""The weekly run: one week of engagement → a new version of per-user weights and cohort lists.

In order: register the version (`writing`), read and tally the week
(:class:`~operators.week_aggregate.WeekAggregator`), compute the week's prior, train the
cold-start model, write every user's shrunk weights and the cohort lists, mark the version
`complete` with its counts, and only then (unless told not to) move the active pointer. Any
exception on the way marks the version `failed` with the error and re-raises; the pointer
never moves to a version that did not finish.

:func:`run_week_cluster` does the same as a Bytewax batch flow (:mod:`feedflow.weights_flow`)
of N processes: this process registers the version, launches the members, and once every
one exited 0 marks the version complete with the counts they staged; a member that fails
stops the others and fails the version. Across hosts the same three steps are commands of
their own (`weights begin`, `member` on every host, `complete`): :func:`begin_cluster_run` and
:func:`complete_staged`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from feedflow.week_events import Counts, WeekInput, apply_events
from kernel.errors import FeedflowError
from kernel.settings import Settings
from operators.cold_start import CohortModel
from operators.contracts import EngagementEvent
from operators.erasure import Tombstones
from operators.item_info import ItemLookup
from operators.week_aggregate import WeekAggregator
from operators.weekly_weights import (
    UserWeights,
    WeekPrior,
    WeekTally,
    shrink,
    week_prior,
    week_seed,
    week_span,
)
from state.weights_registry import RunSummary, WeightsRegistry

log = logging.getLogger(__name__)


class WeightsRunError(FeedflowError):
    """A weekly run done as a cluster did not finish."""


@dataclass(frozen=True)
class RunResult:
    """What one run did."""

    version: str
    week: str
    users: int
    events: int
    invalid: int
    erased: int
    late: int
    outside_week: int
    duplicates: int
    cohorts: int
    published: bool
    previous: str | None
    took_s: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `feedflow.output.emit`."""
        return asdict(self)


def run_week(
    registry: WeightsRegistry,
    settings: Settings,
    week: str,
    payloads: Iterator[bytes | EngagementEvent],
    items: ItemLookup,
    source: str,
    publish: bool = True,
    progress: Callable[[int], None] | None = None,
    erased: Tombstones | None = None,
    recheck: Callable[[], Tombstones | None] | None = None,
) -> RunResult:
    """Compute, write and (optionally) publish the weights of `week` (see module doc);
    `erased`: users whose events must not count; `recheck`: the erasures again, read just
    before the users are written (a user forgotten while the run read the week is left out,
    or `forget` would have deleted keys this run then writes)."""
    started = time.monotonic()
    start_ms, end_ms = week_span(week)
    manifest = registry.begin(week, source, settings.weights_prior_strength)
    version = manifest.version
    log.info("weights %s: reading %s from %s", version, week, source)
    try:
        counts = Counts()
        week_agg = WeekAggregator(settings, items, start_ms, end_ms)
        apply_events(payloads, counts, week_agg.add, erased, progress)
        tallies = week_agg.finish()
        late = recheck() if recheck is not None else None
        if late is not None:
            tallies = {u: t for u, t in tallies.items() if not late.covers(u, end_ms)}
        prior = week_prior(tallies[u] for u in sorted(tallies))  # in any input's order
        lists = CohortModel(seed=week_seed(week)).fit(week_agg.cohorts).top_lists()
        users = registry.write_users(version, _shrunk(tallies, prior, settings))
        cohorts = registry.write_cohorts(version, lists)
        summary = RunSummary(users=users, events=week_agg.events, invalid=counts.invalid,
                             erased=counts.erased, late=week_agg.late, outside=week_agg.outside,
                             duplicates=week_agg.duplicates, cohorts=cohorts,
                             prior=prior)  # fmt: skip
        registry.complete(version, users, summary.events, cohorts, prior)
    except BaseException as exc:
        _fail(registry, version, exc)
        raise
    return _concluded(registry, week, version, summary, publish, time.monotonic() - started)


def run_week_cluster(
    registry: WeightsRegistry,
    settings: Settings,
    week: str,
    source: WeekInput,
    processes: int,
    publish: bool = True,
) -> RunResult:
    """:func:`run_week` as a cluster of `processes` member processes on this host, each
    with `settings.workers` workers (see module doc).

    Raises:
        WeightsRunError: a member failed, or the members staged no summary.
    """
    version = begin_cluster_run(registry, settings, week, source.name)
    log.info("weights %s: %d member process(es) on this host", version, processes)
    try:
        _run_members(version, week, source, processes, settings.workers)
    except BaseException as exc:
        _fail(registry, version, exc)
        raise
    return complete_staged(registry, version, publish)


def begin_cluster_run(registry: WeightsRegistry, settings: Settings, week: str,
                      source: str) -> str:  # fmt: skip
    """Register a version for members started elsewhere (`weights begin`); its name."""
    version = registry.begin(week, source, settings.weights_prior_strength).version
    log.info("weights %s: registered for %s from %s; start its members", version, week, source)
    return version


def complete_staged(registry: WeightsRegistry, version: str, publish: bool = True) -> RunResult:
    """Mark a version whose members all exited 0 complete, with the counts they staged, and
    publish it if asked; a version without a staged summary is marked failed.

    Raises:
        WeightsRunError: the members staged no summary.
    """
    manifest = registry.get(version)
    try:
        summary = registry.staged(version)
        if summary is None:
            raise WeightsRunError(f"weights {version}: the members staged no summary")
        registry.complete(version, summary.users, summary.events, summary.cohorts,
                          summary.prior)  # fmt: skip
    except BaseException as exc:
        _fail(registry, version, exc)
        raise
    took_s = (time.time() * 1000 - manifest.created_ms) / 1000  # since `begin`, on any host
    return _concluded(registry, manifest.week, version, summary, publish, took_s)


def _concluded(
    registry: WeightsRegistry,
    week: str,
    version: str,
    summary: RunSummary,
    publish: bool,
    took_s: float,
) -> RunResult:
    """Publish a complete version if asked; what the run did."""
    previous = registry.publish(version) if publish else None
    log.info("weights %s: %d users, %d cohort lists, published=%s", version, summary.users,
             summary.cohorts, publish)  # fmt: skip
    return RunResult(
        version=version,
        week=week,
        users=summary.users,
        events=summary.events,
        invalid=summary.invalid,
        erased=summary.erased,
        late=summary.late,
        outside_week=summary.outside,
        duplicates=summary.duplicates,
        cohorts=summary.cohorts,
        published=publish,
        previous=previous,
        took_s=round(took_s, 2),
    )


def _run_members(version: str, week: str, source: WeekInput, processes: int, workers: int) -> None:
    """Start the members, wait for all; the first failure stops the rest."""
    from feedflow.stack import LOOPBACK, free_port
    from kernel.processes import die_with_parent

    addresses = ";".join(f"{LOOPBACK}:{free_port()}" for _ in range(processes))
    own = ["weights", "member", version, "--week", week, "--workers", str(workers)]
    own += source.argv
    members = []
    for i in range(processes):
        cluster = ["-i", str(i), "-a", addresses] if processes > 1 else []
        argv = [sys.executable, "-m", "feedflow.cli", *own, *cluster]
        # Members' stdout (Bytewax prints connection retries there) goes to stderr: stdout
        # is this command's result. preexec_fn is unsafe only beside other threads; none here.
        member = subprocess.Popen(
            argv,
            stdout=2,  # this process's standard error, whatever sys.stderr is now
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        members.append(member)
    try:
        while members:
            for proc in list(members):
                code = proc.poll()
                if code is None:
                    continue
                if code != 0:
                    raise WeightsRunError(f"weights {version}: member pid {proc.pid} exited "
                                          f"with {code}")  # fmt: skip
                members.remove(proc)
            time.sleep(0.2)
    finally:
        for proc in members:
            proc.terminate()
        for proc in members:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _shrunk(
    tallies: dict[str, WeekTally], prior: WeekPrior, settings: Settings
) -> Iterator[tuple[str, UserWeights]]:
    strength = settings.weights_prior_strength
    for user_id, tally in tallies.items():
        if tally.mass > 0.0:  # nothing positive: the user keeps the defaults
            yield user_id, shrink(tally, prior, strength)


def _fail(registry: WeightsRegistry, version: str, exc: BaseException) -> None:
    """Mark the run failed if Redis lets us; the original error is what the caller sees."""
    try:
        registry.fail(version, f"{type(exc).__name__}: {exc}")
    except Exception as marking:  # Redis itself may be the failure
        log.error("weights %s: could not record the failure: %s", version, marking)
