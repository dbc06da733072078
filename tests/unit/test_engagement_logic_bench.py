"""The engagement logic benchmark runs end to end on a tiny simulated workload."""

from __future__ import annotations

from feedflow.bench.engagement_logic import run


def test_a_tiny_run_reports_costs_and_sizes():
    summary = run(users=40, items=60, rate=200.0, duration_s=5.0, seed=3, repeats=1)
    assert summary["events"] > 0 and summary["users"] > 0
    for mode in ("features_off", "features_on"):
        assert summary[mode]["total_us_per_event"] > 0
    assert 0 < summary["feature_record_bytes"]["max"] < 500
    assert summary["item_side"]["inputs"] > 0
