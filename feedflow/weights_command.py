"""`feedflow weights run|status|publish|rollback|user`: weekly per-user weight versions.

`run` is the weekly job (cron it for Monday after midnight UTC plus the allowed lateness): it
reads the last complete ISO week (or `--week`) from `user.engagement.events` (or `--input`),
writes a new version and makes it active when, and only when, it is complete. `publish
VERSION` and `rollback` move the active pointer atomically; serving replicas follow within
one refresh round (`FEEDFLOW_SERVING_REFRESH_MS`), no restart. `status` lists every run;
exit code 3 when no version is active.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import msgspec

from feedflow.output import Progress, emit
from feedflow.week_events import erasures, week_payloads
from feedflow.weights_job import run_week
from kernel.settings import Settings
from operators.weekly_weights import UserWeights, last_complete_week, week_span
from state.item_lookup import job_lookup
from state.redis_client import JOB, RedisClient, connect
from state.weights_registry import WeightsRegistry, WeightsStateError

ACTIONS = ("run", "status", "publish", "rollback", "user")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow weights`."""
    p = sub.add_parser(
        "weights",
        description="Compute a week's per-user ranking weights and cold-start lists as a new "
        "version, list versions, or move the active pointer (atomic, no restart).",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("target", nargs="?", help="publish: the VERSION; user: the user_id")
    p.add_argument("--week", help="run: ISO week YYYY-Www (default: the last complete one)")
    p.add_argument("--input", type=Path, help="run: read events from this JSONL file")
    p.add_argument("--no-publish", action="store_true", help="run: leave the pointer alone")
    p.add_argument("--version", dest="weights_version", help="user: a version (default active)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow weights` action; returns the exit code."""
    settings.require("redis_url")
    client = connect(settings.redis_url, JOB)
    registry = WeightsRegistry(client, settings.weights_ttl_days * 86_400)
    try:
        if args.action == "status":
            report = registry.status()
            emit(report, args.json)
            return 0 if report["active"] else 3
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
            return 0 if weights is not None else 3
        return _run(args, settings, client, registry)
    finally:
        client.close()


def _plain(weights: UserWeights | None) -> dict[str, Any] | None:
    """Field names and values (the stored form is a positional array)."""
    if weights is None:
        return None
    return {n: msgspec.to_builtins(getattr(weights, n)) for n in weights.__struct_fields__}


def _run(
    args: argparse.Namespace, settings: Settings, client: RedisClient, registry: WeightsRegistry
) -> int:
    now_ms = int(time.time() * 1000)
    week = args.week or last_complete_week(now_ms, settings.allowed_lateness_s * 1000)
    start_ms = week_span(week)[0]
    payloads, source = week_payloads(settings, args.input, start_ms)
    items = job_lookup(client)
    progress = Progress(f"weights {week}: events")
    result = run_week(
        registry, settings, week, payloads, items, source,
        publish=not args.no_publish, progress=progress.advance, erased=erasures(settings),
        recheck=lambda: erasures(settings),
    )  # fmt: skip
    progress.close()
    emit(result.as_dict(), args.json)
    return 0
