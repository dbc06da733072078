"""Per-user profile features on event time, and the packed feature record."""

from __future__ import annotations

import pickle
import zlib

import msgspec
import numpy as np
import pytest

from kernel.settings import Settings
from operators.dedup import id_hash32
from operators.emissions import Segment, ViewStart
from operators.item_info import ItemInfo, lookup_from
from operators.user_features import (
    UserFeatures,
    decode_user_features,
    encode_user_features,
    vector_of,
)
from operators.user_profile import ProfileCold, UserProfile
from tests.unit.playback_events import T0, ev

DAY = 86_400_000
HOUR = 3_600_000
SETTINGS = Settings()


def unit(i: int) -> np.ndarray:
    v = np.zeros(64, dtype=np.float32)
    v[i] = 1.0
    return v


CATALOGUE = {
    f"m{i}": ItemInfo(
        f"m{i}",
        duration_s=100.0,
        content_type="VIDEO" if i % 4 else "AUDIO",
        category=("news", "music", "sport")[i % 3],
        creator_id=f"c{i % 5}",
        language="en" if i % 2 else "de",
        vector=unit(i % 64),
    )
    for i in range(100)
}
ITEMS = lookup_from(CATALOGUE)


def seg(
    media: str,
    end_ms: int,
    consumed: float = 50.0,
    *,
    completed: bool = False,
    signals: int = 1,
    start_ms: int | None = None,
    last: float | None = None,
) -> Segment:
    duration = CATALOGUE[media].duration_s if media in CATALOGUE else None
    fraction = None if duration is None else min(consumed / duration, 1.0)
    return Segment(
        user_id="u1",
        media_id=media,
        start_ts=end_ms - round(consumed * 1000) if start_ms is None else start_ms,
        end_ts=end_ms,
        consumed_s=consumed,
        dwell_s=consumed,
        max_position_s=consumed,
        last_position_s=consumed if last is None else last,
        duration_s=duration,
        watch_fraction=fraction,
        completed=completed,
        early_abandon=fraction is not None and fraction < 0.3 and not completed,
        replays=0,
        signals=signals | (2 if completed else 0),
        watch_score=0.9 if completed else 0.5,
    )


def profile(segments: list[Segment], settings: Settings = SETTINGS) -> UserProfile:
    p = UserProfile(settings, ITEMS)
    for s in segments:
        p.observe(s.end_ts)
        p.apply_segment(s)
    return p


def test_applying_a_view_twice_counts_it_once():
    p = profile([seg("m1", T0)])
    before = p.features()
    assert not p.apply_segment(seg("m1", T0))
    assert p.features() == before and before.engagements == 1


def test_feedback_is_applied_once_per_item_and_signal():
    p = UserProfile(SETTINGS, ITEMS)
    first = p.apply_feedback(ev("media_liked", 0, media="m1", eid="a"))
    assert first is not None and first.creator_id == "c1"
    assert p.apply_feedback(ev("media_liked", 5, media="m1", eid="b")) is None
    assert p.apply_feedback(ev("media_shared", 6, media="m1")) is not None
    assert p.features().engagements == 2


def test_provisional_segments_are_refused():
    p = UserProfile(SETTINGS, ITEMS)
    with pytest.raises(ValueError, match="provisional"):
        p.apply_segment(msgspec.structs.replace(seg("m1", T0), final=False))


def test_cold_start_ends_at_five_engagements():
    p = profile([seg(f"m{i}", T0 + i * 1000) for i in range(4)])
    assert p.features().cold_start
    p.apply_feedback(ev("media_liked", 10, media="m50"))
    assert not p.features().cold_start


def test_old_tastes_decay_on_event_time():
    old = [seg(f"m{i}", T0 + i * 60_000, 100.0) for i in (0, 3, 6, 9, 12)]  # news
    new = [seg(f"m{i}", T0 + 30 * DAY + i * 60_000, 40.0) for i in (1, 4)]  # music
    f = profile(old + new).features()
    assert f.top_categories[0] == "music"
    assert set(f.top_categories) == {"music", "news"}


def test_liked_items_pull_the_vector_and_disliked_ones_push_it_away():
    p = UserProfile(SETTINGS, ITEMS)
    p.apply_feedback(ev("media_liked", 0, media="m1"))
    p.apply_feedback(ev("media_disliked", 1, media="m2"))
    vec = vector_of(p.features())
    assert vec is not None
    assert vec @ unit(1) > 0.5 and vec @ unit(2) < -0.3
    assert id_hash32("m2") in p.features().disliked_hashes()


