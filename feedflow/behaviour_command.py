"""`feedflow behaviour run|status|publish`: versions of the behaviour space (item vectors
learned from engagement).

`run` is the weekly job (cron it next to `feedflow weights run`): it reads every event
`user.engagement.events` retains (or `--input`), learns a new version and makes it active
once it is complete. `publish VERSION` moves the pointer back or forth (atomic; serving
replicas follow within one refresh round). `status` lists the versions; exit code 3 when
none is active.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Final

from feedflow import behaviour_job
from feedflow.output import Progress, add_json_flag, emit, when
from feedflow.week_events import WeekInput, erasures, week_payloads
from kernel.settings import Settings
from state.behaviour_store import BehaviourStateError, BehaviourStore, describe
from state.index_replica import snapshot_store
from state.item_lookup import job_lookup
from state.redis_client import JOB, RedisClient, connect

ACTIONS = ("run", "status", "publish")
NONE: Final = 3
EXIT_CODES: Final = {NONE: "status: no version is active; run: nothing learned, no version written"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow behaviour`."""
    p = sub.add_parser(
        "behaviour",
        description="Learn item vectors from the engagement the topic retains as a new "
        "version of the behaviour space, list versions, or move the active pointer.",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("target", nargs="?", help="publish: the VERSION")
    p.add_argument("--input", type=Path, help="run: read events from this JSONL file")
    p.add_argument("--no-publish", action="store_true", help="run: leave the pointer alone")
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow behaviour` action; returns the exit code."""
    settings.require("redis_url")
    client = connect(settings.redis_url, JOB)
    store = BehaviourStore(client, snapshot_store(settings))
    try:
        if args.action == "status":
            active = store.active()
            versions = [describe(v) for _, v in sorted(store.versions().items())]
            emit({"active": active, "versions": versions}, args.json, view(active, versions))
            return 0 if active else NONE
        if args.action == "publish":
            if not args.target:
                raise BehaviourStateError(
                    "publish needs a VERSION (see `feedflow behaviour status`)"
                )
            previous = store.active()
            store.activate(args.target)
            emit({"active": args.target, "previous": previous}, args.json)
            return 0
        return _run(args, settings, client, store)
    finally:
        client.close()


def _run(
    args: argparse.Namespace, settings: Settings, client: RedisClient, store: BehaviourStore
) -> int:
    payloads, _ = week_payloads(settings, WeekInput(args.input), 0)  # 0: all the topic retains
    items = job_lookup(client)
    progress = Progress("behaviour: events")
    result = behaviour_job.run(
        store, settings, payloads, items, publish=not args.no_publish, progress=progress.advance,
        erased=erasures(settings),
    )  # fmt: skip
    progress.close()
    emit(result.as_dict(), args.json)
    return 0 if result.version is not None else NONE


def view(active: str | None, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The status for people: a row per version, creation times in UTC."""
    rows = [
        {k: v for k, v in d.items() if k != "created_ms"} | {"created": when(d["created_ms"])}
        for d in versions
    ]
    return {"active": active or "none", "versions": rows or "none yet"}
