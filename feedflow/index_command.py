"""`feedflow index status|rebuild|retire`: index versions, sizes, freshness; blue/green rebuild.

`rebuild` builds a new version beside the active one (another encoder, dimension or simply a
fresh graph), and the content flow's writer flips the active pointer when it has caught up;
readers move over whole. `retire` deletes a retired version's log, vectors and snapshots.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Final

from feedflow.output import Progress, add_json_flag, duration, emit
from kernel.errors import ConfigError
from kernel.settings import Settings
from state.index_keys import IndexKeys
from state.index_rebuild import rebuild, retire, status
from state.index_replica import IndexParams, snapshot_store
from state.redis_client import JOB, RedisClient, connect

NONE_ACTIVE: Final = 3
EXIT_CODES: Final = {NONE_ACTIVE: "status: no index version is active yet"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow index`."""
    p = sub.add_parser(
        "index",
        description="Inspect the vector index, rebuild it beside the active version and flip "
        "atomically, or delete a retired version.",
    )
    p.add_argument("action", choices=["status", "rebuild", "retire"])
    p.add_argument("--encoder", help="rebuild: encoder name (default FEEDFLOW_ENCODER)")
    p.add_argument("--dim", type=int, help="rebuild: dimension (default FEEDFLOW_EMBEDDING_DIM)")
    p.add_argument(
        "--wait", type=float, default=300.0, help="rebuild: seconds to wait for the flip"
    )
    p.add_argument(
        "--retire-after",
        type=float,
        default=None,
        help="rebuild: retire the old version this many seconds after the flip",
    )
    p.add_argument("--version", dest="index_version", help="retire: the version to delete")
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow index` action; returns the exit code."""
    settings.require("redis_url")
    client = connect(settings.redis_url, JOB)
    store, keys = snapshot_store(settings), IndexKeys()
    try:
        if args.action == "status":
            report = status(client, store, keys)
            emit(report, args.json, view(report))
            return 0 if report["active"] else NONE_ACTIVE
        if args.action == "retire":
            if not args.index_version:
                raise ConfigError("retire needs --version (see `feedflow index status`)")
            dropped = retire(client, store, args.index_version, keys)
            emit({"retired": args.index_version, "vectors_deleted": dropped}, args.json)
            return 0
        return _rebuild(args, settings, client, keys)
    finally:
        client.close()


def view(report: dict[str, Any]) -> dict[str, Any]:
    """The status for people: a row per version (named by encoder and dimension), the live
    and the snapshot's item counts side by side."""
    rows = {}
    for name, v in report["versions"].items():
        live, snapshot = v["live"] or {}, v["snapshot"] or {}
        age, changed = snapshot.get("age_s"), v["last_change_age_s"]
        rows[name] = {
            "state": v["state"],
            "live items": live.get("items"),
            "snapshot items": snapshot.get("items"),
            "snapshot age": None if age is None else duration(age),
            "log entries": v["log_entries"],
            "last change": None if changed is None else f"{duration(changed)} ago",
        }
    return {
        "active": report["active"] or "none",
        "writer": "alive" if report["writer_alive"] else "not running",
        "retired": report["retired"],
        "versions": rows,
    }


def _rebuild(
    args: argparse.Namespace, settings: Settings, client: RedisClient, keys: IndexKeys
) -> int:
    store = snapshot_store(settings)
    progress = Progress("encoding and indexing items")
    done = rebuild(
        client,
        store,
        IndexParams.from_settings(settings, threads=2),
        args.encoder or settings.encoder,
        args.dim or settings.embedding_dim,
        keys=keys,
        wait_s=args.wait,
        progress=progress.advance,
        sized=progress.expect,
    )
    progress.close()
    result = {
        "version": done.version,
        "previous": done.previous,
        "items": done.items,
        "build_s": round(done.build_s, 2),
        "flipped_by": done.flipped_by,
    }
    if args.retire_after is not None:
        time.sleep(args.retire_after)
        result["retired_vectors"] = retire(client, store, done.previous, keys)
    emit(result, args.json)
    return 0
