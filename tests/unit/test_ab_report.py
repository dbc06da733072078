"""`feedflow ab report`'s statistics on generated traffic: a planted uplift is found, an A/A
run is not, a broken split is flagged, and attribution credits exactly what it should."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedflow.ab_command import render
from operators.ab import Assigner, parse_config
from operators.ab_report import (
    attribute,
    build_report,
    chi2_sf,
    srm_check,
    two_proportion_z_test,
)
from operators.contracts import EngagementEvent
from tests.unit.ab_traffic import WINDOW_MS, simulate

ALPHA = 0.05
SPLIT = b"""{"salt": "exp-1", "control": "control", "arms": [
    {"name": "control", "share": 0.5, "personalised": false},
    {"name": "treatment", "share": 0.5}]}"""
ASSIGNER = Assigner(parse_config(SPLIT))


def report_of(ctr: dict[str, float], seed: int, users: int = 4000) -> dict:
    traffic = simulate(ASSIGNER, ctr, users=users, seed=seed)
    outcomes = attribute(traffic.impressions, traffic.events, WINDOW_MS)
    for arm, clicks in traffic.clicks.items():  # attribution finds every planted click, only them
        assert outcomes[arm].clicks == clicks
    return build_report(outcomes, ASSIGNER.expected_shares(), ASSIGNER.control(), ALPHA)


def comparison(report: dict, arm: str) -> dict:
    return next(c for c in report["comparisons"] if c["arm"] == arm)


def test_a_planted_ctr_uplift_is_detected() -> None:
    report = report_of({"control": 0.10, "treatment": 0.14, "*": 0.10}, seed=11)
    found = comparison(report, "treatment")
    assert found["significant"] and found["p_value"] < 0.001
    low, high = found["diff_ci"]
    assert low < 0.04 < high and low > 0  # the planted difference, and not zero
    assert not report["srm"]["mismatch"]
    assert set(report["arms"]) == {"control", "treatment", "holdback"}
    text = render({**report, "read": _read(), "window_s": 3600.0})
    assert "treatment vs control" in text and ": significant at alpha 0.05" in text


def test_an_a_a_run_finds_nothing() -> None:
    """One seeded run (any seed rejects with probability alpha: the next test checks that)."""
    report = report_of({"*": 0.12}, seed=21)
    assert not comparison(report, "treatment")["significant"]
    assert not report["srm"]["mismatch"]
    assert abs(report["arms"]["treatment"]["ctr"] - 0.12) < 0.02


def test_the_z_test_keeps_its_false_positive_rate_and_has_power() -> None:
    """2,000 A/A and A/B experiments of 4,000 impressions per arm (binomial draws)."""
    rng = np.random.default_rng(5)
    n = 4000

    def rejections(p_t: float, p_c: float) -> float:
        x_t, x_c = rng.binomial(n, p_t, 2000), rng.binomial(n, p_c, 2000)
        tests = [two_proportion_z_test(int(a), n, int(b), n) for a, b in zip(x_t, x_c, strict=True)]
        return sum(t.p_value < ALPHA for t in tests) / len(tests)

    assert 0.035 < rejections(0.1, 0.1) < 0.065
    assert rejections(0.13, 0.1) > 0.95


def test_the_srm_check_flags_a_broken_split() -> None:
    traffic = simulate(ASSIGNER, {"*": 0.1}, users=4000, seed=31)
    rng = random.Random(3)
    lost = {i.user_id for i in traffic.impressions if i.arm == "treatment" and rng.random() < 0.1}
    kept = [i for i in traffic.impressions if i.user_id not in lost]  # a logging bug in one arm
    outcomes = attribute(kept, traffic.events, WINDOW_MS)
    report = build_report(outcomes, ASSIGNER.expected_shares(), "control", ALPHA)
    assert report["srm"]["mismatch"] and report["srm"]["p_value"] < 1e-6
    observed = {"control": 50, "treatment": 50, "other": 3}
    stranger = srm_check(observed, {"control": 0.5, "treatment": 0.5})
    assert stranger.mismatch and stranger.unexpected == ("other",)


def test_statistics_match_the_textbook() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in range(1, 9):
        for x in (0.01, 0.5, 1.0, 3.84, 7.5, 20.0, 300.0):
            assert chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9, abs=1e-15)
    z = two_proportion_z_test(130, 1000, 100, 1000)
    table = np.array([[130, 870], [100, 900]])
    chi2, p_value, _, _ = scipy_stats.chi2_contingency(table, correction=False)
    assert z.z**2 == pytest.approx(chi2) and z.p_value == pytest.approx(p_value)
    assert z.uplift == pytest.approx(0.3)


def ev(kind: str, user: str, media: str, ts: int, pos: float | None = None) -> EngagementEvent:
    return EngagementEvent(event_id=f"{kind}-{user}-{media}-{ts}", event_type=kind,
                           user_id=user, media_id=media, ts=ts, position_s=pos)  # fmt: skip


def test_attribution_credits_the_latest_impression_that_served_the_item_in_the_window() -> None:
    traffic = simulate(ASSIGNER, {"*": 0.0}, users=1, feeds=2, seed=41)
    first, second = traffic.impressions
    user, both = first.user_id, first.items[0].media_id
    late = second.ts + WINDOW_MS + 1
    events = [
        ev("media_started", user, both, first.ts + 1000, 0.0),  # only the first is shown yet
        ev("media_progress", user, both, first.ts + 31_000, 30.0),
        ev("media_completed", user, both, first.ts + 41_000, 40.0),
        ev("media_started", user, second.items[3].media_id, second.ts - 5, 0.0),  # before it
        ev("media_started", user, second.items[4].media_id, late, 0.0),  # after the window
        ev("media_skipped", user, second.items[5].media_id, second.ts + 10),
        ev("media_liked", user, second.items[6].media_id, second.ts + 10),
        ev("media_started", "someone-else", second.items[7].media_id, second.ts + 10, 0.0),
    ]
    arm = first.arm
    outcome = attribute([second, first], events, WINDOW_MS)[arm]
    assert (outcome.impressions, outcome.users, outcome.clicks) == (2, 1, 1)
    assert (outcome.plays, outcome.completions) == (1, 1)
    assert outcome.watch_s == pytest.approx(40.0)
    assert outcome.ctr == 0.5 and outcome.completion_rate == 1.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_outcomes_do_not_depend_on_arrival_order(seed: int) -> None:
    traffic = simulate(ASSIGNER, {"*": 0.3}, users=40, seed=7)
    rng = random.Random(seed)
    impressions, events = list(traffic.impressions), list(traffic.events)
    rng.shuffle(impressions)
    rng.shuffle(events)
    shuffled = attribute(impressions, events, WINDOW_MS)
    assert shuffled == attribute(traffic.impressions, traffic.events, WINDOW_MS)


def _read() -> dict[str, int]:
    return {"impressions": 0, "events": 0, "events_attributed": 0,
            "invalid_impressions": 0, "invalid_events": 0}  # fmt: skip
