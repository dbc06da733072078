"""Forward-decayed scores on event time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.decay import DecayedScores, DecayedVector

DAY = 86_400_000
TAU = 7 * DAY
T0 = 1_700_000_000_000


def test_a_score_falls_to_one_over_e_after_one_time_constant():
    s = DecayedScores(TAU, cap=4)
    s.add("k", 1.0, T0)
    assert s.value("k", T0 + TAU) == pytest.approx(math.exp(-1))


def test_the_cap_drops_the_smallest_magnitude():
    s = DecayedScores(TAU, cap=2)
    s.add("big", 5.0, T0)
    s.add("negative", -4.0, T0)
    s.add("small", 1.0, T0)
    assert sorted(s.items(T0)) == ["big", "negative"]
    assert s.top(5, T0) == [("big", 5.0)]
    assert [k for k, _ in s.top(5, T0, positive=False)] == ["big", "negative"]


def test_years_of_event_time_rebase_without_overflow():
    s = DecayedScores(TAU, cap=4)
    v = DecayedVector(3, TAU)
    for year in range(30):
        ts = T0 + year * 365 * DAY
        s.add("k", 1.0, ts)
        v.add(np.ones(3), 1.0, ts)
    last = T0 + 29 * 365 * DAY
    assert s.value("k", last) == pytest.approx(1.0)
    assert np.allclose(v.value(last), 1.0)
    assert all(np.isfinite(v.value(last)))


updates = st.lists(
    st.tuples(st.sampled_from("abc"), st.floats(-5, 5), st.integers(0, 60 * DAY)), max_size=40
)


@given(updates, st.randoms(use_true_random=False))
def test_values_do_not_depend_on_update_order(items, rnd):
    def run(order: list[tuple[str, float, int]]) -> tuple[DecayedScores, DecayedVector]:
        s, v = DecayedScores(TAU, cap=8), DecayedVector(2, TAU)
        for key, amount, dt in order:
            s.add(key, amount, T0 + dt)
            v.add_at(0 if key == "a" else 1, amount, T0 + dt)
        return s, v

    shuffled = list(items)
    rnd.shuffle(shuffled)
    now = T0 + 60 * DAY
    (s1, v1), (s2, v2) = run(items), run(shuffled)
    for key in "abc":
        assert s1.value(key, now) == pytest.approx(s2.value(key, now), abs=1e-9)
    assert np.allclose(v1.value(now), v2.value(now), rtol=1e-5, atol=1e-5)  # float32


@given(updates, st.integers(0, 40))
def test_snapshot_resume_continue_equals_uninterrupted(items, cut):
    whole, part = DecayedScores(TAU, cap=8), DecayedScores(TAU, cap=8)
    for key, amount, dt in items:
        whole.add(key, amount, T0 + dt)
    for key, amount, dt in items[:cut]:
        part.add(key, amount, T0 + dt)
    resumed = DecayedScores(TAU, cap=8, resume=part.snapshot())
    for key, amount, dt in items[cut:]:
        resumed.add(key, amount, T0 + dt)
    assert resumed.snapshot() == whole.snapshot()
