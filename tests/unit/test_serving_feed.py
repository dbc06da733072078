"""The feed pipeline and its degradation ladder on in-memory stores (no HTTP, no Redis)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from operators.item_stats import ItemStatsRecord
from operators.ranking_contract import DEFAULT_WEIGHTS, RankerModel
from operators.user_features import UserFeatures, encode_user_features
from serving.feed import FeedConfig, FeedService, Trace
from tests.unit.serving_fixtures import (
    CATEGORIES,
    DAY_MS,
    build_world,
    hashes,
    request,
    service_for,
)


def ids(body: dict) -> list[str]:
    return [item["media_id"] for item in body["items"]]


def kinds(body: dict) -> list[str]:
    return [item["content_type"] for item in body["items"]]


def fallbacks(reason: str) -> float:
    labels = {"reason": reason, "arm": "default"}
    value = REGISTRY.get_sample_value("feedflow_feed_fallback_total", labels)
    return value or 0.0


def test_audio_lovers_get_mostly_audio_and_some_video_with_diversity() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    body = service.feed(request("u1", diversity=0.1))
    assert body["fallback"] is None and len(body["items"]) == 20
    assert kinds(body).count("AUDIO") >= 17
    wide = service.feed(request("u1", diversity=0.8))
    assert 5 <= kinds(wide).count("VIDEO") <= 10
    top = body["items"][:5]
    assert all(i["category"] == "music" and i["content_type"] == "AUDIO" for i in top)


def test_every_item_has_a_reason_and_watched_items_anchor_theirs() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO", recent=("music-A0",), consumed=hashes(["music-A0"]))
    service, _ = service_for(world)
    body = service.feed(request("u1"))
    reasons = [item["reason"] for item in body["items"]]
    assert all(r["type"] in {"because_you_watched", "trending", "new", "popular", "explore"}
               for r in reasons)  # fmt: skip
    anchored = [r for r in reasons if r["type"] == "because_you_watched"]
    assert anchored and all(r["anchor_media_id"] == "music-A0" for r in anchored)
    assert "music-A0" not in ids(body)


def test_consumed_disliked_and_removed_items_never_appear() -> None:
    world = build_world()
    service, _ = service_for(world)
    world.user("u1", "music", "AUDIO")
    first = ids(service.feed(request("u1", limit=50)))
    consumed, disliked, removed = first[0], first[1], first[2]
    world.user(
        "u1", "music", "AUDIO",
        consumed=hashes([consumed]), disliked=hashes([disliked]),
        continue_watching=((disliked, 30),),
    )  # fmt: skip
    world.remove(removed)
    for diversity in (0.0, 0.5, 1.0):
        again = ids(service.feed(request("u1", limit=100, diversity=diversity)))
        assert not {consumed, disliked, removed} & set(again)


def test_continue_watching_survives_the_consumed_filter() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO", consumed=hashes(["news-V3"]),
               continue_watching=(("news-V3", 120),))  # fmt: skip
    service, _ = service_for(world)
    body = service.feed(request("u1"))
    item = next(i for i in body["items"] if i["media_id"] == "news-V3")
    assert item["source"] == "continue_watching"
    # Resuming an item is its own reason, never "because you watched" the item itself.
    assert item["reason"] == {"type": "continue_watching"}


@pytest.mark.parametrize("engagements", [None, 0, 4])
def test_cold_start_users_get_a_full_feed(engagements: int | None) -> None:
    world = build_world()
    if engagements is not None:
        world.users["u1"] = encode_user_features(UserFeatures(engagements=engagements))
    service, _ = service_for(world)
    before = fallbacks("cold_start")
    body = service.feed(request("u1"))
    assert body["fallback"] == "cold_start"
    assert len(body["items"]) == 20 and len(set(ids(body))) == 20
    assert fallbacks("cold_start") == before + 1


def test_cold_start_leans_on_trending_popular_and_new_items() -> None:
    world = build_world()
    world.publish("fresh-1", "comedy", "VIDEO", age_ms=3_600_000)
    service, _ = service_for(world)
    service.trending.update({"all": (("news-V1", 9.0),), "popular:all": (("music-A2", 8.0),)})
    body = service.feed(request("nobody"))
    sources = {i["media_id"]: i["reason"]["type"] for i in body["items"]}
    assert sources["fresh-1"] == "new"
    assert sources["news-V1"] == "trending" and sources["music-A2"] == "popular"


def test_a_long_horizon_popular_item_reaches_the_feed_and_its_popularity_counts() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world, FeedConfig(candidates=25))  # ANN: 20 of 120 items
    week = 7 * DAY_MS
    board = (("sports-A3", 40.0), ("music-A1", 30.0))
    service.trending.update({"popular:type:AUDIO": board, "popular:all": board})

    def far_item() -> dict[str, object]:
        body = service.feed(request("u1", limit=50))
        return next(i for i in body["items"] if i["media_id"] == "sports-A3")

    unscored = far_item()
    assert unscored["source"] == "popular" and unscored["reason"] == {"type": "popular"}
    # the flows counted 80 qualified views a week before the board: 40 by the board's time
    counted = ItemStatsRecord(
        version=2, media_id="sports-A3", ts=week, views_1h=0, plays_24h=0, plays_total=80,
        like_ratio=0.5, completion_rate=0.5, mean_watch_fraction=0.5, trending_score=0.0,
        popularity=80.0,
    )  # fmt: skip
    service.stats.store(["sports-A3"], [counted])
    service.stats.store_popular_reference(2 * week, board)
    scored = far_item()
    gained = float(scored["score"]) - float(unscored["score"])
    assert gained == pytest.approx(DEFAULT_WEIGHTS["popularity"], abs=1e-3)


def test_a_new_release_in_a_liked_category_reaches_the_feed() -> None:
    world = build_world()
    world.user("u1", "science", "VIDEO")
    service, _ = service_for(world)
    assert "brand-new" not in ids(service.feed(request("u1")))
    world.publish("brand-new", "science", "AUDIO", age_ms=60_000)
    assert "brand-new" in ids(service.feed(request("u1")))


def test_redis_down_serves_cached_features_then_trending_then_recovers() -> None:
    world = build_world()
    world.user("known", "music", "AUDIO")
    service, source = service_for(world)
    clock = [0.0]
    service.fetcher._clock = lambda: clock[0]
    service.trending.update({"all": (("news-V1", 9.0),)})
    healthy = service.feed(request("known"))
    source.down = True
    calls: list[str] = []
    fetch = source.fetch

    def counted(user_id: str) -> bytes | None:
        calls.append(user_id)
        return fetch(user_id)

    source.fetch = counted  # type: ignore[method-assign]
    cached = service.feed(request("known"))
    assert cached["fallback"] == "cached_features" and ids(cached) == ids(healthy)
    stranger = service.feed(request("stranger"))
    assert stranger["fallback"] == "trending" and len(stranger["items"]) == 20
    assert "news-V1" in ids(stranger)
    for _ in range(5):
        assert service.feed(request("known"))["fallback"] == "cached_features"
    assert len(calls) == 3  # the breaker opened after three failures in a row
    source.down = False
    assert service.feed(request("known"))["fallback"] == "cached_features"  # still open
    clock[0] += 61.0
    assert service.feed(request("known"))["fallback"] is None


def test_a_failing_ranker_falls_back_to_retrieval_order() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)

    class Broken(RankerModel):
        def score(self, matrix: np.ndarray) -> np.ndarray:
            return np.full(len(matrix), np.nan, dtype=np.float32)

    service.models.model = Broken("broken", {})
    body = service.feed(request("u1"))
    assert body["fallback"] == "retrieval_order" and len(body["items"]) == 20
    assert body["model_version"] == "broken"


def test_requested_content_type_is_a_hard_filter() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    body = service.feed(request("u1", kind="VIDEO", limit=40))
    assert len(body["items"]) == 40 and set(kinds(body)) == {"VIDEO"}


def test_never_empty_without_boards_fresh_items_or_a_user_vector() -> None:
    world = build_world(per_cell=3)
    service, _ = service_for(world)
    service.fresh.rebuild()
    assert service.trending.board("all") == () and not service.fresh.newest()
    assert len(service.feed(request("nobody", limit=25))["items"]) == 25


def test_empty_catalogue_answers_an_empty_page() -> None:
    world = build_world(per_cell=0)
    service, _ = service_for(world)
    assert service.feed(request("u1"))["items"] == []


def test_trace_and_response_carry_versions_and_stage_times() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world, FeedConfig(candidates=100))
    trace = Trace()
    body = service.feed(request("u1"), trace)
    assert set(trace.stages) == {"features", "retrieval", "filters", "ranking", "rules", "total"}
    assert 0 < trace.pool <= trace.candidates
    assert body["index_version"] == "memory.1" and body["model_version"] == "default"
    assert body["user_id"] == "u1" and len(body["request_id"]) == 32


def test_limits_and_caps_shape_a_large_page() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    body = service.feed(request("u1", limit=100))
    assert len(body["items"]) == 100 and len(set(ids(body))) == 100
    assert {i["category"] for i in body["items"]} == set(CATEGORIES)
    assert isinstance(service, FeedService) and DAY_MS > 0
