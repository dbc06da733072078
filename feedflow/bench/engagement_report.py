"""The engagement benchmark's budget table: each figure next to its same-run reference.

Example:
    >>> row = _row("Redis bytes per user", "redis_bytes", 300.0, 200.0, "value length")
    >>> row["budget"], row["ratio"], row["met"]
    ('≤ 500', 1.5, True)
"""

from __future__ import annotations

import math
from typing import Any, Final

# The budgets: ingest per worker process, event → feature P99, Redis and state bytes.
BUDGETS: Final = {
    "ingest_eps": 20_000,
    "freshness_p99_ms": 1000,
    "redis_bytes": 500,
    "state_bytes": 2048,
    "co_bytes": 1536,  # the aim for an item's neighbour list
}


def _row(
    what: str, budget: str | None, measured: float, reference: float, reference_is: str
) -> dict[str, Any]:
    """One line of the budget table; `budget` names an entry of BUDGETS (None: no budget)."""
    met = None
    if budget is not None:
        limit = BUDGETS[budget]
        met = measured >= limit if budget == "ingest_eps" else measured <= limit
    return {
        "what": what,
        "budget": ""
        if budget is None
        else f"{'≥' if budget == 'ingest_eps' else '≤'} {BUDGETS[budget]:,}",
        "measured": measured,
        "reference": reference,
        "reference_is": reference_is,
        "ratio": round(measured / reference, 3) if reference else math.nan,
        "met": met,
    }


def _freshness_rows(fresh: dict[str, Any]) -> list[dict[str, Any]]:
    mode = "recovery on" if fresh["recovery"] else "--no-recovery"
    load = f"{mode}, {fresh['background_measured_per_s']:,} events/s"
    flow_ms, broker_ms = fresh["flow_ms"], fresh["broker_ms"]
    rows = [
        _row(f"event → Redis P99, {load} (ms)", "freshness_p99_ms", flow_ms["p99"],
             broker_ms["p99"], "broker round trip P99"),
        _row(f"event → Redis P50, {load} (ms)", None, flow_ms["p50"], broker_ms["p50"],
             "broker round trip P50"),
    ]  # fmt: skip
    co_ms = fresh.get("co_ms")
    if co_ms is not None:
        rows += [
            _row(f"event → neighbour list in Redis P99, {load} (ms)", "freshness_p99_ms",
                 co_ms["p99"], broker_ms["p99"], "broker round trip P99"),
            _row(f"event → neighbour list in Redis P50, {load} (ms)", None, co_ms["p50"],
                 broker_ms["p50"], "broker round trip P50"),
        ]  # fmt: skip
    return rows


def budget_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The budget table: what, budget, measured, reference, measured / reference, met."""
    ingest = r["ingest"]
    ref, bare = ingest["reference"]["events_per_s"], "bare consumer read + decode"
    ref_cpu, bare_cpu = ingest["reference"]["events_per_cpu_s"], "bare consumer per CPU s"
    redis_b, state = ingest["redis_bytes"], ingest["flow_state"]["bytes"]
    record = redis_b["value_len"]
    rows = []
    for run in ingest["runs"]:
        mode = "recovery on" if run["recovery"] else "--no-recovery"
        rows.append(_row(f"ingest, 1 worker, {mode}, steady (events/s)", "ingest_eps",
                         run["events_per_s_steady"], ref, bare))  # fmt: skip
        rows.append(_row(f"ingest, 1 worker, {mode}, incl. start-up (events/s)", "ingest_eps",
                         run["events_per_s_total"], ref, bare))  # fmt: skip
        rows.append(_row(f"ingest, 1 worker, {mode}, per CPU second (events/s)", "ingest_eps",
                         run["events_per_cpu_s_steady"], ref_cpu, bare_cpu))  # fmt: skip
    for fresh in (r["freshness"], r.get("freshness_no_recovery")):
        if fresh is not None:
            rows += _freshness_rows(fresh)
    rows += [
        _row("Redis bytes per user, MEMORY USAGE mean", "redis_bytes",
             redis_b["memory_usage"]["mean"], record["mean"], "value length mean"),
        _row("Redis bytes per user, MEMORY USAGE P99", "redis_bytes",
             redis_b["memory_usage"]["p99"], record["p99"], "value length P99"),
        _row("operator state per user, flow snapshot mean (B)", "state_bytes", state["mean"],
             record["mean"], "feature value mean"),
        _row("operator state per user, flow snapshot P99 (B)", "state_bytes", state["p99"],
             record["p99"], "feature value P99"),
    ]  # fmt: skip
    co = ingest.get("co_bytes")
    if co is not None and co["sampled"]:
        rows += [
            _row("Redis bytes per item, neighbour list, MEMORY USAGE mean", "co_bytes",
                 co["memory_usage"]["mean"], co["value_len"]["mean"], "value length mean"),
            _row("Redis bytes per item, neighbour list, MEMORY USAGE P99", "co_bytes",
                 co["memory_usage"]["p99"], co["value_len"]["p99"], "value length P99"),
        ]  # fmt: skip
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    """The budget rows as a Markdown table (what BENCHMARKS.md shows)."""
    lines = [
        "| budget | target | measured | reference | ratio | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["budgets"]:
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        lines.append(
            f"| {row['what']} | {row['budget']} | {row['measured']:,} | "
            f"{row['reference']:,} ({row['reference_is']}) | {row['ratio']} | {met} |"
        )
    return "\n".join(lines)
