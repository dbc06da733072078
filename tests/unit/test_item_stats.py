"""Per-item stats and trending score on the item's event time."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.settings import Settings
from operators.emissions import Feedback, Segment, ViewStart
from operators.item_info import ItemInfo, lookup_from
from operators.item_stats import (
    ItemInput,
    ItemStats,
    ItemStatsRecord,
    ScoreUpdate,
    engagement_multiplier,
    ranking_keys,
)
from tests.unit.playback_events import T0

MIN = 60_000
HOUR = 3_600_000
SETTINGS = Settings()
ITEMS = lookup_from(
    {
        "m1": ItemInfo("m1", published_at=T0, content_type="VIDEO", category="news"),
        "old": ItemInfo("old", published_at=T0 - 48 * HOUR),
    }
)


def play(ts: int, media: str = "m1") -> ViewStart:
    return ViewStart(user_id="u", media_id=media, ts=ts)


def closed(ts: int, fraction: float | None, media: str = "m1") -> Segment:
    return Segment(
        user_id="u",
        media_id=media,
        start_ts=ts - 1000,
        end_ts=ts,
        consumed_s=1.0,
        dwell_s=1.0,
        max_position_s=1.0,
        last_position_s=1.0,
        duration_s=None if fraction is None else 1.0 / fraction,
        watch_fraction=fraction,
        completed=fraction is not None and fraction > 0.9,
        early_abandon=False,
        replays=0,
        signals=1,
        watch_score=0.5,
    )


def feedback(ts: int, signal: str, media: str = "m1") -> Feedback:
    return Feedback(user_id="u", signal=signal, ts=ts, media_id=media)


def apply(stats: ItemStats, inputs: list[ItemInput]) -> list[ItemStatsRecord | ScoreUpdate]:
    out: list[ItemStatsRecord | ScoreUpdate] = []
    for x in inputs:
        out.extend(stats.on_event(x))
    return out


def test_views_leave_the_hour_but_stay_in_the_day():
    stats = ItemStats(SETTINGS, ITEMS)
    apply(stats, [play(T0 + i * MIN) for i in range(10)])
    f = stats.features()
    assert (f.views_1h, f.plays_24h, f.plays_total) == (10, 10, 10)
    apply(stats, [play(T0 + 70 * MIN)])
    f = stats.features()
    assert (f.views_1h, f.plays_24h) == (1, 11)
    apply(stats, [play(T0 + 30 * HOUR)])
    assert (stats.features().plays_24h, stats.features().plays_total) == (1, 12)


def test_ratios_over_closed_views_and_feedback():
    stats = ItemStats(SETTINGS, ITEMS)
    f = stats.features()
    assert (f.like_ratio, f.completion_rate, f.mean_watch_fraction) == (0.5, None, None)
    apply(
        stats,
        [
            closed(T0, 1.0),
            closed(T0 + 1, 0.5),
            closed(T0 + 2, None),
            feedback(T0 + 3, "liked"),
            feedback(T0 + 4, "liked"),
            feedback(T0 + 5, "disliked"),
        ],
    )
    f = stats.features()
    assert f.completion_rate == pytest.approx(1 / 3, abs=1e-4)
    assert f.mean_watch_fraction == 0.75
    assert f.like_ratio == pytest.approx(3 / 5)


def test_trending_score_is_views_times_recency_times_engagement():
    fresh, old = ItemStats(SETTINGS, ITEMS), ItemStats(SETTINGS, ITEMS)
    apply(fresh, [play(T0 + i * MIN) for i in range(4)])
    apply(old, [play(T0 + i * MIN, "old") for i in range(4)])
    assert fresh.trending_score() == pytest.approx(4 * 1.0 * 1.0, rel=0.01)
    assert old.trending_score() == pytest.approx(4 * 0.25, rel=0.01)  # two half-lives old
    apply(fresh, [closed(T0 + 5 * MIN, 1.0), feedback(T0 + 5 * MIN, "shared")])
    assert fresh.trending_score() == pytest.approx(4 * (1 + 1 + 1 / 4), rel=0.01)


def test_unknown_items_get_a_neutral_recency():
    stats = ItemStats(SETTINGS, ITEMS)
    apply(stats, [play(T0, "nope")])
    assert stats.trending_score() == pytest.approx(0.5)


def test_the_engagement_multiplier_is_clamped():
    assert engagement_multiplier((1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0)) == 0.5
    assert engagement_multiplier((1.0, 1.0, 1.0, 0.0, 0.0, 9.0, 0.0, 9.0)) == 3.0


def test_every_update_emits_the_record_and_a_score_for_its_boards():
    stats = ItemStats(SETTINGS, ITEMS)
    record, update = stats.on_event(play(T0))
    assert isinstance(record, ItemStatsRecord) and isinstance(update, ScoreUpdate)
    assert record.ts == update.ts == T0
    assert ranking_keys(update) == ("all", "type:VIDEO", "category:news")


def test_popularity_counts_qualified_views_with_a_half_life():
    stats = ItemStats(SETTINGS, ITEMS)
    week = round(SETTINGS.popular_half_life_h * HOUR)
    assert len(stats.on_event(play(T0))) == 2  # a play alone moves no popularity board
    out = apply(stats, [closed(T0 + 1_000, 1.0), closed(T0 + 2_000, 0.5)])
    popular = [u for u in out if isinstance(u, ScoreUpdate) and u.half_life_ms > 0]
    assert [u.score for u in popular] == pytest.approx([1.0, 2.0], rel=1e-5)
    boards = ("popular:all", "popular:type:VIDEO", "popular:category:news")
    assert ranking_keys(popular[0]) == boards
    abandon = msgspec.structs.replace(closed(T0 + week, 0.1), early_abandon=True)
    assert len(stats.on_event(abandon)) == 2  # an early abandon is not a qualified view
    assert stats.features().popularity == pytest.approx(1.0, rel=1e-5)  # two, a week ago


def test_a_snapshot_from_before_popularity_resumes_with_none_counted():
    stats = ItemStats(SETTINGS, ITEMS)
    apply(stats, [play(T0), closed(T0 + 1_000, 1.0)])
    first_version = (1, *stats.snapshot()[1:6])
    resumed = ItemStats(SETTINGS, ITEMS, resume=first_version)
    assert resumed.features().plays_total == 1 and resumed.features().popularity == 0.0
    apply(resumed, [closed(T0 + 2_000, 1.0)])
    assert resumed.features().popularity == pytest.approx(1.0, rel=1e-5)


def test_provisional_segments_are_refused():
    stats = ItemStats(SETTINGS, ITEMS)
    with pytest.raises(ValueError, match="provisional"):
        stats.on_event(msgspec.structs.replace(closed(T0, 1.0), final=False))


def test_state_expires_after_the_ttl_of_processing_time_without_input():
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    stats = ItemStats(SETTINGS, ITEMS, clock=lambda: now[0])
    now[0] += timedelta(days=3)
    apply(stats, [play(T0)])  # event time years before the clock: a replay
    due = stats.notify_at()
    assert due == now[0] + timedelta(days=SETTINGS.item_ttl_days)
    assert not stats.is_expired(now[0])
    assert not stats.is_expired(due - timedelta(seconds=1)) and stats.is_expired(due)


inputs = st.lists(
    st.one_of(
        st.builds(play, st.integers(T0, T0 + 30 * HOUR)),
        st.builds(closed, st.integers(T0, T0 + 30 * HOUR), st.sampled_from([None, 0.2, 1.0])),
        st.builds(
            feedback,
            st.integers(T0, T0 + 30 * HOUR),
            st.sampled_from(["liked", "disliked", "shared", "playlist"]),
        ),
    ),
    max_size=60,
)


def ts_of(x: ItemInput) -> int:
    return x.end_ts if isinstance(x, Segment) else x.ts


def batch(xs: list[ItemInput]) -> dict[str, float | int | None]:
    """The same stats recomputed from the whole list at the newest event time."""
    now = max(ts_of(x) for x in xs)
    plays = [x for x in xs if isinstance(x, ViewStart)]
    segs = [x for x in xs if isinstance(x, Segment)]
    likes = sum(isinstance(x, Feedback) and x.signal == "liked" for x in xs)
    dislikes = sum(isinstance(x, Feedback) and x.signal == "disliked" for x in xs)
    fractions = [s.watch_fraction for s in segs if s.watch_fraction is not None]
    return {
        "views_1h": sum(p.ts // MIN > now // MIN - 60 for p in plays),
        "plays_24h": sum(p.ts // HOUR > now // HOUR - 24 for p in plays),
        "plays_total": len(plays),
        "like_ratio": round((likes + 1) / (likes + dislikes + 2), 4),
        "completion_rate": round(sum(s.completed for s in segs) / len(segs), 4) if segs else None,
        "mean_watch_fraction": round(sum(fractions) / len(fractions), 4) if fractions else None,
    }


@given(inputs, st.randoms(use_true_random=False))
def test_online_stats_equal_a_batch_recomputation_in_any_order(xs, rnd: random.Random):
    if not xs:
        return
    shuffled = list(xs)
    rnd.shuffle(shuffled)
    a, b = ItemStats(SETTINGS, ITEMS), ItemStats(SETTINGS, ITEMS)
    apply(a, xs)
    apply(b, shuffled)
    assert a.features() == b.features()
    assert a.snapshot()[3:] == b.snapshot()[3:]  # bucket state itself, bit for bit
    got = msgspec.structs.asdict(a.features())
    assert {k: got[k] for k in batch(xs)} == batch(xs)
    now, half_life = max(ts_of(x) for x in xs), SETTINGS.popular_half_life_h * HOUR
    decayed = sum(2 ** ((x.end_ts - now) / half_life) for x in xs if isinstance(x, Segment))
    assert got["popularity"] == pytest.approx(decayed, rel=1e-5, abs=1e-6)


@given(inputs, st.randoms(use_true_random=False))
def test_the_last_popularity_update_is_the_same_in_any_order(xs, rnd: random.Random):
    # A board keeps each item's newest update and publishes as of its newest stamp: the
    # stamp must not depend on whether a play or a qualified view came first.
    shuffled = list(xs)
    rnd.shuffle(shuffled)

    def last_popular(order: list[ItemInput]) -> ScoreUpdate | None:
        out = [u for u in apply(ItemStats(SETTINGS, ITEMS), order)
               if isinstance(u, ScoreUpdate) and u.half_life_ms > 0]  # fmt: skip
        return max(out, key=lambda u: (u.ts, u.score), default=None)

    a, b = last_popular(xs), last_popular(shuffled)
    assert a == b
    if a is not None:
        assert a.ts == max(x.end_ts for x in xs if isinstance(x, Segment))


@given(inputs, st.data())
def test_snapshot_resume_continue_equals_an_uninterrupted_run(xs, data):
    cut = data.draw(st.integers(0, len(xs)))
    whole, part = ItemStats(SETTINGS, ITEMS), ItemStats(SETTINGS, ITEMS)
    expected = apply(whole, xs)
    out = apply(part, xs[:cut])
    resumed = ItemStats(SETTINGS, ITEMS, resume=pickle.loads(pickle.dumps(part.snapshot())))
    out += apply(resumed, xs[cut:])
    assert out == expected and resumed.snapshot() == whole.snapshot()


def test_timers_only_expire_the_state():
    stats = ItemStats(SETTINGS, ITEMS)
    apply(stats, [play(T0)])
    assert stats.on_timer(datetime.fromtimestamp(T0 / 1000, UTC)) == []
