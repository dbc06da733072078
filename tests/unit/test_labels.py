"""The label join: windows, lateness, attribution, idle close, replays (operators/labels.py)."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.contracts import EngagementEvent, Impression, ImpressionItem
from operators.emissions import Dropped
from operators.labels import (
    LabelConfig,
    LabelJoin,
    LabelledImpression,
    LabelState,
    label_of,
    label_state,
)

W, L = 60_000, 10_000
CFG = LabelConfig(window_ms=W, lateness_ms=L, long_watch_s=30.0, idle_s=600.0)
T0 = 1_700_000_000_000


def imp(rid: str, ts: int, *media: str) -> Impression:
    items = [
        ImpressionItem(media_id=m, position=p, score=1.0, source="ann", features=[float(p)])
        for p, m in enumerate(media)
    ]
    return Impression(request_id=rid, user_id="u1", ts=ts, arm="a", model_version="v",
                      index_version="i", items=items)  # fmt: skip


def ev(kind: str, media: str, ts: int, pos: float | None = None, eid: str = "") -> EngagementEvent:
    return EngagementEvent(event_id=eid or f"{kind}-{media}-{ts}", event_type=kind, user_id="u1",
                           media_id=media, ts=ts, position_s=pos)  # fmt: skip


def run(inputs: list[Impression | EngagementEvent], join: LabelJoin | None = None) -> list:
    join = join or LabelJoin(CFG)
    out = [x for value in inputs for x in join.on_event(value)]
    return out + join.flush()


def labels(out: list) -> dict[str, tuple[tuple[str, bool, str], ...]]:
    return {
        li.request_id: tuple((e.media_id, e.label, e.reason) for e in li.examples)
        for li in out
        if isinstance(li, LabelledImpression)
    }


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], (False, "not_played")),
        ([("media_started", 0.0), ("media_completed", 300.0)], (True, "completed")),
        ([("media_started", 0.0), ("media_progress", 30.0)], (True, "long_watch")),
        ([("media_started", 0.0), ("media_stopped", 12.0)], (False, "abandoned")),
        ([("media_paused_early", 5.0)], (False, "abandoned")),
        ([("media_skipped", None)], (False, "skipped")),
        ([("media_liked", None)], (True, "liked")),
        ([("media_shared", None)], (True, "shared")),
        ([("media_added_to_playlist", None)], (True, "playlist")),
        ([("media_replay", 0.0)], (True, "replay")),
        ([("media_completed", 300.0), ("media_disliked", None)], (False, "disliked")),
    ],
)
def test_each_signal_gives_its_label(events: list, expected: tuple[bool, str]) -> None:
    inputs: list = [imp("r1", T0, "m1")]
    inputs += [ev(kind, "m1", T0 + 1000 * (n + 1), pos) for n, (kind, pos) in enumerate(events)]
    assert labels(run(inputs)) == {"r1": (("m1", *expected),)}
    assert label_of(0, -1, 30.0) == (False, "not_played")


def test_the_window_includes_both_ends_and_nothing_outside() -> None:
    inputs: list = [
        imp("r1", T0, "a", "b", "c", "d"),
        ev("media_liked", "a", T0),  # at the impression: counts
        ev("media_liked", "b", T0 + W),  # at the window's end: counts
        ev("media_liked", "c", T0 + W + 1),  # a millisecond after: does not
        ev("media_liked", "d", T0 - 1),  # before the impression: does not
    ]
    got = labels(run(inputs))["r1"]
    assert [label for _, label, _ in got] == [True, True, False, False]


def test_an_impression_closes_once_the_watermark_passes_its_window() -> None:
    join = LabelJoin(CFG)
    assert join.on_event(imp("r1", T0, "m1")) == []
    # The watermark trails the newest input by the lateness: at T0 + W + L it is at the
    # window's end, where an event could still count.
    assert join.on_event(ev("media_started", "x", T0 + W + L)) == []
    closed = join.on_event(ev("media_started", "x", T0 + W + L + 1))
    assert labels(closed) == {"r1": (("m1", False, "not_played"),)}
    assert join.open == {}


def test_late_inputs_are_dropped_and_said_so() -> None:
    join = LabelJoin(CFG)
    join.on_event(imp("r1", T0 + 5 * L, "m1"))
    late_ev = join.on_event(ev("media_liked", "m1", T0 + 4 * L - 1))
    late_imp = join.on_event(imp("r0", T0, "m1"))
    assert [(d.outcome, d.event_type) for d in late_ev + late_imp] == [
        ("late", "media_liked"),
        ("late", "impression"),
    ]
    assert all(isinstance(d, Dropped) and d.lag_ms > L for d in late_ev + late_imp)
    # Just inside the lateness is fine.
    assert join.on_event(ev("media_liked", "m1", T0 + 4 * L)) == []


def test_a_duplicate_impression_is_dropped_and_duplicate_events_change_nothing() -> None:
    join = LabelJoin(CFG)
    join.on_event(imp("r1", T0, "m1"))
    again = join.on_event(imp("r1", T0, "m1"))
    assert [(d.outcome, d.event_id) for d in again] == [("duplicate", "r1")]
    for _ in range(3):
        join.on_event(ev("media_progress", "m1", T0 + 5_000, 31.0, eid="e1"))
    assert join.entries == {"m1": [(T0 + 5_000, 1, 31)]}
    assert labels(join.flush()) == {"r1": (("m1", True, "long_watch"),)}


def test_engagement_counts_for_the_latest_showing_of_the_item() -> None:
    inputs: list = [
        imp("r1", T0, "m1", "m2"),
        ev("media_skipped", "m1", T0 + 10_000),  # before r2 showed it: r1's
        imp("r2", T0 + 20_000, "m1"),
        ev("media_liked", "m2", T0 + 25_000),  # only r1 showed m2
        ev("media_liked", "m1", T0 + 25_000),  # r2 is the latest showing of m1
    ]
    got = labels(run(inputs))
    assert got["r1"] == (("m1", False, "skipped"), ("m2", True, "liked"))
    assert got["r2"] == (("m1", True, "liked"),)


def test_engagement_that_arrives_before_its_impression_still_counts() -> None:
    events = [ev("media_started", "m1", T0 + 2_000, 0.0), ev("media_completed", "m1", T0 + 9_000)]
    ordered = labels(run([imp("r1", T0, "m1"), *events]))
    reversed_topics = labels(run([*events, imp("r1", T0, "m1")]))
    assert ordered == reversed_topics == {"r1": (("m1", True, "completed"),)}


def test_items_keep_their_feature_rows_and_positions() -> None:
    (li,) = run([imp("r1", T0, "a", "b")])
    assert [(e.position, e.features) for e in li.examples] == [(0, (0.0,)), (1, (1.0,))]
    assert (li.user_id, li.model_version, li.arm, li.ts) == ("u1", "v", "a", T0)


def test_engagement_no_impression_can_use_is_forgotten() -> None:
    join = LabelJoin(CFG)
    join.on_event(imp("r1", T0, "m1"))
    join.on_event(ev("media_liked", "m9", T0 + 1_000))
    join.on_event(ev("media_liked", "m1", T0 + 3 * W))  # r1 closes; the old entries can go
    assert set(join.entries) == {"m1"} and join.entries["m1"][0][0] == T0 + 3 * W
    assert not join.open


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_quiet_user_is_closed_by_the_idle_timer_and_downtime_does_not_count() -> None:
    clock = FakeClock()
    join = LabelJoin(CFG, clock=clock)
    join.on_event(imp("r1", T0, "m1"))
    join.on_event(ev("media_liked", "m1", T0 + 1_000))
    deadline = join.notify_at()
    assert deadline == clock.now + timedelta(seconds=600)
    assert join.on_timer(deadline - timedelta(seconds=1)) == []
    assert not join.is_expired(deadline - timedelta(seconds=1))
    # A restart an hour later re-arms the timer from the restart, not from before the stop.
    clock.now += timedelta(hours=1)
    restored = LabelJoin(CFG, resume=join.snapshot(), clock=clock)
    assert restored.notify_at() == clock.now + timedelta(seconds=600)
    assert restored.on_timer(clock.now) == []
    fired = restored.on_timer(clock.now + timedelta(seconds=600))
    assert labels(fired) == {"r1": (("m1", True, "liked"),)}
    assert restored.is_expired(clock.now + timedelta(seconds=600))


def _traffic(rng: random.Random, n: int, span: int) -> list[Impression | EngagementEvent]:
    media = ["m1", "m2", "m3"]
    kinds = ["media_started", "media_progress", "media_liked", "media_disliked",
             "media_skipped", "media_completed", "media_paused_early"]  # fmt: skip
    out: list[Impression | EngagementEvent] = []
    for k in range(n):
        ts = T0 + rng.randrange(span)
        if rng.random() < 0.25:
            out.append(imp(f"r{k}", ts, *rng.sample(media, 2)))
        else:
            pos = float(rng.randrange(60))
            out.append(ev(rng.choice(kinds), rng.choice(media), ts, pos, eid=f"e{k}"))
    return out


def test_snapshot_restore_continue_gives_the_uninterrupted_labels() -> None:
    rng = random.Random(5)
    inputs = sorted(_traffic(rng, 60, 5 * W), key=lambda x: x.ts)
    whole = run(inputs)
    for cut in range(0, len(inputs), 7):
        first = LabelJoin(CFG)
        out = [x for value in inputs[:cut] for x in first.on_event(value)]
        resumed = LabelJoin(CFG, resume=first.snapshot())
        assert out + run(inputs[cut:], resumed) == whole


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_any_order_within_the_lateness_and_any_duplicates_give_the_same_labels(
    seed: int, n: int
) -> None:
    rng = random.Random(seed)
    inputs = _traffic(rng, n, 4 * W)
    in_time_order = labels(run(sorted(inputs, key=lambda x: x.ts)))
    # Each input (and a few replayed copies) arrives up to the lateness after its event time,
    # so none is ever late: the arrival order may differ, the labels may not.
    copies = inputs + [rng.choice(inputs) for _ in range(rng.randrange(n + 1))]
    arrival = sorted(copies, key=lambda x: x.ts + rng.randrange(L + 1))
    out = run(arrival)
    assert not [x for x in out if isinstance(x, Dropped) and x.outcome == "late"]
    assert labels(out) == in_time_order


def test_a_first_version_snapshot_resumes_and_a_newer_one_is_refused() -> None:
    rng = random.Random(11)
    inputs = sorted(_traffic(rng, 30, 3 * W), key=lambda x: x.ts)
    first = LabelJoin(CFG)
    for value in inputs[:15]:
        first.on_event(value)
    state = label_state(first.snapshot())
    positional = (state.max_ts, state.open, state.entries)  # how version 1 kept it
    resumed = LabelJoin(CFG, resume=positional)
    assert run(inputs[15:], resumed) == run(inputs[15:], LabelJoin(CFG, resume=state))
    newer = (state.version + 1, *first.snapshot()[1:])
    with pytest.raises(ValueError, match="newer than this code"):
        LabelJoin(CFG, resume=newer)
    # the field order is the recovery format: append with a default, never reorder
    assert LabelState.__struct_fields__ == ("version", "user_id", "max_ts", "open", "entries")


def test_labels_closed_after_a_restart_still_name_the_user() -> None:
    join = LabelJoin(CFG)
    join.on_event(imp("r1", T0, "m1", "m2"))
    restored = LabelJoin(CFG, resume=pickle.loads(pickle.dumps(join.snapshot())))
    assert [x.user_id for x in restored.flush()] == ["u1"]
