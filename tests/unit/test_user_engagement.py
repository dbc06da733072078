"""Everything per user behind one key: dedup, sessionizer, profile, feature records."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.settings import Settings
from operators.co_engagement import CoVisit
from operators.contracts import EngagementEvent
from operators.dedup import id_hash32, id_hash64
from operators.emissions import Dropped, Feedback, Segment, ViewStart
from operators.item_info import ItemInfo, lookup_from
from operators.user_engagement import (
    IDLE_FLUSH_S,
    UserEngagement,
    UserOutput,
    UserState,
    user_state,
)
from operators.user_features import UserFeatures
from tests.unit.playback_events import T0, batch_consumption, ev, heartbeats, jittered

SETTINGS = Settings()
T = TypeVar("T")
DAY_S = 86_400


def unit(i: int) -> np.ndarray:
    v = np.zeros(64, dtype=np.float32)
    v[i % 64] = 1.0
    return v


CATALOGUE = {
    f"m{i}": ItemInfo(
        f"m{i}",
        duration_s=float((30, 120, 600)[i % 3]),
        content_type=("VIDEO", "AUDIO")[i % 2],
        category=("news", "music", "sport", "kids")[i % 4],
        creator_id=f"c{i % 6}",
        language=("en", "de")[i % 2],
        published_at=T0 - 3_600_000,
        vector=unit(i),
    )
    for i in range(30)
}
ITEMS = lookup_from(CATALOGUE)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def run(
    user: UserEngagement, events: list[EngagementEvent], flush: bool = True
) -> list[UserOutput]:
    out: list[UserOutput] = []
    for e in events:
        out.extend(user.on_event(e))
    if flush:
        out.extend(user.flush())
    return out


def of(kind: type[T], out: list[UserOutput]) -> list[T]:
    return [x for x in out if isinstance(x, kind)]


def test_a_repeated_event_id_is_dropped_and_reported():
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    like = ev("media_liked", 0, media="m1")
    assert of(Feedback, user.on_event(like))
    [dup] = user.on_event(like)
    assert isinstance(dup, Dropped) and dup.outcome == "duplicate"
    assert user.features().engagements == 1


def test_late_events_are_counted_in_the_features_not_applied():
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    run(user, [ev("media_started", 0, 0.0), *heartbeats(0, 0, 1000)], flush=False)
    [late] = user.on_event(ev("media_liked", 10, media="m2"))
    assert isinstance(late, Dropped) and late.outcome == "late"
    f = user.features()
    assert f.late_events == 1 and f.engagements == 1  # the open view only


def test_feature_records_follow_changes_not_every_heartbeat():
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    out = run(user, [ev("media_started", 0, 0.0)], flush=False)
    assert [type(x).__name__ for x in out] == ["ViewStart", "UserFeatures"]
    quiet = run(user, heartbeats(0, 0, 50), flush=False)
    assert quiet == []
    refreshed = run(user, heartbeats(50, 50, 20), flush=False)
    [record] = of(UserFeatures, refreshed)
    assert record.ts == T0 + 60_000 and record.continue_watching == (("m1", 60),)


def test_a_user_gone_quiet_gets_the_record_the_skipped_heartbeats_changed():
    """Heartbeats within the refresh are not written; once the user is quiet for
    IDLE_FLUSH_S of processing time the stored record catches up with the state, also
    after a snapshot and resume in between (a crash)."""
    clock = FakeClock()
    user = UserEngagement(SETTINGS, ITEMS, clock=clock)
    run(user, [ev("media_started", 0, 0.0)], flush=False)
    assert run(user, heartbeats(0, 0, 40), flush=False) == []
    resumed = UserEngagement(SETTINGS, ITEMS, resume=user.snapshot(), clock=clock)
    due = resumed.notify_at()
    assert due == clock.now + timedelta(seconds=IDLE_FLUSH_S)
    clock.now = due - timedelta(seconds=1)
    assert resumed.on_timer() == []
    clock.now = due
    [record] = of(UserFeatures, resumed.on_timer())
    assert record == resumed.features() and record.continue_watching == (("m1", 40),)
    assert resumed.on_timer() == []  # written once, until something changes again


def test_feedback_reaches_the_item_side_once_per_user_and_item():
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    out = run(
        user,
        [
            ev("media_liked", 0, media="m3", eid="a"),
            ev("media_liked", 5, media="m3", eid="b"),
            ev("subscription_to_creator", 6, media=None, creator="c1"),
        ],
    )
    assert [(f.signal, f.media_id, f.creator_id) for f in of(Feedback, out)] == [
        ("liked", "m3", "c3"),
        ("subscribed", None, "c1"),
    ]


def test_idle_views_close_on_the_timer_and_the_state_expires():
    clock = FakeClock()
    user = UserEngagement(SETTINGS, ITEMS, clock=clock)
    run(user, [ev("media_started", 0, 0.0), ev("media_completed", 30, 30.0)], flush=False)
    due = user.notify_at()
    assert due == clock.now + timedelta(seconds=SETTINGS.view_close_grace_s)
    clock.now = due
    out = user.on_timer()
    assert [type(x).__name__ for x in out] == ["Segment", "UserFeatures"]
    assert not user.is_expired()
    expiry = user.notify_at()
    assert expiry == due - timedelta(seconds=30) + timedelta(days=SETTINGS.user_ttl_days)
    assert user.is_expired(expiry)


def test_a_years_old_replay_gives_the_live_features():
    events = [
        ev("media_started", 0, 0.0, media="m2"),
        *heartbeats(0, 0, 115, media="m2"),
        ev("media_completed", 120, 120.0, media="m2"),
        ev("media_liked", 121, media="m2"),
        ev("media_started", 4000, 0.0, media="m4"),
        *heartbeats(4000, 0, 200, media="m4"),
        ev("media_stopped", 4205, 205.0, media="m4"),
    ]
    shift = 3 * 365 * DAY_S * 1000
    old = [msgspec.structs.replace(e, ts=e.ts - shift) for e in events]
    live = of(UserFeatures, run(UserEngagement(SETTINGS, ITEMS, clock=FakeClock()), events))
    replay = of(UserFeatures, run(UserEngagement(SETTINGS, ITEMS, clock=FakeClock()), old))
    assert [msgspec.structs.replace(f, ts=0) for f in live] == [
        msgspec.structs.replace(f, ts=0) for f in replay
    ]
    assert live[-1].top_categories == ("news", "sport") and live[-1].completion_rate_7d == 0.5


# -- a generated multi-view stream, with its ground truth ---------------------------------


def plan_user(
    rnd: random.Random, user: str, views: int
) -> tuple[list[EngagementEvent], list[list[EngagementEvent]]]:
    """Events of `views` views of one user, and each view's events (the ground truth)."""
    events: list[EngagementEvent] = []
    truth: list[list[EngagementEvent]] = []
    t = rnd.uniform(0, 600)
    for _ in range(views):
        media = f"m{rnd.randrange(30)}"
        duration = CATALOGUE[media].duration_s or 600.0
        view = [ev("media_started", t, 0.0, media=media, user=user)]
        pos = 0.0
        for _ in range(rnd.randrange(1, 40)):
            step = rnd.random()
            if step < 0.08:
                target = rnd.uniform(0, duration)
                t += 1
                view.append(ev("media_seeked", t, target, frm=pos, media=media, user=user))
                pos = target
            else:
                t, pos = t + 10, min(pos + 10, duration)
                view.append(ev("media_progress", t, pos, media=media, user=user))
        ended = rnd.random() < 0.8
        if ended:
            t += 2
            kind = "media_completed" if pos >= duration else "media_stopped"
            view.append(ev(kind, t, pos, media=media, user=user))
        truth.append(view)
        events += view
        if rnd.random() < 0.3:
            signal = rnd.choice(["media_liked", "media_disliked", "media_shared"])
            events.append(ev(signal, t - 1, media=media, user=user))
        t += rnd.uniform(60, 300) if ended else SETTINGS.view_inactivity_s + 60
    return events, truth


