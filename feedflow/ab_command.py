"""`feedflow ab report|assign`: per-arm outcomes with significance and sample-ratio checks.

`report` reads `feed.impressions` and `user.engagement.events` from the broker, bounded (from
the start, or `--since`, up to the end offsets when it began), attributes engagement to the
impressions that led to it (:mod:`operators.ab_report`) and prints per arm: impressions, CTR,
completion rate and watch seconds per impression; each arm's CTR against the control's with a
two-proportion z-test; a sample-ratio-mismatch check of users per arm against the split of
`FEEDFLOW_AB_CONFIG` (the one serving uses). Exit code 3 when the SRM check fails: the
comparison cannot be trusted. `assign` prints the arm of each user id given. `--json` prints
the result as JSON instead; `--out FILE` also writes it to FILE.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from feedflow.output import Progress, add_json_flag, emit, table
from flows.topic_reader import read_topic
from kernel.errors import ConfigError
from kernel.settings import Settings
from operators.ab import Assigner
from operators.ab_report import Attribution, build_report
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_IMPRESSIONS,
    EngagementEvent,
    Impression,
    Rejection,
    decode_engagement,
    decode_impression,
)
from state.ab_config import load_config

DEFAULT_WINDOW_S: Final = 3600.0
# Where reading starts is found by broker timestamps (producer time), what counts by event
# time: an hour of slack covers clients that send late.
SEEK_SLACK_MS: Final = 3_600_000
SRM_EXIT: Final = 3
EXIT_CODES: Final = {SRM_EXIT: "report: sample-ratio mismatch, the comparison cannot be trusted"}
T = TypeVar("T", Impression, EngagementEvent)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow ab`."""
    p = sub.add_parser(
        "ab",
        description="report: read feed.impressions and user.engagement.events (bounded), "
        "attribute engagement to impressions and compare the arms of FEEDFLOW_AB_CONFIG; "
        "exit code 3 on a sample-ratio mismatch. assign: the arm of each USER.",
    )
    p.add_argument("action", choices=["report", "assign"])
    p.add_argument("users", nargs="*", metavar="USER", help="assign: user ids")
    p.add_argument(
        "--since",
        help="report: only what happened from then on: ISO 8601 (UTC unless it says), epoch "
        "ms, or an age such as 90m, 6h, 7d (default: everything the topics hold)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_S,
        help=f"report: attribution window after an impression, seconds ({DEFAULT_WINDOW_S:g})",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="report: significance level")
    p.add_argument("--timeout", type=float, default=600.0, help="report: seconds per topic")
    add_json_flag(p, out="also write the result as JSON here")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow ab` action; returns the exit code."""
    assigner = Assigner(load_config(settings.ab_config))
    if args.action == "assign":
        result = {user: assigner.assign(user).name for user in args.users}
        _write_json(result, args.out)
        emit(result, args.json)
        return 0
    if not 0 < args.alpha < 1 or args.window <= 0:
        raise ConfigError("--alpha must be in (0, 1) and --window > 0")
    settings.require("kafka_bootstrap_servers")
    since_ms = parse_since(args.since, time.time()) if args.since else None
    report = collect(
        settings.kafka_bootstrap_servers, assigner, since_ms, args, settings.kafka_client
    )
    _write_json(report, args.out)
    if args.json:
        emit(report, as_json=True)
    else:
        sys.stdout.write(render(report))
    return SRM_EXIT if report["srm"]["mismatch"] else 0


def collect(
    bootstrap: str,
    assigner: Assigner,
    since_ms: int | None,
    args: argparse.Namespace,
    client: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Read both topics and build the report (plus what was read)."""
    attribution = Attribution(int(args.window * 1000))
    seek_ms = None if since_ms is None else since_ms - SEEK_SLACK_MS
    counts = {"impressions": 0, "invalid_impressions": 0, "events": 0, "invalid_events": 0}
    read = (bootstrap, seek_ms, since_ms, args.timeout, counts, client)
    for imp in _decoded(TOPIC_IMPRESSIONS, decode_impression, "impressions", *read):
        attribution.add_impression(imp)
    for ev in _decoded(TOPIC_ENGAGEMENT, decode_engagement, "events", *read):
        attribution.add_event(ev)
    report = build_report(
        attribution.outcomes(), assigner.expected_shares(), assigner.control(), args.alpha
    )
    return {
        "since_ms": since_ms,
        "window_s": args.window,
        "read": {**counts, "events_attributed": attribution.attributed},
        "salt": assigner.config.salt,
        **report,
    }


def _decoded(
    topic: str,
    decode: Callable[[bytes], T | Rejection],
    name: str,
    bootstrap: str,
    seek_ms: int | None,
    since_ms: int | None,
    timeout_s: float,
    counts: dict[str, int],
    client: dict[str, str] | None,
) -> Iterator[T]:
    """Valid records of `topic` at or after `since_ms` (event time), counted under `name`."""
    progress = Progress(f"reading {topic}")
    for raw in read_topic(bootstrap, topic, seek_ms, timeout_s, client=client):
        progress.advance()
        record = decode(raw)
        if isinstance(record, Rejection):
            counts[f"invalid_{name}"] += 1
        elif since_ms is None or record.ts >= since_ms:
            counts[name] += 1
            yield record
    progress.close()


def parse_since(text: str, now_s: float) -> int:
    """Epoch ms of a `--since` value.

    Example:
        >>> parse_since("2h", 10_000.0), parse_since("1700000000000", 0.0)
        (2800000, 1700000000000)
        >>> parse_since("2023-11-14T22:13:20", 0.0)
        1700000000000

    Raises:
        ConfigError: for anything else.
    """
    text = text.strip()
    age = _AGE.match(text)
    if age:
        return int((now_s - float(age[1]) * _UNIT_S[age[2]]) * 1000)
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since {text!r}: not a time, epoch ms or age (6h, 7d)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def render(report: dict[str, Any]) -> str:
    """The report for people: a table per arm, the tests, the SRM verdict."""
    read = report["read"]
    lines = [
        f"{read['impressions']:,} impressions, {read['events']:,} engagement events, "
        f"{read['events_attributed']:,} attributed within {report['window_s']:g} s "
        f"(invalid skipped: {read['invalid_impressions']} + {read['invalid_events']})",
        "",
    ]
    arms = {
        name: {
            "users": f"{arm['users']:,}",
            "impressions": f"{arm['impressions']:,}",
            "CTR": f"{arm['ctr']:.2%}",
            "completion": f"{arm['completion_rate']:.2%}",
            "watch s/imp": f"{arm['watch_s_per_impression']:.1f}",
        }
        for name, arm in report["arms"].items()
    }
    lines += [table(arms, key="arm").rstrip("\n"), ""]
    for c in report["comparisons"]:
        verdict = "significant" if c["significant"] else "not significant"
        lines.append(
            f"{c['arm']} vs {c['control']}: CTR {c['ctr']:.2%} vs {c['control_ctr']:.2%} "
            f"({c['uplift']:+.1%}), z {c['z']:.2f}, p {c['p_value']:.3g}: {verdict} at "
            f"alpha {report['alpha']:g}"
        )
    if not report["comparisons"]:
        lines.append(f"no comparison: no impressions in the control arm {report['control']!r}")
    srm = report["srm"]
    split = ", ".join(f"{a} {s:.1%}" for a, s in srm["expected_share"].items())
    verdict = "MISMATCH: do not trust the comparison" if srm["mismatch"] else "as configured"
    lines.append(
        f"sample ratio (users; {split}): chi2 {srm['chi2']:.2f}, df {srm['df']}, "
        f"p {srm['p_value']:.3g}: {verdict}"
    )
    if srm["unexpected_arms"]:
        lines.append(f"arms not in the config: {', '.join(srm['unexpected_arms'])}")
    return "\n".join(lines) + "\n"


def _write_json(data: Any, target: Path | None) -> None:
    if target is not None:
        target.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
