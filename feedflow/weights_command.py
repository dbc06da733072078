"""`feedflow weights run|status|publish|rollback|user`: weekly per-user weight versions.

`run` is the weekly job (cron it for Monday after midnight UTC plus the allowed lateness): it
reads the last complete ISO week (or `--week`) from `user.engagement.events` (or the event
lake with `--from-lake`, a week past the topic's retention; or `--input`), writes a new
version and makes it active when, and only when, it is complete. `publish
VERSION` and `rollback` move the active pointer atomically; serving replicas follow within
one refresh round (`FEEDFLOW_SERVING_REFRESH_MS`), no restart. `status` lists every run;
exit code 3 when no version is active.

`run --processes N` computes the same as a keyed Bytewax batch flow of N processes on this
host (:mod:`feedflow.weights_flow`, each with `--workers` workers), so the week's users are
spread over processes instead of held by one; `member` is one process of such a run (this
command starts them; `-i/-a` as for `feedflow flow`). Across hosts, a scheduler runs the
three steps `run --processes` takes: `begin` registers a version and prints it, every host
runs `member VERSION -i K -a ADDRESSES`, and once all exited 0 `complete VERSION` marks it
complete and publishes it (`abort VERSION` marks it failed when one did not).

With the event lake on, every completed run leaves a training snapshot under
`<lake>/weekly/week=<week>/<version>.json` (:mod:`feedflow.weights_audit`): its inputs, a
digest of its outputs, the versions and settings it ran with.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Final

import msgspec
from bytewax.run import cli_main

from feedflow.output import Progress, add_json_flag, emit, when
from feedflow.week_events import WeekInput, erasures, week_payloads
from feedflow.weights_audit import write_snapshot
from feedflow.weights_flow import WeekJob, build_flow
from feedflow.weights_job import (
    begin_cluster_run,
    complete_staged,
    run_week,
    run_week_cluster,
)
from flows.lake_sink import lake_of
from kernel.errors import ConfigError
from kernel.settings import Settings
from operators.weekly_weights import UserWeights, last_complete_week, week_seed, week_span
from state.item_lookup import job_lookup
from state.lake import LakeError
from state.redis_client import JOB, RedisClient, connect
from state.weights_registry import WRITING, Manifest, WeightsRegistry, WeightsStateError

ACTIONS = ("run", "status", "publish", "rollback", "user", "begin", "member", "complete", "abort")
NOT_FOUND: Final = 3
EXIT_CODES: Final = {NOT_FOUND: "status: no version is active; user: no weights for the user"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow weights`."""
    p = sub.add_parser(
        "weights",
        description="Compute a week's per-user ranking weights and cold-start lists as a new "
        "version, list versions, or move the active pointer (atomic, no restart).",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument(
        "target", nargs="?", help="publish, member, complete, abort: the VERSION; user: the user_id"
    )
    p.add_argument("--week", help="run, begin: ISO week YYYY-Www (default: the last complete one)")
    p.add_argument("--input", type=Path, help="run, member: read events from this JSONL file")
    p.add_argument("--from-lake", action="store_true",
                   help="run, begin, member: read the week from the event lake")  # fmt: skip
    p.add_argument(
        "--no-publish", action="store_true", help="run, complete: leave the pointer alone"
    )
    p.add_argument(
        "--processes",
        type=int,
        help="run: as a Bytewax batch flow of N processes on this host (default: in this process)",
    )
    p.add_argument("--workers", type=int, help="run --processes, member: workers per process")
    p.add_argument("--process-id", "-i", type=int, help="member: this process's index")
    p.add_argument("--addresses", "-a", help='member: cluster addresses, "h0:p0;h1:p1;..."')
    p.add_argument("--version", dest="weights_version", help="user: a version (default active)")
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow weights` action; returns the exit code."""
    settings.require("redis_url")
    client = connect(settings.redis_url, JOB)
    registry = WeightsRegistry(client, settings.weights_ttl_days * 86_400)
    try:
        if args.action == "status":
            report = registry.status()
            emit(report, args.json, view(report))
            return 0 if report["active"] else NOT_FOUND
        if args.action == "publish":
            if not args.target:
                raise WeightsStateError("publish needs a VERSION (see `feedflow weights status`)")
            previous = registry.publish(args.target)
            emit({"active": args.target, "previous": previous}, args.json)
            return 0
        if args.action == "rollback":
            left, now = registry.rollback()
            emit({"active": now, "previous": left}, args.json)
            return 0
        if args.action == "user":
            if not args.target:
                raise WeightsStateError("user needs a user_id")
            weights = registry.user_weights(args.target, args.weights_version)
            emit({"user_id": args.target, "weights": _plain(weights)}, args.json)
            return 0 if weights is not None else NOT_FOUND
        if args.action == "begin":
            week, source = _week(args, settings), _input(args).name
            emit({"version": begin_cluster_run(registry, settings, week, source), "week": week},
                 args.json)  # fmt: skip
            return 0
        if args.action == "member":
            return _member(args, settings, registry)
        if args.action == "complete":
            result = complete_staged(
                registry, _writing(args, registry).version, not args.no_publish
            )
            emit(_audited(settings, client, registry, result.as_dict()), args.json)
            return 0
        if args.action == "abort":
            registry.fail(_writing(args, registry).version, "aborted: a member of the run failed")
            emit({"version": args.target, "state": registry.get(args.target).state}, args.json)
            return 0
        return _run(args, settings, client, registry)
    finally:
        client.close()


def view(report: dict[str, Any]) -> dict[str, Any]:
    """The status for people: a row per version, times in UTC, newest first."""
    rows = [
        {
            "version": v["version"],
            "state": v["state"] + (" (expired)" if v["expired"] else ""),
            "active": v["active"],
            "users": v["users"],
            "events": v["events"],
            "cohorts": v["cohorts"],
            "created": when(v["created_ms"]),
            "source": v["source"],
            **({"error": v["error"]} if "error" in v else {}),
        }
        for v in report["versions"]
    ]
    return {"active": report["active"] or "none", "versions": rows or "none yet"}


def _plain(weights: UserWeights | None) -> dict[str, Any] | None:
    """Field names and values (the stored form is a positional array)."""
    if weights is None:
        return None
    return {n: msgspec.to_builtins(getattr(weights, n)) for n in weights.__struct_fields__}


def _run(
    args: argparse.Namespace, settings: Settings, client: RedisClient, registry: WeightsRegistry
) -> int:
    week = _week(args, settings)
    if args.processes is not None:
        if args.processes < 1:
            raise ConfigError("--processes must be at least 1")
        given = _input(args)
        if given.path is None and not given.lake:
            settings.require("kafka_bootstrap_servers")
        clustered = run_week_cluster(registry, settings, week, given, args.processes,
                                     publish=not args.no_publish)  # fmt: skip
        emit(_audited(settings, client, registry, clustered.as_dict()), args.json)
        return 0
    start_ms, end_ms = week_span(week)
    payloads, source = week_payloads(settings, _input(args), start_ms, end_ms)
    items = job_lookup(client)
    progress = Progress(f"weights {week}: events")
    result = run_week(
        registry, settings, week, payloads, items, source,
        publish=not args.no_publish, progress=progress.advance, erased=erasures(settings),
        recheck=lambda: erasures(settings),
    )  # fmt: skip
    progress.close()
    emit(_audited(settings, client, registry, result.as_dict()), args.json)
    return 0


def _audited(
    settings: Settings, client: RedisClient, registry: WeightsRegistry, result: dict[str, Any]
) -> dict[str, Any]:
    """The run's result, with where its training snapshot went (none with the lake off).

    Raises:
        WeightsStateError: the snapshot could not be written (the version stays as it is).
    """
    lake = lake_of(settings)
    if lake is None:
        return result | {"snapshot": None}
    try:
        return result | {"snapshot": write_snapshot(lake, client, registry, settings, result)}
    except (OSError, LakeError) as exc:
        raise WeightsStateError(
            f"weights {result['version']} is complete, but its training snapshot could not be "
            f"written to the lake: {exc}"
        ) from exc


def _input(args: argparse.Namespace) -> WeekInput:
    """--input or --from-lake (not both), else the topic."""
    if args.input is not None and args.from_lake:
        raise ConfigError("--input and --from-lake are two inputs: give one")
    return WeekInput(args.input, args.from_lake)


def _week(args: argparse.Namespace, settings: Settings) -> str:
    """--week, else the last complete week (allowing for late events)."""
    now_ms = int(time.time() * 1000)
    return str(args.week or last_complete_week(now_ms, settings.allowed_lateness_s * 1000))


def _writing(args: argparse.Namespace, registry: WeightsRegistry) -> Manifest:
    """The manifest of the VERSION argument, a version still being written."""
    if not args.target:
        raise WeightsStateError(f"{args.action} needs the VERSION `weights begin` printed")
    manifest = registry.get(args.target)
    if manifest.state != WRITING:
        raise WeightsStateError(f"weights version {args.target} is {manifest.state}, not {WRITING}")
    return manifest


def _member(args: argparse.Namespace, settings: Settings, registry: WeightsRegistry) -> int:
    """One process of a clustered run: started by `run --processes N`, or on each host after
    `begin` (the week is the version's)."""
    manifest = _writing(args, registry)
    version = manifest.version
    if (args.process_id is None) != (args.addresses is None):
        raise ConfigError("--process-id and --addresses go together")
    if args.week and args.week != manifest.week:
        raise ConfigError(f"version {version} is of {manifest.week}, not {args.week}")
    start_ms, end_ms = week_span(manifest.week)
    job = WeekJob(version, start_ms, end_ms, week_seed(manifest.week), _input(args))
    cli_main(
        build_flow(settings, job),
        workers_per_process=settings.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if args.addresses else None,
    )
    return 0
