"""Second-level consumption per (user, item): the playback sessionizer."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.settings import Settings
from operators import signals
from operators.consumption import (
    KIND,
    OBS,
    PROGRESS,
    View,
    ViewState,
    add_interval,
    covered,
    observation,
    pack_steps,
)
from operators.contracts import EngagementEvent
from operators.emissions import Dropped, Segment, UserEmission, ViewStart
from operators.item_info import ItemInfo, lookup_from
from operators.playback import MAX_OPEN_VIEWS, Sessionizer
from tests.unit.playback_events import (
    T0,
    Script,
    batch_consumption,
    ev,
    heartbeats,
    jittered,
    view_scripts,
)

SETTINGS = Settings()
ITEMS = lookup_from(
    {
        "m1": ItemInfo("m1", duration_s=600.0),
        "m2": ItemInfo("m2", duration_s=100.0),
        "clip": ItemInfo("clip", duration_s=30.0),
    }
)


class FakeClock:
    """Processing time under test control."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def feed(s: Sessionizer, events: list[EngagementEvent]) -> list[UserEmission]:
    out: list[UserEmission] = []
    for e in events:
        out.extend(s.on_event(e))
    return out


def segments(out: list[UserEmission]) -> list[Segment]:
    return [x for x in out if isinstance(x, Segment)]


def one_view(events, settings: Settings = SETTINGS, items=ITEMS) -> Segment:
    s = Sessionizer(settings, items, clock=FakeClock())
    out = feed(s, events) + s.flush()
    [seg] = segments(out)
    return seg


def test_continuous_playback_counts_every_second_once():
    seg = one_view([ev("media_started", 0, 0.0), *heartbeats(0, 0, 120)])
    assert (seg.consumed_s, seg.dwell_s, seg.max_position_s) == (120.0, 120.0, 120.0)
    assert seg.watch_fraction == pytest.approx(0.2)
    assert seg.signal_names == ("started", "abandoned")  # 20 % of the item when it closed


def test_a_seek_forward_does_not_count_the_skipped_seconds():
    seg = one_view(
        [
            ev("media_started", 0, 0.0),
            *heartbeats(0, 0, 30),
            ev("media_seeked", 31, 300.0, frm=31.0),
            *heartbeats(31, 300, 20),
        ]
    )
    assert seg.consumed_s == 31 + 20
    assert seg.max_position_s == 320.0


def test_a_seek_back_counts_once_for_coverage_and_again_for_dwell():
    seg = one_view(
        [
            ev("media_started", 0, 0.0),
            *heartbeats(0, 0, 60),
            ev("media_seeked", 61, 20.0, frm=61.0),
            *heartbeats(61, 20, 30),
        ]
    )
    assert seg.consumed_s == 61.0
    assert seg.dwell_s == 61.0 + 30.0


def test_a_pause_without_resume_event_still_counts_what_was_played_after_it():
    seg = one_view(
        [
            ev("media_started", 0, 0.0),
            ev("media_paused", 5, 5.0),
            ev("media_progress", 300, 12.0),  # resumed at ~293 s, played 7 s
        ]
    )
    assert seg.consumed_s == 12.0


def test_a_jump_the_clock_cannot_explain_counts_nothing():
    seg = one_view([ev("media_started", 0, 0.0), ev("media_progress", 10, 400.0)])
    assert seg.consumed_s == 0.0
    assert seg.max_position_s == 400.0


def test_out_of_order_and_duplicated_heartbeats_give_the_same_view():
    ordered = [ev("media_started", 0, 0.0), *heartbeats(0, 0, 100)]
    messy = [ordered[5], ordered[0], ordered[3], ordered[3], *ordered[6:], *ordered[1:5]]
    assert one_view(messy) == one_view(ordered)


def test_completion_is_derived_from_seconds_consumed():
    seg = one_view(
        [ev("media_started", 0, 0.0, media="m2"), *heartbeats(0, 0, 95, every=5, media="m2")]
    )
    assert seg.completed and not seg.early_abandon
    assert seg.signals & signals.bit("completed")


