"""Explicit event-time buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.buckets import BucketRing

MIN = 60_000


def test_an_hour_of_minutes_slides_with_event_time():
    ring = BucketRing(width_ms=MIN, count=60, fields=1)
    for minute in range(90):
        ring.add(minute * MIN, 0)
    assert ring.total(0, now_ms=89 * MIN) == 60
    assert ring.total(0, now_ms=89 * MIN, span=5) == 5
    assert ring.total(0, now_ms=200 * MIN) == 0


def test_an_event_behind_the_horizon_is_refused():
    ring = BucketRing(width_ms=MIN, count=10, fields=2)
    assert ring.add_row(100 * MIN, (1.0, 2.0))
    assert not ring.add(90 * MIN, 0)  # its slot holds minute 100
    assert ring.totals(100 * MIN) == (1.0, 2.0)


def test_snapshot_shape_is_checked():
    ring = BucketRing(width_ms=MIN, count=10, fields=2)
    with pytest.raises(ValueError, match="shape"):
        BucketRing(width_ms=MIN, count=11, fields=2, resume=ring.snapshot())


@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 2)), max_size=80),
    st.randoms(use_true_random=False),
)
def test_totals_do_not_depend_on_arrival_order(events, rnd):
    def run(order: list[tuple[int, int]]) -> BucketRing:
        ring = BucketRing(width_ms=MIN, count=30, fields=3)
        for minute, field in order:
            ring.add(minute * MIN, field)
        return ring

    shuffled = list(events)
    rnd.shuffle(shuffled)
    now = max((m for m, _ in events), default=0) * MIN
    a, b = run(events), run(shuffled)
    assert a.totals(now) == b.totals(now)
    # and equal to a batch count over the window
    expected = tuple(
        float(sum(1 for m, f in events if f == field and m * MIN // MIN > now // MIN - 30))
        for field in range(3)
    )
    assert a.totals(now) == expected
