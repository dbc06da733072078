"""`feedflow bench --quick` runs end to end on private stacks and reports every figure.

A smoke test, not a benchmark: it checks the shape of the summary, never a number or a time.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from feedflow import cli
from feedflow.bench.engagement_report import markdown_table
from feedflow.bench.suite import PARTS, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.long]  # ~70 s: make test-reliability


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `feedflow bench --quick --json FILE` run for the module; BENCHMARKS.md before/after."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    before = (ROOT / "BENCHMARKS.md").read_bytes()
    assert cli.main(["bench", "--quick", "--json", str(out)]) == 0
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["_md_unchanged"] = (ROOT / "BENCHMARKS.md").read_bytes() == before
    return result


def _finite(*values: object) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def test_every_part_reports_budget_rows_with_a_reference(quick: dict[str, Any]) -> None:
    assert not quick["errors"] and set(quick["parts"]) == set(PARTS)
    assert quick["_md_unchanged"], "a quick run leaves BENCHMARKS.md alone"
    rows = quick["budgets"]
    assert {r["part"] for r in rows} == set(PARTS)
    for row in rows:
        assert _finite(row["measured"]), row
        assert row["reference"] is None or _finite(row["reference"]), row
        assert row["met"] in (True, False, None)
    judged = {r["what"].split(",")[0] for r in rows if r["met"] is not None}
    assert {"recall@500 mean", "stage ranking P99 in process"} <= judged
    assert any(w.startswith("publish → searchable") for w in judged)
    assert quick["machine"]["cpu"] and quick["machine"]["cores"]


def test_serving_reports_stages_and_throughput(quick: dict[str, Any]) -> None:
    (size,) = quick["parts"]["serving"]["sizes"]
    assert size["in_process"]["pipeline"]["fallbacks"] == 0
    levels = size["http"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2]
    assert all(lv["non_200"] == 0 and lv["requests"] > 0 for lv in levels)


def test_engagement_reports_every_figure(quick: dict[str, Any]) -> None:
    result = quick["parts"]["engagement"]

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

    assert ingest["co_bytes"]["sampled"] > 0  # co-engagement records per item
    assert _finite(*ingest["co_bytes"]["memory_usage"].values())

    fresh = result["freshness"]
    for name in ("flow_ms", "broker_ms", "co_ms"):
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


def _kind(what: str) -> str:
    if what.startswith("ingest"):
        return "ingest_eps"
    if what.startswith("event"):
        return "freshness"
    return "redis" if what.startswith("Redis") else "state"