def test_client_completion_after_skipping_to_the_end_is_not_a_completion():
    seg = one_view(
        [
            ev("media_started", 0, 0.0, media="m2"),
            ev("media_seeked", 5, 95.0, frm=5.0, media="m2"),
            ev("media_completed", 10, 100.0, media="m2"),
        ]
    )
    assert seg.consumed_s == 10.0
    assert not seg.completed and seg.early_abandon


def test_unknown_duration_leaves_the_fraction_undefined():
    seg = one_view(
        [ev("media_started", 0, 0.0, media="x"), ev("media_completed", 20, 20.0, media="x")]
    )
    assert seg.duration_s is None and seg.watch_fraction is None
    assert seg.completed  # the client said so and nothing contradicts it
    assert not seg.early_abandon
    assert 0.0 < seg.watch_score < 1.0


def test_explicit_feedback_marks_the_open_view_but_never_opens_one():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    assert feed(s, [ev("media_liked", 0, media="m2")]) == []
    assert s.open_views == 0
    feed(s, [ev("media_started", 1, 0.0), ev("media_shared", 2), *heartbeats(1, 0, 20)])
    [seg] = segments(s.flush())
    assert seg.signal_names[:1] == ("started",) and "shared" in seg.signal_names


def test_a_view_closes_after_the_grace_following_its_end():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    out = feed(s, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 40), ev("media_stopped", 41, 41)])
    assert segments(out) == []
    out = feed(s, [ev("media_progress", 45, 45.0)])  # late telemetry inside the grace
    assert segments(out) == []
    out = feed(s, [ev("media_started", 100, 0.0, media="m2")])
    [seg] = segments(out)
    assert seg.consumed_s == 45.0 and seg.end_ts == T0 + 45_000
    assert any(isinstance(x, ViewStart) and x.media_id == "m2" for x in out)


def test_a_view_closes_after_inactivity_in_event_time():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    feed(s, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 50)])
    assert segments(feed(s, [ev("media_started", 1000, 0.0, media="m2")])) == []
    [seg] = segments(feed(s, [ev("media_progress", 50 + 1800, 10.0, media="m2")]))
    assert seg.media_id == "m1"


def test_replay_after_the_end_opens_a_new_view():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    feed(
        s,
        [ev("media_started", 0, 0.0, media="clip"), ev("media_completed", 30, 30.0, media="clip")],
    )
    out = feed(s, [ev("media_replay", 32, 0.0, media="clip")])
    [first] = segments(out)
    assert first.completed and first.replays == 0
    feed(s, [ev("media_progress", 42, 10.0, media="clip")])
    [second] = segments(s.flush())
    assert second.replays == 1 and second.consumed_s == 10.0
    assert "replay" in second.signal_names


def test_late_events_are_reported_and_not_applied():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    feed(s, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 1000)])
    [dropped] = feed(s, [ev("media_progress", 100, 300.0, media="m2")])
    assert isinstance(dropped, Dropped) and dropped.outcome == "late"
    assert dropped.lag_ms == 900_000
    assert s.open_views == 1


def test_an_event_for_a_view_that_already_closed_is_late_not_a_new_view():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    feed(s, [ev("media_started", 0, 0.0), ev("media_completed", 10, 10.0)])
    feed(s, [ev("media_started", 100, 0.0, media="m2")])  # closes m1 (grace over)
    [dropped] = feed(s, [ev("media_progress", 5, 5.0)])
    assert isinstance(dropped, Dropped) and "closed" in dropped.reason
    assert s.open_views == 1


def test_an_auto_play_skip_is_a_negative_view_not_a_play():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    assert feed(s, [ev("media_skipped", 0, media="m2")]) == []
    [seg] = segments(s.flush())
    assert seg.consumed_s == 0.0 and seg.signal_names == ("skipped",)  # not also "abandoned"


def test_open_views_are_bounded():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    out = feed(s, [ev("media_started", i, 0.0, media=f"x{i}") for i in range(MAX_OPEN_VIEWS + 2)])
    assert s.open_views == MAX_OPEN_VIEWS
    assert [x.media_id for x in segments(out)] == ["x0", "x1"]