def test_negative_views_push_the_vector_away():
    abandoned = seg("m7", T0, 5.0, signals=1 | 16)  # started + abandoned
    abandoned = msgspec.structs.replace(abandoned, watch_score=0.05)
    vec = vector_of(profile([abandoned]).features())
    assert vec is not None and vec @ unit(7) < 0


def test_continue_watching_keeps_started_unfinished_items():
    p = profile([seg("m1", T0, 40.0, last=40.0), seg("m2", T0 + 1000, 20.0)])
    assert p.features().continue_watching == (("m1", 40),)
    p.apply_segment(seg("m1", T0 + 2000, 100.0, completed=True, start_ms=T0 + 1500))
    assert p.features().continue_watching == ()


def test_a_disliked_item_leaves_continue_watching():
    p = profile([seg("m1", T0, 40.0)])
    p.apply_feedback(ev("media_disliked", 1, media="m1"))
    assert p.features().continue_watching == ()


def test_completion_rate_is_over_the_last_seven_days():
    done = [seg(f"m{i}", T0 + i * 1000, 95.0, completed=True) for i in range(3)]
    later = [seg("m9", T0 + 8 * DAY, 10.0)]
    assert profile(done).features().completion_rate_7d == 1.0
    assert profile(done + later).features().completion_rate_7d == 0.0
    assert UserProfile(SETTINGS, ITEMS).features().completion_rate_7d is None


def test_content_type_follows_the_share_of_seconds():
    video = [seg(f"m{i}", T0 + i * 1000, 90.0) for i in (1, 2, 3)]
    audio = [seg(f"m{i}", T0 + i * 1000, 90.0) for i in (4, 8, 12)]
    assert profile(video).features().content_type == "VIDEO"
    assert profile(audio).features().content_type == "AUDIO"
    assert profile(video + audio).features().content_type == "MIXED"


def test_hour_of_day_pattern_peaks_where_the_user_watches():
    base = T0 - T0 % DAY
    evenings = [
        seg(f"m{d}", base + d * DAY + 21 * HOUR + 60_000, 60.0, start_ms=base + d * DAY + 21 * HOUR)
        for d in range(5)
    ]
    f = profile(evenings).features()
    assert len(f.hours) == 24 and f.hours[21] == 255 and sum(f.hours) == 255


def test_subscriptions_build_creator_affinity_once():
    p = UserProfile(SETTINGS, ITEMS)
    assert p.apply_feedback(ev("subscription_to_creator", 0, media=None, creator="c9"))
    assert p.apply_feedback(ev("subscription_to_creator", 1, media=None, creator="c9")) is None
    assert p.features().creator_hashes() == (id_hash32("c9"),)
    assert p.apply_feedback(ev("subscription_to_creator", 2, media=None, creator="c8"))
    assert p.features().subscriptions == 2
    resumed = UserProfile(SETTINGS, ITEMS, resume=p.snapshot())
    assert resumed.features().subscriptions == 2
    assert (
        resumed.apply_feedback(ev("subscription_to_creator", 3, media=None, creator="c8")) is None
    )


def test_sessions_binge_depth_and_average_length():
    p = UserProfile(SETTINGS, ITEMS)
    for i, t in enumerate((0, 600, 1200)):  # one 20-minute session, three items
        p.observe(T0 + t * 1000)
        p.on_view_start(ViewStart(user_id="u1", media_id=f"m{i}", ts=T0 + t * 1000))
    assert p.features().binge_depth == 3
    assert p.features().avg_session_s == 1200  # the open session, until one closes
    p.observe(T0 + 10 * HOUR)  # a new session
    f = p.features()
    assert f.binge_depth == 0 and f.avg_session_s == 1200
    p.observe(T0 + 10 * HOUR + 600_000)
    p.observe(T0 + 20 * HOUR)  # closes the 10-minute session
    assert 850 < p.features().avg_session_s < 900  # decay-weighted mean of 1200 and 600


def test_genres_of_the_last_half_hour_include_the_open_view():
    p = profile([seg("m0", T0, 100.0)])  # news, long ago in 30-minute terms
    p.observe(T0 + HOUR)
    assert p.features().genre_affinity_30m == ()
    live = msgspec.structs.replace(seg("m1", T0 + HOUR, 60.0), final=False)
    f = p.features([live])
    assert f.genre_affinity_30m == ("music",)
    assert f.recent[0] == "m1" and f.engagements == 2


