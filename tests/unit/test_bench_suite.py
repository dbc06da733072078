"""`feedflow bench`'s budget table: verdicts, failed parts, and what it writes to BENCHMARKS.md."""

from __future__ import annotations

import doctest
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from feedflow import bench_command
from feedflow.bench import suite
from feedflow.bench.serving_bench import SECTION as SERVING_SECTION
from tests.unit.test_serving_bench import result as serving_result


def index_report(p99_ms: float, items: int = 3_000_000) -> dict[str, Any]:
    row = {
        "items": items, "dim": 64, "m": 24, "ef_search": 500, "snapshot_bytes_per_item": 475.0,
        "hnsw_k500": {"p50_ms": p99_ms / 2, "p99_ms": p99_ms},
        "numpy_brute_k500": {"p50_ms": 15.0, "p99_ms": 30.0},
        "recall_at_500": 0.97,
    }  # fmt: skip
    fresh = {"p50_s": 0.1, "p99_s": 0.4}
    local = {"p50_s": 0.001, "p99_s": 0.003}
    return {"retrieval": [row], "freshness_kafka": fresh, "freshness_in_process": local}


def by_what(rows: list[dict[str, Any]], start: str) -> dict[str, Any]:
    found = [r for r in rows if r["what"].startswith(start)]
    assert len(found) == 1, [r["what"] for r in rows]
    return found[0]


def test_index_rows_judge_retrieval_only_at_the_budgeted_size() -> None:
    slow = suite.index_rows(index_report(4.0))
    assert by_what(slow, "retrieval k=500 P99")["met"] is False
    assert by_what(slow, "retrieval k=500 P99")["ratio"] == round(4.0 / 30.0, 3)
    assert by_what(slow, "recall@500")["met"] is True
    assert by_what(slow, "publish → searchable at a reader, through the broker, P99")["met"]
    small = suite.index_rows(index_report(4.0, items=1_000_000))
    assert by_what(small, "retrieval k=500 P99")["met"] is None  # the budget is set at 3M


def test_serving_rows_carry_the_feed_budget_and_the_stage_breakdown() -> None:
    result = serving_result()
    result["sizes"][0]["http"]["levels"][0]["p50_ms"] = 5.5  # one client: P50 over 5 ms
    rows = suite.serving_rows(result)
    p99 = by_what(rows, "feed P99 over HTTP, 1,000,000 items, 1 client")
    assert p99["measured"] == 6.0 and p99["met"] is True and p99["budget"] == "≤ 15"
    assert by_what(rows, "feed P50 over HTTP")["met"] is False
    assert by_what(rows, "req/s held")["measured"] == 250.0
    stages = [r for r in rows if r["what"].startswith("stage ")]
    assert len(stages) == 6 and by_what(rows, "stage ranking")["budget"] == "≤ 2"


def test_a_failing_part_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(cfg: suite.SuiteConfig, log: suite.Log) -> dict[str, Any]:
        raise RuntimeError("broker did not start")

    monkeypatch.setitem(suite.RUNNERS, "engagement", broken)
    monkeypatch.setitem(suite.RUNNERS, "index", lambda cfg, log: index_report(2.5))
    cfg = suite.SuiteConfig.for_mode(True, parts=("engagement", "index"))
    result = suite.run_suite(cfg, "feedflow bench --quick", log=lambda line: None)

    assert "broker did not start" in result["errors"]["engagement"]
    assert {r["part"] for r in result["budgets"]} == {"index"}
    text = suite.markdown(result)
    assert "| engagement | **not measured: the part failed**" in text
    assert "Not run this time: serving." in text
    assert by_what(result["budgets"], "retrieval k=500 P99")["met"] is True


def test_write_benchmarks_puts_the_summary_first_and_keeps_other_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Engagement flow\n\nhand notes\n")
    monkeypatch.setitem(suite.RUNNERS, "serving", lambda cfg, log: serving_result())
    cfg = suite.SuiteConfig.for_mode(False, parts=("serving",))
    result = suite.run_suite(cfg, "feedflow bench", log=lambda line: None)
    suite.write_benchmarks(result, path)
    suite.write_benchmarks(result, path)  # a rerun replaces, never duplicates

    text = path.read_text()
    assert text.count(suite.SECTION) == 1 and text.count(SERVING_SECTION) == 1
    assert text.index("intro") < text.index(suite.SECTION) < text.index("## Engagement flow")
    assert "hand notes" in text and text.index("hand notes") < text.index(SERVING_SECTION)


def test_quick_mode_is_small_and_overrides_win() -> None:
    quick = suite.SuiteConfig.for_mode(True)
    assert max(quick.index_sizes + quick.serving_sizes) <= 100_000
    full = suite.SuiteConfig.for_mode(False, index_sizes=(1_000_000,), parts=None)
    assert full.index_sizes == (1_000_000,) and full.parts == suite.PARTS
    assert 3_000_000 in suite.SuiteConfig.for_mode(False).index_sizes


@pytest.mark.parametrize("module", [suite, bench_command])
def test_the_docstring_examples_hold(module: ModuleType) -> None:
    # The feedflow package is outside pytest's doctest paths; these examples are pure.
    assert doctest.testmod(module).failed == 0
