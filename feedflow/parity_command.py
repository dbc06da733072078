"""`feedflow parity`: the online/offline parity monitor (:mod:`feedflow.parity`).

Each round takes the impressions the lake holds for `--window` seconds ending `--delay`
seconds ago (the lake's epochs and the flows' batches must have landed), samples up to
`--sample` of them (the same ones on every run: by a hash of the request id), reads the
events of their users and of everyone who engaged with their items from `--lookback-days`
before (default the user TTL), recomputes the served rows and compares. It prints the
divergence per feature and sets `feedflow_parity_divergence{feature}`.

`--every S` runs a round every S seconds until stopped, each over the S seconds before
(so `--window` defaults to S), serving the metrics on `--metrics-port`: that is how it runs
continuously, beside the flows (a Deployment of one replica, or a systemd service).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import zlib
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import start_http_server

from feedflow.output import add_json_flag, emit, when
from feedflow.parity import CHECKED, Context, ParityConfig, ParityReport, check
from flows.engagement import item_lookup
from flows.lake_sink import lake_of
from kernel.errors import ConfigError
from kernel.metrics import PARITY_DIVERGENCE, PARITY_ROUND, PARITY_ROWS
from kernel.settings import Settings
from operators.ab import HOLDBACK_ARM
from state.ab_config import load_config
from state.index_keys import IndexKeys
from state.item_store import ItemStore
from state.lake import Lake, in_arrival_order, unique
from state.lake_schema import EVENTS, IMPRESSIONS, impressions_of, record_of
from state.redis_client import JOB, connect
from state.weights_registry import WeightsRegistry

log = logging.getLogger(__name__)
EXIT_CODES: Final = {0: "done (--every: stopped by Ctrl-C or SIGTERM)"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow parity`."""
    p = sub.add_parser(
        "parity",
        description="Online/offline parity: recompute a sample of served ranking rows from "
        "the event lake with the same code and report the divergence per feature.",
    )
    p.add_argument("--window", type=float, help="seconds of impressions per round "
                   "(default 300, or --every)")  # fmt: skip
    p.add_argument("--delay", type=float, default=60.0,
                   help="the window ends this many seconds ago (default 60)")  # fmt: skip
    p.add_argument("--sample", type=int, default=200,
                   help="impressions per round, at most (default 200)")  # fmt: skip
    p.add_argument("--lookback-days", type=float, help="events read before the window "
                   "(default the user TTL)")  # fmt: skip
    p.add_argument("--every", type=float, help="run a round every this many seconds, until "
                   "stopped (metrics on --metrics-port)")  # fmt: skip
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow parity`; returns the exit code."""
    settings.require("redis_url")
    lake = lake_of(settings)
    if lake is None:
        raise ConfigError("the lake is off (FEEDFLOW_LAKE_ENABLED=false): nothing to check")
    if args.sample < 1:
        raise ConfigError("--sample must be at least 1")
    window = args.window or args.every or 300.0
    monitor = Monitor(settings, lake, window, args.sample, args.lookback_days)
    if not args.every:
        report = monitor.round(time.time() - args.delay)
        emit(report, args.json, view(report))
        return 0
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            started = time.time()
            out = monitor.round(started - args.delay)
            log.info("parity round: %s", out["divergence"])
            stop.wait(max(0.0, args.every - (time.time() - started)))
    except KeyboardInterrupt:
        pass
    return 0


def view(report: dict[str, Any]) -> dict[str, Any]:
    """A round for people: a row per feature compared; the examples are in `--json`."""
    window = report["window"]
    features = {
        name: {
            "divergence": f"{report['divergence'].get(name, 0.0):.2%}",
            "compared": compared,
            "diverged": report["diverged"][name],
        }
        for name, compared in report["compared"].items()
    }
    examples = sum(len(x) for x in report["examples"].values())
    return {
        "window": f"{when(window['from_ms'])} to {when(window['to_ms'])}",
        "impressions": report["impressions"],
        "rows": report["rows"],
        "skipped": report["skipped"] or "none",
        "examples": f"{examples} (request and media ids: --json)" if examples else "none",
        "features": features or "none compared",
    }


class Monitor:
    """One parity round at a time over the lake (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        lake: Lake,
        window_s: float,
        sample: int,
        lookback_days: float | None,
    ) -> None:
        self.settings, self.lake, self.sample = settings, lake, sample
        self.window_ms = int(window_s * 1000)
        days = settings.user_ttl_days if lookback_days is None else lookback_days
        self.lookback_ms = int(days * 86_400_000)
        self.config = ParityConfig.of(settings)
        client = connect(settings.redis_url, JOB)
        self.items = ItemStore(client, IndexKeys())
        self.weights = WeightsRegistry(client, 0)
        config = load_config(settings.ab_config)
        self.impersonal = frozenset(
            [HOLDBACK_ARM, *(a.name for a in config.arms if not a.personalised)]
        )

    def round(self, end_s: float) -> dict[str, Any]:
        """Check the window ending at `end_s`; sets the metrics, returns the report."""
        end = int(end_s * 1000)
        start = end - self.window_ms
        feeds = impressions_of(unique(IMPRESSIONS, self.lake.read(IMPRESSIONS, start, end)))
        feeds = sorted(feeds, key=lambda f: zlib.crc32(f.request_id.encode()))[: self.sample]
        report = self._check(feeds, start, end) if feeds else ParityReport()
        for column, share in report.divergence().items():
            PARITY_DIVERGENCE.labels(feature=column).set(share)
        PARITY_ROWS.set(max(report.compared.values(), default=0))
        PARITY_ROUND.set(time.time())
        window = {"from_ms": start, "to_ms": end, "checked": list(CHECKED)}
        return {"window": window} | report.as_dict()

    def _check(self, feeds: list[Any], start: int, end: int) -> ParityReport:
        media = sorted({i.media_id for f in feeds for i in f.items})
        table = self.lake.read(EVENTS, start - self.lookback_ms, end)
        table = unique(EVENTS, in_arrival_order(table))
        audience = pc.unique(
            table.filter(pc.is_in(table["media_id"], value_set=pa.array(media)))["user_id"]
        )
        users = pa.concat_arrays([audience, pa.array([f.user_id for f in feeds])])
        rows = table.filter(pc.is_in(table["user_id"], value_set=users)).to_pylist()
        found = self.items.features(media)
        records = {m: f.record for m, f in zip(media, found, strict=True) if f is not None}
        context = Context(records, self.weights.user_weights, self.impersonal)
        events = [record_of(EVENTS, r) for r in rows]
        lookup = item_lookup(self.settings)
        return check(self.settings, self.config, lookup, context, events, feeds)
