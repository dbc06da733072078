"""The serving benchmark's report: its BENCHMARKS.md section and nothing else changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feedflow.bench.markdown import write_section
from feedflow.bench.serving_bench import SECTION, STAGES, markdown


def level(c: int) -> dict[str, Any]:
    return {
        "concurrency": c, "requests": 100, "req_per_s": 250.0 / c, "p50_ms": 3.0 * c,
        "p99_ms": 6.0 * c, "max_ms": 9.0 * c, "mean_ms": 3.1, "non_200": 0, "fallbacks": 0,
        "server_cpu_ms_per_request": 2.5, "load_avg_1m": 1.0,
        "server_stage_mean_ms": dict.fromkeys(STAGES, 0.5),
    }  # fmt: skip


def result() -> dict[str, Any]:
    stages = {s: {"p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0} for s in STAGES}
    run = {"requests": 10, "candidates_mean": 540.0, "fallbacks": 0, "stages": stages}
    size = {
        "items": 1_000_000,
        "http": {"levels": [level(1), level(4)], "held_at_p99_budget": level(1)},
        "in_process": {"pipeline": run, "naive_per_candidate_redis": run},
    }
    env = {"cpus": 2, "load_avg_1m_at_end": 1.5, "vectors": "synthetic"}
    return {"environment": env, "sizes": [size]}


def test_markdown_reports_every_level_and_stage() -> None:
    text = markdown(result())
    assert text.startswith(SECTION + "\n")
    assert "| 1,000,000 | 4 | 62 | 12.00 | 24.00 |" in text
    assert "250 req/s with 1 clients" in text
    assert text.count("| 1,000,000 | pipeline |") == 1 and "| naive |" in text


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Index\n\nkeep me\n\n## Engagement\n\nme too\n")
    write_section(path, SECTION + "\n\nfirst\n")
    write_section(path, SECTION + "\n\nsecond\n")
    text = path.read_text()
    assert "keep me" in text and "me too" in text and "first" not in text
    assert text.count(SECTION) == 1 and text.endswith("second\n")
    path.write_text(text.replace(SECTION + "\n\nsecond\n", SECTION + "\n\nold\n\n## Later\n\nx\n"))
    write_section(path, SECTION + "\n\nthird\n")
    assert "## Later\n\nx\n" in path.read_text() and "old" not in path.read_text()