def with_duplicates(events: list[EngagementEvent], rnd: random.Random) -> list[EngagementEvent]:
    out = []
    for e in events:
        out.append(e)
        if rnd.random() < 0.05:
            out.append(e)  # a producer retry: same event id
        elif rnd.random() < 0.05:
            out.append(msgspec.structs.replace(e, event_id=e.event_id + "/retry"))
    return out


def test_online_aggregates_equal_a_batch_recomputation():
    rnd = random.Random(11)
    users = {f"u{i}": plan_user(rnd, f"u{i}", views=rnd.randrange(1, 12)) for i in range(40)}
    for name, (events, truth) in users.items():
        stream = jittered(with_duplicates(events, rnd), rnd, max_delay_s=60)
        out = run(UserEngagement(SETTINGS, ITEMS, clock=FakeClock()), stream)
        segs = of(Segment, out)
        assert len(segs) == len(truth), name
        assert not [d for d in of(Dropped, out) if d.outcome == "late"]
        by_start: dict[tuple[str | None, int], Segment] = {
            (s.media_id, s.start_ts): s for s in segs
        }
        completed = 0
        for view in truth:
            seg = by_start[(view[0].media_id, view[0].ts)]
            consumed, dwell, top = batch_consumption(view)
            assert (round(seg.consumed_s * 10), round(seg.dwell_s * 10)) == (consumed, dwell)
            assert round(seg.max_position_s * 10) == top
            duration = CATALOGUE[seg.media_id].duration_s or 0.0
            assert seg.completed == (consumed / 10 / duration > 0.9)
            completed += seg.completed
        feedback = {
            (e.media_id, e.event_type) for e in events if e.event_type.endswith(("liked", "shared"))
        }
        record = of(UserFeatures, out)[-1]
        assert record.engagements == len(truth) + len(feedback)
        assert record.completion_rate_7d == round(completed / len(truth), 4)
        disliked = {e.media_id for e in events if e.event_type == "media_disliked"}
        assert set(record.disliked_hashes()) == {id_hash32(m) for m in disliked if m}
        assert len({x.media_id for x in of(ViewStart, out)}) == len({v[0].media_id for v in truth})


