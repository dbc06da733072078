"""`feedflow features catalogue|export`: the feature catalogue; point-in-time training rows.

`catalogue`: every feature's definition under the platform's names. `--markdown` prints the
page `docs/features.md` is (`feedflow features catalogue --markdown > docs/features.md`);
`--json` the same as JSON; plain, a table with one row per feature.

`export --from T --to T --out FILE`: every item served in [from, to) (the lake's
impressions) with the user's and the item's features as they were when it was served, the
served feature row and the outcome label (:mod:`operators.point_in_time`), as Parquet. The
replay reads the lake's events from `--lookback-days` (default the user TTL, 35 days) before
`from` to the label window after `to`; item metadata comes from the item store in Redis.
T is epoch milliseconds or an ISO time (UTC unless it says otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feedflow.output import add_json_flag, emit
from flows.engagement import item_lookup
from flows.lake_sink import lake_of
from kernel.errors import ConfigError
from kernel.settings import Settings
from operators.feature_catalogue import CATALOGUE, markdown
from operators.point_in_time import training_rows
from state.lake import in_arrival_order, unique
from state.lake_schema import EVENTS, IMPRESSIONS, impressions_of, record_of


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow features`."""
    p = sub.add_parser(
        "features",
        description="The feature catalogue: names, types, windows, sources and where each "
        "feature is stored.",
    )
    p.add_argument("action", choices=["catalogue", "export"])
    p.add_argument("--markdown", action="store_true", help="print the docs/features.md page")
    add_json_flag(p)
    p.add_argument("--from", dest="start", help="export: first impression time (ms or ISO)")
    p.add_argument("--to", dest="end", help="export: end of the impressions, exclusive")
    p.add_argument("--out", help="export: the Parquet file to write")
    p.add_argument("--lookback-days", type=float, help="export: events read before --from")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow features catalogue|export`; returns the exit code."""
    if args.action == "export":
        return _export(args, settings)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    fields = [k for k in CATALOGUE[0]._fields if k != "value"]
    shown = ("name", "entity", "window", "description")
    data = {"features": [{k: getattr(f, k) for k in fields} for f in CATALOGUE]}
    emit(data, args.json, [{k: getattr(f, k) for k in shown} for f in CATALOGUE])
    return 0


def parse_time(text: str) -> int:
    """Epoch milliseconds from milliseconds or an ISO time (UTC unless it says otherwise).

    Example:
        >>> parse_time("2025-12-05T00:00:00"), parse_time("1764892800000")
        (1764892800000, 1764892800000)
    """
    if text.isdigit():
        return int(text)
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.start and args.end and args.out):
        raise ConfigError("features export needs --from, --to and --out")
    settings.require("redis_url")
    lake = lake_of(settings)
    if lake is None:
        raise ConfigError("the lake is off (FEEDFLOW_LAKE_ENABLED=false): nothing to export from")
    start, end = parse_time(args.start), parse_time(args.end)
    days = settings.user_ttl_days if args.lookback_days is None else args.lookback_days
    after_ms = (settings.label_window_s + settings.label_lateness_s) * 1000
    feeds = unique(IMPRESSIONS, lake.read(IMPRESSIONS, start, end))
    read = lake.read(EVENTS, start - int(days * 86_400_000), end + after_ms)
    events = unique(EVENTS, in_arrival_order(read))
    rows = training_rows(
        settings,
        item_lookup(settings),
        [record_of(EVENTS, r) for r in events.to_pylist()],
        impressions_of(feeds),
    )
    flat = [_flat(r) for r in rows]
    names = list(dict.fromkeys(k for r in flat for k in r))  # from_pylist reads row 0's only
    table = pa.Table.from_pydict({k: [r.get(k) for r in flat] for k in names})
    pq.write_table(table, args.out, compression="zstd")
    labelled = sum(r["label"] is not None for r in rows)
    served = len({r["request_id"] for r in rows})
    summary = {"rows": len(rows), "labelled": labelled, "impressions": served}
    emit(summary | {"events_read": events.num_rows, "out": args.out}, args.json)
    return 0


# Features whose values are lists of pairs (continue watching: [media, position]).
_PAIRS = frozenset(f"{f.entity}.{f.name}" for f in CATALOGUE if f.type.startswith("list[("))


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Lists of pairs as JSON text (Parquet columns hold one type)."""
    return {k: json.dumps(v) if k in _PAIRS else v for k, v in row.items()}
