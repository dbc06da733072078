"""Weekly per-user weights: the pure logic, on simulated traffic with planted tastes."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import ListSink
from kernel.settings import Settings
from operators.cold_start import CohortModel, CohortTally
from operators.content import normalise_category
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    EngagementEvent,
    MediaPublished,
    decode_engagement,
    decode_media,
)
from operators.item_info import ItemInfo, lookup_from
from operators.week_aggregate import WeekAggregator
from operators.weekly_weights import (
    WEEK_MS,
    PriorSums,
    UserWeights,
    WeekPrior,
    WeekTally,
    decode_weights,
    encode_weights,
    last_complete_week,
    previous_week,
    shrink,
    week_of,
    week_prior,
    week_span,
)

WEEK = "2024-W10"
STRENGTH = Settings().weights_prior_strength


@cache
def simulated_week() -> tuple[list[EngagementEvent], dict[str, ItemInfo], dict[str, Any]]:
    """Two days of 120 simulated users inside WEEK: events, the catalogue, the truth."""
    start, _ = week_span(WEEK)
    config = SimConfig(users=120, items=500, rate=1.0, duration_s=2 * 86_400, seed=11,
                       start_ms=start + 3_600_000, speedup=1.0)  # fmt: skip
    sim, sink = Simulation(config, now_ms=0), ListSink()
    sim.run(sink)
    events, items = [], {}
    for topic, _key, _ts, value in sink.messages:
        if topic == TOPIC_ENGAGEMENT:
            ev = decode_engagement(value.encode())
            if isinstance(ev, EngagementEvent):
                events.append(ev)
            continue
        item = decode_media(value.encode())
        if isinstance(item, MediaPublished) and item.status != "removed":
            items[item.media_id] = ItemInfo(
                item.media_id, item.duration_s, item.content_type,
                normalise_category(item.category), item.creator_id, item.language,
                item.published_at,
            )  # fmt: skip
    truth = {u["user_id"]: u for u in sim.truth()["users"]}
    return events, items, truth


def tallies_of(events: list[EngagementEvent], items: dict[str, ItemInfo]) -> WeekAggregator:
    start, end = week_span(WEEK)
    week = WeekAggregator(Settings(), lookup_from(items), start, end)
    for ev in events:
        week.add(ev)
    return week


def planted(truth: dict[str, Any], user: str) -> dict[str, float]:
    return {normalise_category(c): w for c, w in truth[user]["category_weights"].items()}


def l1(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def test_weekly_weights_move_towards_the_planted_tastes() -> None:
    events, items, truth = simulated_week()
    week = tallies_of(events, items)
    tallies = week.finish()
    prior = week_prior(tallies.values())
    assert len(tallies) >= 100 and prior.users == len(tallies)
    closer, video = 0, []
    for user, tally in tallies.items():
        weights, taste = shrink(tally, prior, STRENGTH), planted(truth, user)
        # The top eight categories carry nearly all of a planted taste (Dirichlet, α 0.35).
        closer += l1(dict(weights.categories), taste) < l1(prior.categories, taste)
        video.append((weights.video, truth[user]["video_share"]))
    assert closer >= 0.85 * len(tallies), (closer, len(tallies))
    ours, theirs = np.asarray(video).T
    assert np.corrcoef(ours, theirs)[0, 1] > 0.8
    top_hits = sum(
        shrink(t, prior, STRENGTH).categories[0][0] in truth[u]["top_categories"]
        for u, t in tallies.items()
    )
    assert top_hits >= 0.85 * len(tallies)


def test_users_with_little_data_stay_near_the_prior_and_rich_ones_near_themselves() -> None:
    prior = WeekPrior(categories={"news": 0.5, "music": 0.5}, video=0.5, explore=0.2,
                      fresh=0.1, users=100, mass=1000.0)  # fmt: skip
    sparse, rich = WeekTally(), WeekTally()
    sparse.add("news", "VIDEO", 1.0, fresh=False)
    for _ in range(200):
        rich.add("news", "VIDEO", 1.0, fresh=False)
    thin, thick = shrink(sparse, prior, 10.0), shrink(rich, prior, 10.0)
    assert dict(thin.categories)["news"] == pytest.approx(6 / 11, abs=1e-3)
    assert dict(thick.categories)["news"] > 0.97 and thick.video > 0.97
    assert 0.5 < thin.video < 0.6
    raw = shrink(rich, prior, 0.0)
    assert raw.categories == (("news", 1.0),)


@given(st.lists(st.tuples(st.sampled_from(["news", "music", "talk", "sports", None]),
                          st.sampled_from(["VIDEO", "AUDIO", None]),
                          st.floats(-2.0, 3.0), st.booleans()), max_size=40),
       st.floats(0.0, 50.0))  # fmt: skip
def test_shrunk_weights_are_proper_shares(
    adds: list[tuple[str | None, str | None, float, bool]], strength: float
) -> None:
    tally, other = WeekTally(), WeekTally()
    other.add("news", "AUDIO", 2.0, fresh=True)
    for category, kind, mass, fresh in adds:
        tally.add(category, kind, mass, fresh)
    weights = shrink(tally, week_prior([tally, other]), strength)
    shares = [p for _, p in weights.categories]
    assert all(0.0 < p <= 1.0 for p in shares) and sum(shares) <= 1.0 + 1e-2
    assert shares == sorted(shares, reverse=True)
    assert 0.0 <= weights.video <= 1.0
    assert 0.25 <= weights.explore <= 4.0 and 0.25 <= weights.fresh <= 4.0
    assert decode_weights(encode_weights(weights)) == weights


def test_interleaving_users_does_not_change_any_tally() -> None:
    events, items, _ = simulated_week()
    sample = events[:40_000]
    by_user: dict[str, list[EngagementEvent]] = {}
    for ev in sample:
        by_user.setdefault(ev.user_id, []).append(ev)
    rng = random.Random(4)
    queues = [list(q) for q in by_user.values()]
    shuffled = []
    while queues:  # another interleaving of the users, each user's own order kept
        q = rng.choice(queues)
        shuffled.append(q.pop(0))
        if not q:
            queues.remove(q)

    assert summary(tallies_of(shuffled, items)) == summary(tallies_of(sample, items))


def summary(week: WeekAggregator) -> dict[str, Any]:
    return {u: (t.categories, t.video, t.audio, t.fresh, t.mass)
            for u, t in week.finish().items()}  # fmt: skip


def test_a_clients_retry_of_an_event_counts_once() -> None:
    events, items, _ = simulated_week()
    sample = events[:5_000]
    retried = [e for n, e in enumerate(sample) for _ in range(2 if n % 7 == 0 else 1)]
    once, twice = tallies_of(sample, items), tallies_of(retried, items)
    assert summary(twice) == summary(once)
    assert twice.duplicates == len(retried) - len(sample) and once.duplicates == 0
    assert twice.events == once.events


def test_events_outside_the_week_are_counted_not_applied() -> None:
    start, end = week_span(WEEK)
    week = WeekAggregator(Settings(), lookup_from({}), start, end)
    for ts in (start - 1, end, start):
        week.add(EngagementEvent(event_id=f"e{ts}", event_type="media_liked", user_id="u",
                                 media_id="m", ts=ts))  # fmt: skip
    assert (week.events, week.outside) == (1, 2)
    assert week.finish()["u"].mass == pytest.approx(0.8)


@given(st.integers(0, 4_000_000_000_000))
def test_every_instant_lies_in_its_week(ts: int) -> None:
    start, end = week_span(week_of(ts))
    assert start <= ts < end and end - start == WEEK_MS
    assert week_span(previous_week(week_of(ts)))[1] == start


def test_the_default_week_is_the_last_one_past_its_lateness() -> None:
    _, end = week_span("2024-W10")
    assert last_complete_week(end + 599_999, 600_000) == "2024-W09"
    assert last_complete_week(end + 600_000, 600_000) == "2024-W10"
    with pytest.raises(ValueError, match="ISO week"):
        week_span("2024-10")
    with pytest.raises(ValueError, match="ISO week"):
        week_span("2024-W54")


def test_a_bad_weights_record_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_weights(b"\x92\x01")
    nan = UserWeights(categories=(), video=float("nan"), explore=1.0, fresh=1.0, mass=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        decode_weights(encode_weights(nan))


@settings(max_examples=8, deadline=None)
@given(shards=st.integers(1, 7), salt=st.integers(0, 1_000))
def test_a_week_tallied_in_shards_of_users_has_the_prior_and_lists_of_one_pass(
    shards: int, salt: int
) -> None:
    """How the weekly flow splits the work: each shard a WeekAggregator over some users, the
    prior and the cohort tally summed over shards."""
    events, items, _ = simulated_week()
    sample = events[:10_000]
    whole = tallies_of(sample, items)
    tallies = whole.finish()
    parts = [
        tallies_of([e for e in sample if (hash_of(e.user_id) + salt) % shards == i], items)
        for i in range(shards)
    ]
    sums, cohorts = PriorSums(), CohortTally()
    for part in parts:
        mine = part.finish()
        assert all(mine[u].mass == tallies[u].mass for u in mine)
        sums.merge(PriorSums.of(mine.values()))
        cohorts.merge(part.cohorts)
    one, merged = week_prior(tallies.values()), sums.prior()
    assert merged.users == one.users and merged.categories == pytest.approx(one.categories)
    assert (merged.video, merged.explore, merged.fresh) == pytest.approx(
        (one.video, one.explore, one.fresh)
    )

    def lists(tally: CohortTally) -> dict[str, tuple[str, ...]]:
        return CohortModel(seed=salt, epochs=1).fit(tally, candidates=200).top_lists(10)

    assert lists(cohorts) == lists(whole.cohorts)


def hash_of(user_id: str) -> int:
    return sum(user_id.encode())