@st.composite
def user_streams(draw: st.DrawFn) -> list[EngagementEvent]:
    rnd = random.Random(draw(st.integers(0, 2**32)))
    events, _ = plan_user(rnd, "u1", views=draw(st.integers(1, 6)))
    return jittered(with_duplicates(events, rnd), rnd, max_delay_s=30)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(user_streams(), st.data())
def test_snapshot_resume_continue_equals_an_uninterrupted_run(events, data):
    cut = data.draw(st.integers(0, len(events)))
    clock = FakeClock()
    expected = run(UserEngagement(SETTINGS, ITEMS, clock=clock), events)
    first = UserEngagement(SETTINGS, ITEMS, clock=clock)
    out = run(first, events[:cut], flush=False)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    out += run(UserEngagement(SETTINGS, ITEMS, resume=snap, clock=clock), events[cut:])
    assert out == expected


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(user_streams())
def test_applying_the_stream_twice_changes_nothing(events):
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    run(user, events, flush=False)
    before = (user.features(), user.provisional())
    again = run(user, events, flush=False)
    assert of(Segment, again) == [] and of(Feedback, again) == []
    after = (user.features(), user.provisional())
    assert after[1] == before[1]
    assert msgspec.structs.replace(after[0], late_events=0) == msgspec.structs.replace(
        before[0], late_events=0
    )


def test_positive_views_seed_co_engagement_and_negative_ones_do_not() -> None:
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    full = [ev("media_started", 0, 0, media="m0"), ev("media_completed", 30, 30, media="m0")]
    kept = [ev("media_started", 40, 0, media="m3"), ev("media_stopped", 140, 100, media="m3")]
    quit_early = [ev("media_started", 200, 0, media="m6"), ev("media_stopped", 205, 5, media="m6")]
    disliked = [
        ev("media_started", 300, 0, media="m9"),
        ev("media_stopped", 400, 100, media="m9"),
        ev("media_disliked", 401, media="m9"),
    ]
    liked_only = [ev("media_liked", 500, media="m12")]
    out = run(user, full + kept + quit_early + disliked + liked_only)
    visits = [x for x in out if isinstance(x, CoVisit)]
    # m6 was abandoned early; m9 was watched but disliked: neither links to anything.
    assert [(v.media_id, v.prior) for v in visits] == [
        ("m0", ()), ("m3", ("m0",)), ("m12", ("m3", "m0"))
    ]  # fmt: skip
    seeds = user.features().co_seeds()
    assert seeds == (id_hash64("m12"), id_hash64("m3"), id_hash64("m0"))
    resumed = UserEngagement(SETTINGS, ITEMS, pickle.loads(pickle.dumps(user.snapshot())))
    assert resumed.features().co_seeds() == seeds


def test_a_version_1_snapshot_resumes_without_a_co_engagement_history() -> None:
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    run(user, [ev("media_started", 0, 0, media="m0"), ev("media_completed", 30, 30, media="m0")])
    s = user_state(user.snapshot())
    old = (1, s.dedup, s.sessions, s.profile, s.emitted_ts)
    resumed = UserEngagement(SETTINGS, ITEMS, old)
    assert resumed.features().co_seeds() == () and resumed.features().engagements == 1


def test_a_newer_snapshot_is_refused_and_the_layout_is_pinned() -> None:
    user = UserEngagement(SETTINGS, ITEMS, clock=FakeClock())
    run(user, [ev("media_started", 0, 0, media="m0")])
    version, *rest = user.snapshot()
    with pytest.raises(ValueError, match="not supported"):
        UserEngagement(SETTINGS, ITEMS, (version + 1, *rest))
    # The order of the fields is the recovery format (a tuple in the snapshot): append new
    # fields at the end with a default, never reorder, or stores in the field break.
    assert UserState.__struct_fields__ == (
        "version", "dedup", "sessions", "profile", "emitted_ts", "positives", "pending",
    )  # fmt: skip
