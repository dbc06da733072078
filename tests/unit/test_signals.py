"""The signal table and the duration-debiased watch score."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.settings import load_settings
from operators import signals
from operators.signals import SignalWeights
from operators.watch_score import (
    DURATION_EDGES_S,
    MEDIAN_FRACTION,
    duration_bucket,
    watch_score,
)


def test_default_weights_follow_the_design_table():
    w = SignalWeights()
    positives = [w.replay, w.liked, w.shared]
    assert w.completed > max(positives) > 0
    assert min(w.playlist, w.subscribed) > w.started > 0
    assert w.disliked < w.paused_early < 0
    assert w.skipped < w.paused_early < 0


def test_weights_come_from_settings_and_environment():
    settings = load_settings({"FEEDFLOW_SIGNAL_LIKED": "1.5", "FEEDFLOW_SIGNAL_WATCH": "0"})
    w = SignalWeights.from_settings(settings)
    assert w.liked == 1.5
    assert w.view_weight(signals.bit("started"), 1.0) == pytest.approx(w.started)


def test_view_weight_ignores_explicit_signals_applied_as_feedback():
    w = SignalWeights()
    mask = signals.bit("completed") | signals.bit("liked")
    assert w.view_weight(mask, 0.5) == pytest.approx(w.completed)


def test_below_median_watch_pushes_away_above_pulls_in():
    w = SignalWeights()
    assert w.view_weight(0, 0.1) < 0 < w.view_weight(0, 0.9)


def test_unknown_signal_fails_loudly_with_its_name():
    with pytest.raises(ValueError, match="'clapped'"):
        signals.bit("clapped")


def test_masks_partition_the_table():
    assert signals.PLAYBACK_MASK & signals.EXPLICIT_MASK == 0
    every = (1 << len(signals.SIGNALS)) - 1
    assert every == signals.PLAYBACK_MASK | signals.EXPLICIT_MASK
    assert signals.names(signals.PLAYBACK_MASK | signals.EXPLICIT_MASK) == signals.SIGNALS


@pytest.mark.parametrize("bucket", range(len(MEDIAN_FRACTION)))
def test_the_bucket_median_scores_one_half(bucket):
    duration = DURATION_EDGES_S[bucket] - 1.0 if bucket < len(DURATION_EDGES_S) else 3 * 3600.0
    assert duration_bucket(duration) == bucket
    assert watch_score(MEDIAN_FRACTION[bucket] * duration, duration) == pytest.approx(0.5)


def test_same_fraction_scores_higher_on_longer_items():
    scores = [watch_score(0.5 * d, d) for d in (10.0, 90.0, 900.0, 5400.0)]
    assert scores == sorted(scores)


@given(
    a=st.floats(0, 1e5, allow_nan=False),
    b=st.floats(0, 1e5, allow_nan=False),
    duration=st.one_of(st.none(), st.floats(1, 1e5, allow_nan=False)),
)
def test_watch_score_is_a_monotone_quantile(a, b, duration):
    lo, hi = sorted((a, b))
    qa, qb = watch_score(lo, duration), watch_score(hi, duration)
    assert 0.0 <= qa <= qb <= 1.0
    assert not math.isnan(qa)