def test_idle_timer_runs_on_processing_time_since_the_last_event():
    clock = FakeClock()
    s = Sessionizer(SETTINGS, ITEMS, clock=clock)
    feed(s, [ev("media_started", 0, 0.0), ev("media_completed", 10, 10.0)])
    assert s.notify_at() == clock.now + timedelta(seconds=SETTINGS.view_close_grace_s)
    clock.advance(SETTINGS.view_close_grace_s - 1)
    assert s.on_timer() == []
    clock.advance(1)
    [seg] = segments(s.on_timer())
    assert seg.consumed_s == 10.0 and s.notify_at() is None


def test_a_backfill_of_old_events_is_not_closed_by_todays_date():
    clock = FakeClock()  # 2030; events are from 2023
    s = Sessionizer(SETTINGS, ITEMS, clock=clock)
    feed(s, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 30)])
    assert s.on_timer() == []  # no processing time has passed since the last event
    assert s.notify_at() == clock.now + timedelta(seconds=SETTINGS.view_inactivity_s)


def test_the_provisional_segment_is_the_final_one_in_waiting():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    feed(s, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 120)])
    [live] = s.provisional()
    [final] = segments(s.flush())
    assert not live.final and final.final
    assert live.consumed_s == final.consumed_s == 120.0
    assert not live.early_abandon and final.early_abandon


def test_a_two_hour_film_keeps_view_state_small():
    s = Sessionizer(SETTINGS, lookup_from({"film": ItemInfo("film", duration_s=7200.0)}))
    feed(s, [ev("media_started", 0, 0.0, media="film"), *heartbeats(0, 0, 7200, media="film")])
    assert len(pickle.dumps(s.snapshot())) < 2048
    [seg] = segments(s.flush())
    assert seg.consumed_s == 7200.0 and seg.completed


def test_interval_merging_matches_a_set_of_seconds():
    iv: list[int] = []
    seen: set[int] = set()
    rnd = random.Random(3)
    for _ in range(300):
        a = rnd.randrange(0, 500)
        b = a + rnd.randrange(1, 40)
        add_interval(iv, a, b)
        seen.update(range(a, b))
        assert covered(iv) == len(seen)
        assert iv == sorted(iv)


def test_a_view_snapshot_round_trips():
    v = View("m1", T0)
    for k in range(50):
        v.insert(
            observation(T0 + k * 10_000, PROGRESS, k * 10.0), cutoff_ms=T0 + k * 10_000 - 120_000
        )
    again = View.resume(pickle.loads(pickle.dumps(v.snapshot())))
    assert again.snapshot() == v.snapshot()
    # heartbeats are 5 bytes each in a snapshot, past the first observation buffered
    assert len(v.snapshot().observations) == OBS.size + 4 + 5 * (len(v.buf) - 1)
    assert (again.consumed_ds(), again.dwell_ds()) == (v.consumed_ds(), v.dwell_ds())
    # as msgpack gives it back inside a sessionizer snapshot: the fields by position
    positional = tuple(msgspec.structs.astuple(v.snapshot()))
    assert View.resume(positional).snapshot() == v.snapshot()


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 900),
            st.sampled_from(sorted(KIND.values())),
            st.integers(0, 9000),
            st.one_of(st.none(), st.integers(0, 9000)),
        ),
        max_size=60,
    ),
)
def test_the_steps_a_snapshot_holds_follow_every_insert_and_fold(observations):
    # In any arrival order (some far apart in time, some with a seek origin), with folds.
    v = View("m1", T0)
    for sec, kind, pos, origin in observations:
        obs = observation(T0 + sec * 1000, kind, pos / 10, None if origin is None else origin / 10)
        v.insert(obs, cutoff_ms=T0 + sec * 1000 - 120_000)
        assert v.steps == pack_steps(v.buf)
    again = View.resume(v.snapshot())
    assert again.buf == v.buf and again.snapshot() == v.snapshot()


