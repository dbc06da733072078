"""`feedflow lake status|compact`: the event lake's datasets, and its upkeep.

`status` lists each dataset's hours, files, rows and bytes. `compact` merges the small files
of every hour that ended at least `--settle` seconds ago (late events reach past hours, and
a later compaction merges them in), then deletes the hours older than
`FEEDFLOW_LAKE_RETENTION_DAYS`. Run it hourly (cron, a Kubernetes CronJob); it is safe to run
while the flows write and to run again after it was stopped half-way.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

import pyarrow.parquet as pq

from feedflow.output import add_json_flag, emit
from flows.lake_sink import lake_of
from kernel.errors import ConfigError
from kernel.settings import Settings
from state.lake import HOUR_MS, Lake
from state.lake_schema import DATASETS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow lake`."""
    p = sub.add_parser(
        "lake",
        description="The event lake (Parquet by event hour): what it holds, and compaction "
        "plus retention (run `compact` hourly).",
    )
    p.add_argument("action", choices=["status", "compact"])
    p.add_argument(
        "--settle",
        type=float,
        default=600.0,
        help="compact: only hours that ended at least this many seconds ago (default 600)",
    )
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow lake` action; returns the exit code."""
    lake = lake_of(settings)
    if lake is None:
        raise ConfigError("the lake is off (FEEDFLOW_LAKE_ENABLED=false)")
    if args.action == "status":
        emit(status(lake), args.json)
        return 0
    emit(compact(lake, settings, args.settle), args.json)
    return 0


def status(lake: Lake) -> dict[str, Any]:
    """Hours, files, rows and bytes per dataset (rows from the files' footers)."""
    out: dict[str, Any] = {"lake": lake.root}
    for name, dataset in DATASETS.items():
        files = lake.files(dataset)
        rows = size = 0
        for path in files:
            raw = lake.fs.cat_file(path)
            rows += pq.ParquetFile(io.BytesIO(raw)).metadata.num_rows
            size += len(raw)
        hours = lake.hours(dataset)
        out[name] = {
            "hours": len(hours),
            "files": len(files),
            "rows": rows,
            "bytes": size,
            "first_hour": _iso(hours[0]) if hours else None,
            "last_hour": _iso(hours[-1]) if hours else None,
        }
    return out


def compact(lake: Lake, settings: Settings, settle_s: float) -> dict[str, Any]:
    """Compact every dataset's settled hours, then apply the retention."""
    now_ms = int(time.time() * 1000)
    before = now_ms - int(settle_s * 1000)
    out: dict[str, Any] = {}
    for name, dataset in DATASETS.items():
        done = lake.compact(dataset, before)
        out[name] = {"hours": done.hours, "files_merged": done.files, "rows": done.rows}
    retention_ms = settings.lake_retention_days * 86_400_000
    out["hours_expired"] = lake.expire(now_ms - retention_ms)
    return out


def _iso(hour: int) -> str:
    return time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(hour * HOUR_MS / 1000))
