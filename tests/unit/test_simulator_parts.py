"""Simulator building blocks: malformed payloads, the time plan, pacing, the item pools."""

from __future__ import annotations

import random
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedflow.simulator.catalogue import Pools, build_catalogue, build_creators
from feedflow.simulator.clock import Pacer, RateCurve, plan_span
from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.malformed import KINDS, Malformer
from feedflow.simulator.tastes import build_users
from feedflow.simulator.vocabulary import CATEGORY_NAMES
from feedflow.simulator.writers import ListSink
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    EngagementEvent,
    Rejection,
    decode_engagement,
)

_SIM = Simulation(
    SimConfig(users=60, items=200, rate=1000, duration_s=5, seed=2, start_ms=1_700_000_000_000),
    now_ms=0,
)
_SINK = ListSink()
_SIM.run(_SINK)
VALID = [v for t, _, _, v in _SINK.messages if t == TOPIC_ENGAGEMENT]
# One of each event type, so every shape of payload is corrupted at least once.
SHAPES = list({orjson.loads(v)["event_type"]: v for v in VALID}.values())


@given(st.integers(0, 2**32), st.sampled_from(SHAPES + VALID[:200]))
@settings(max_examples=300, deadline=None)
def test_every_malformed_payload_is_rejected(seed: int, payload: str) -> None:
    assert isinstance(decode_engagement(payload.encode()), EngagementEvent)
    bad = Malformer(random.Random(seed)).corrupt(payload)
    assert isinstance(decode_engagement(bad.encode()), Rejection), bad[:300]


def test_malformer_uses_every_kind() -> None:
    m = Malformer(random.Random(1))
    for payload in VALID[:600]:
        m.corrupt(payload)
    assert set(m.counts) == set(KINDS) and min(m.counts.values()) > 50


def _curve(users: int = 50) -> RateCurve:
    rng = random.Random(1)
    return RateCurve(build_users(rng, 1, users, build_creators(rng, 1, 100)))


@given(
    st.floats(1.0, 1e5),
    st.floats(0.5, 3600.0),
    st.integers(1_500_000_000_000, 1_800_000_000_000),
    st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_auto_speedup_expects_rate_times_duration(
    rate: float, duration: float, now: int, anchored: bool
) -> None:
    start = now - 10**9 if anchored else None
    plan = plan_span(_curve(), rate, duration, now, start_ms=start)
    assert plan.expected_events == pytest.approx(rate * duration, rel=1e-3, abs=1.0)
    if anchored:
        assert plan.start_ms == start
    else:
        assert plan.end_ms == now
    assert plan.end_ms - plan.start_ms == round(duration * plan.speedup * 1000)


def test_more_users_need_less_speedup() -> None:
    few = plan_span(_curve(20), 1000, 10, 1_700_000_000_000)
    many = plan_span(_curve(200), 1000, 10, 1_700_000_000_000)
    assert many.speedup < few.speedup / 5


def test_activity_follows_the_hour_of_day() -> None:
    hourly = _curve(400).hourly
    # A mixed audience still has quiet and busy hours.
    assert max(hourly) > 2 * min(hourly)


def test_pacer_maps_event_time_to_wall_time() -> None:
    now = [100.0]
    pacer = Pacer(start_ms=1_000_000, speedup=50.0, clock=lambda: now[0])
    assert pacer.wait_s(1_000_000) == 0.0
    assert pacer.wait_s(1_000_000 + 100_000) == pytest.approx(2.0)
    now[0] = 103.0
    assert pacer.wait_s(1_000_000 + 100_000) == pytest.approx(-1.0)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 59)), max_size=300))
@settings(max_examples=100, deadline=None)
def test_pools_hold_exactly_the_live_items(ops: list[tuple[bool, int]]) -> None:
    rng = random.Random(3)
    creators = build_creators(rng, 3, 60)
    items = build_catalogue(rng, 3, creators, 60, 0).items
    pools, live = Pools(len(CATEGORY_NAMES), len(creators)), set()
    for add, idx in ops:
        if add and idx not in live:
            pools.add(items[idx])
            live.add(idx)
        elif not add:
            pools.remove(items[idx])
            live.discard(idx)
    in_kinds = sorted(i.idx for pool in pools.by_kind for i in pool)
    in_creators = sorted(i.idx for pool in pools.by_creator for i in pool)
    assert in_kinds == in_creators == sorted(live)
    assert pools.size == len(live)
    for pool in pools.by_kind:
        assert all(item.pool_pos == pos for pos, item in enumerate(pool))


class _ClockedSink(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[int] = []

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        super().write(topic, key, ts, value)
        self.sent_at.append(time.time_ns() // 1_000_000)


def test_live_feed_never_sends_an_event_before_its_time() -> None:
    now = time.time_ns() // 1_000_000
    config = SimConfig(users=40_000, items=300, rate=1, duration_s=2, seed=4, start_ms=now,
                       speedup=1)  # fmt: skip
    sim, sink = Simulation(config, now_ms=now), _ClockedSink()
    summary = sim.run(sink, pace=True)
    # Paced, not dumped: the run lasts until its last event's time (within the 2 s span,
    # which starts at `now`, world building included) and ends soon after.
    last_ms = max(ts for _, _, ts, _ in sink.messages)
    assert last_ms - now > 1000
    assert last_ms / 1000 - 0.01 <= time.time() < now / 1000 + 6.0
    assert summary.topics[TOPIC_ENGAGEMENT] > 5
    late = [
        ts - sent
        for (topic, _, ts, _), sent in zip(sink.messages, sink.sent_at, strict=True)
        if topic == TOPIC_ENGAGEMENT
    ]
    # Building the world takes a moment, so events go out a little after their time, never before.
    assert max(late) <= 2