def test_a_sessionizer_snapshot_of_version_1_resumes_as_it_was():
    # Version 1 kept a view's observations as packed 17-byte records.
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    for k in range(30):
        s.on_event(ev("media_started" if k == 0 else "media_progress", k * 10, k * 10.0))
    _, user, wm, views, closed = msgspec.msgpack.decode(s.snapshot())
    old = [View.resume(view) for view in views]
    records = [
        [*view[:10], b"".join(o.buf), *view[11:]] for view, o in zip(views, old, strict=True)
    ]
    resumed = Sessionizer(
        SETTINGS, ITEMS, resume=msgspec.msgpack.encode([1, user, wm, records, closed])
    )
    assert resumed.snapshot() == s.snapshot()
    assert resumed.provisional() == s.provisional()


def test_a_newer_sessionizer_snapshot_is_refused_and_the_view_layout_is_pinned():
    s = Sessionizer(SETTINGS, ITEMS, clock=FakeClock())
    s.on_event(ev("media_started", 0, 0))
    version, *rest = msgspec.msgpack.decode(s.snapshot())
    with pytest.raises(ValueError, match="newer than this code"):
        Sessionizer(SETTINGS, ITEMS, resume=msgspec.msgpack.encode([version + 1, *rest]))
    # The order of a view's fields is the recovery format (positional in msgpack): append
    # new fields at the end with a default, never reorder, or stores in the field break.
    assert ViewState.__struct_fields__ == (
        "media_id", "opened_ts", "first_ts", "last_ts", "end_ts", "flags", "replays",
        "client_completed", "max_pos", "content_type", "observations", "tail", "intervals",
        "dwell",
    )  # fmt: skip


# -- properties -------------------------------------------------------------------------

SMALL_LATENESS = Settings(allowed_lateness_s=120)  # small, so folding is exercised too


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(view_scripts(), st.randoms(use_true_random=False))
def test_any_interleaving_and_duplication_gives_the_same_view(script: Script, rnd):
    expected = one_view(script.events, SMALL_LATENESS)
    shuffled = jittered(script.events, rnd, max_delay_s=100)  # within the allowed lateness
    assert one_view(shuffled, SMALL_LATENESS) == expected


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(view_scripts(), st.randoms(use_true_random=False))
def test_online_consumption_equals_the_batch_oracle(script: Script, rnd):
    shuffled = jittered(script.events, rnd, max_delay_s=100)
    seg = one_view(shuffled, SMALL_LATENESS)
    consumed, dwell, top = batch_consumption(script.events)
    assert (round(seg.consumed_s * 10), round(seg.dwell_s * 10)) == (consumed, dwell)
    assert round(seg.max_position_s * 10) == top


@st.composite
def sessions(draw: st.DrawFn) -> list[EngagementEvent]:
    """A user's stream: a few views of a few items, one after another, mildly reordered."""
    events, t = [], 0.0
    for _ in range(draw(st.integers(1, 4))):
        media = draw(st.sampled_from(["m1", "m2", "clip", "x"]))
        script = draw(view_scripts(media=media, start_s=t))
        events += script.events
        if draw(st.booleans()):
            events.append(ev("media_liked", script.end_s - 1, media=media))
        t = script.end_s + draw(st.sampled_from([5, 40, 2000]))
    rnd: random.Random = draw(st.randoms(use_true_random=False))
    return jittered(events, rnd, max_delay_s=20)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.data())
def test_snapshot_resume_continue_equals_an_uninterrupted_run(events, data):
    cut = data.draw(st.integers(0, len(events)))
    clock = FakeClock()
    whole = Sessionizer(SMALL_LATENESS, ITEMS, clock=clock)
    expected = feed(whole, events) + whole.flush()
    first = Sessionizer(SMALL_LATENESS, ITEMS, clock=clock)
    out = feed(first, events[:cut])
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    resumed = Sessionizer(SMALL_LATENESS, ITEMS, resume=snap, clock=clock)
    out += feed(resumed, events[cut:]) + resumed.flush()
    assert out == expected
