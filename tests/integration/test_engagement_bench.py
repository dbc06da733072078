"""The engagement benchmark's quick mode runs end to end and reports every figure.

A smoke test, not a benchmark: it checks the shape of the summary, never a number or a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from feedflow.bench.engagement_bench import run_engagement_bench
from feedflow.bench.engagement_report import markdown_table

pytestmark = [pytest.mark.integration]


def _finite(*values: object) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def test_quick_mode_reports_every_figure(tmp_path: Path) -> None:
    result = run_engagement_bench(quick=True, workdir=tmp_path)

    machine = result["machine"]
    assert machine["cpu"] and machine["cores"] and machine["python"]
    assert result["command"] and len(result["load_before"]) == len(result["load_after"]) == 3
    assert _finite(result["load_1min_max"])

    ingest = result["ingest"]
    assert ingest["reference"]["messages"] == ingest["preload"]["events"]
    assert _finite(ingest["reference"]["events_per_s"], ingest["reference"]["events_per_cpu_s"])
    assert [run["recovery"] for run in ingest["runs"]] == [True, False]
    for run in ingest["runs"]:
        assert _finite(run["events_per_s_steady"], run["events_per_s_total"],
                       run["events_per_cpu_s_steady"], run["startup_s"])  # fmt: skip
        assert run["user_keys"] > 0
    assert ingest["redis_bytes"]["sampled"] > 0
    assert _finite(*ingest["redis_bytes"]["memory_usage"].values())
    assert _finite(*ingest["redis_bytes"]["value_len"].values())
    assert ingest["flow_state"]["keys"] > 0 and _finite(*ingest["flow_state"]["bytes"].values())

    fresh = result["freshness"]
    for name in ("flow_ms", "broker_ms"):
        assert _finite(fresh[name]["p50"], fresh[name]["p99"], fresh[name]["timeouts"])
    assert _finite(fresh["background_measured_per_s"], fresh["flow_cpu_share"])

    logic = result["logic"]
    assert _finite(logic["features_on"]["total_us_per_event"], *logic["snapshot_bytes"].values())

    rows = result["budgets"]
    assert {"ingest_eps", "freshness", "redis", "state"} <= {_kind(r["what"]) for r in rows}
    for row in rows:
        assert _finite(row["measured"], row["reference"], row["ratio"])
        assert row["met"] in (True, False, None)
    assert len(markdown_table(result).splitlines()) == len(rows) + 2
    assert not list(tmp_path.iterdir()), "the bench leaves nothing behind"


def _kind(what: str) -> str:
    if what.startswith("ingest"):
        return "ingest_eps"
    if what.startswith("event"):
        return "freshness"
    return "redis" if what.startswith("Redis") else "state"