def test_recent_items_are_newest_first_and_bounded():
    f = profile([seg(f"m{i}", T0 + i * 1000) for i in range(10)]).features()
    assert f.recent == ("m9", "m8", "m7")
    assert len(f.consumed) == 10 * 4


def test_snapshot_resume_gives_the_same_profile():
    segs = [seg(f"m{i}", T0 + i * HOUR, 30.0 + i) for i in range(12)]
    whole = profile(segs)
    part = profile(segs[:5])
    resumed = UserProfile(SETTINGS, ITEMS, resume=pickle.loads(pickle.dumps(part.snapshot())))
    for s in segs[5:]:
        resumed.observe(s.end_ts)
        resumed.apply_segment(s)
    assert resumed.features() == whole.features()
    assert resumed.snapshot() == whole.snapshot()
    assert not resumed.apply_segment(segs[0])  # still remembered as applied


def test_a_version_1_snapshot_with_a_plain_cold_part_resumes_as_it_was():
    # Version 1 kept the cold part as plain msgpack; 2 deflates it (its other layout
    # change, the applied-views ring, is read either way: see test_dedup).
    segs = [seg(f"m{i}", T0 + i * HOUR, 30.0 + i) for i in range(12)]
    p = profile(segs)
    hot, cold = p.snapshot()
    resumed = UserProfile(SETTINGS, ITEMS, resume=((1, *hot[1:]), zlib.decompress(cold)))
    assert resumed.features() == p.features()
    assert resumed.snapshot() == p.snapshot()
    assert len(cold) < len(zlib.decompress(cold))


def test_a_mismatched_item_vector_fails_loudly():
    items = lookup_from({"m1": ItemInfo("m1", vector=np.ones(8, dtype=np.float32))})
    p = UserProfile(SETTINGS, items)
    with pytest.raises(ValueError, match=r"m1.*embedding_dim"):
        p.apply_feedback(ev("media_liked", 0, media="m1"))


@pytest.mark.parametrize(("media_format", "budget"), [("s7-m{:06d}", 360), ("{:036d}", 490)])
def test_the_packed_record_stays_under_the_redis_budget(media_format, budget):
    # 500 B per user in Redis covers the payload, the store's 8-byte stamp and Redis's own
    # key overhead: ~350 B of payload with ids like the simulator's; UUID-sized ids cost more.
    long_ids = {
        media_format.format(i): ItemInfo(
            media_format.format(i),
            duration_s=600.0,
            content_type="VIDEO",
            category=("news", "music", "science-nature", "sport")[i % 4],
            creator_id=f"s7-c{i % 11:05d}",
            language="en",
            vector=unit(i % 64),
        )
        for i in range(200)
    }
    p = UserProfile(SETTINGS, lookup_from(long_ids))
    for i, media in enumerate(long_ids):
        s = msgspec.structs.replace(seg("m1", T0 + i * 60_000, 200.0, last=200.0), media_id=media)
        p.observe(s.end_ts)
        p.apply_segment(msgspec.structs.replace(s, duration_s=600.0, watch_fraction=1 / 3))
        if i % 9 == 0:
            p.apply_feedback(ev("media_disliked", i * 60 + 1, media=media))
    f = p.features()
    packed = encode_user_features(f)
    assert decode_user_features(packed) == f
    assert f.continue_watching and f.recent and f.vector and f.disliked
    assert len(packed) <= budget


def test_an_empty_record_decodes():
    assert decode_user_features(encode_user_features(UserFeatures())) == UserFeatures()


def test_a_newer_profile_snapshot_is_refused_and_the_cold_layout_is_pinned():
    hot, cold = profile([seg("m1", T0)]).snapshot()
    with pytest.raises(ValueError, match="not supported"):
        UserProfile(SETTINGS, ITEMS, resume=((hot[0] + 1, *hot[1:]), cold))
    # The order of the cold fields is the recovery format (positional in msgpack): append
    # new fields at the end with a default, never reorder, or stores in the field break.
    assert ProfileCold.__struct_fields__ == (
        "engagements", "vector", "categories", "creators", "languages", "content_types",
        "hours", "sessions", "days", "recent_segments", "table", "consumed", "disliked",
        "subscriptions", "applied", "subscription_count",
    )  # fmt: skip
