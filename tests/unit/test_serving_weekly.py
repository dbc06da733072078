"""Weekly weights and the cold-start lists in the feed, on in-memory stores."""

from __future__ import annotations

import random

from operators.user_features import UserFeatures, encode_user_features, vector_bytes
from operators.weekly_weights import UserWeights, encode_weights
from serving.features import MemoryUserSource
from serving.feed import FeedConfig, FeedService
from tests.unit.serving_fixtures import (
    CATEGORIES,
    build_world,
    category_axis,
    request,
    service_for,
)

UNCAPPED = FeedConfig(max_per_category=20)  # so the caps do not hide what ranking does


def weights(categories: dict[str, float], video: float = 0.5, explore: float = 1.0) -> bytes:
    ranked = tuple(sorted(categories.items(), key=lambda kv: -kv[1]))
    return encode_weights(
        UserWeights(categories=ranked, video=video, explore=explore, fresh=1.0, mass=40.0)
    )


def page(service: FeedService, user: str, **kw: object) -> list[dict]:
    service._rng = random.Random(7)  # the same exploration draw for both sides of a comparison
    items: list[dict] = service.feed(request(user, **kw))["items"]
    return items


def test_weekly_category_shares_pull_the_feed_towards_the_weeks_taste() -> None:
    world = build_world()
    taste = category_axis("music") + category_axis("science")  # torn between two
    world.users["u1"] = encode_user_features(UserFeatures(
        engagements=40, vector=vector_bytes(taste), top_categories=("music", "science"),
        language="en", content_type="AUDIO"))  # fmt: skip
    service, source = service_for(world, UNCAPPED)
    before = [i["category"] for i in page(service, "u1")]
    source.weights = {"u1": weights({"science": 0.7, "music": 0.1})}
    after = [i["category"] for i in page(service, "u1")]
    assert after.count("science") >= before.count("science") + 3, (before, after)
    assert after[0] == "science"


def test_a_weekly_video_lean_brings_video_to_a_user_without_a_type_preference() -> None:
    world = build_world()
    world.user("u1", "comedy", "MIXED")
    service, source = service_for(world)
    before = [i["content_type"] for i in page(service, "u1", diversity=1.0)]
    source.weights = {"u1": weights({"comedy": 0.5}, video=0.95)}
    after = [i["content_type"] for i in page(service, "u1", diversity=1.0)]
    assert after.count("VIDEO") > before.count("VIDEO"), (before, after)


def test_a_bigger_exploration_appetite_widens_the_page() -> None:
    world = build_world(per_cell=30)
    world.user("u1", "news", "VIDEO")
    service, source = service_for(world, UNCAPPED)
    service.trending.update({f"category:{c}": tuple((f"{c}-V{n}", 9.0 - n) for n in range(8))
                             for c in CATEGORIES})  # fmt: skip
    source.weights = {"u1": weights({"news": 0.9}, explore=0.25)}
    shy = sum(i["category"] != "news" for i in page(service, "u1"))
    source.weights = {"u1": weights({"news": 0.9}, explore=4.0)}
    curious = sum(i["category"] != "news" for i in page(service, "u1"))
    assert (shy, curious) == (1, 4)  # 10 % of 20 places, halved and doubled


def test_unreadable_weights_are_ignored_not_fatal() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, source = service_for(world)
    source.weights = {"u1": b"\x00garbage"}
    body = service.feed(request("u1"))
    assert body["fallback"] is None and len(body["items"]) == 20


def test_cold_start_users_get_their_cohorts_items_first() -> None:
    world = build_world()
    world.users["new"] = encode_user_features(UserFeatures(engagements=2, language="en"))
    service, _ = service_for(world)
    science_audio = tuple(f"science-A{n}" for n in range(8))
    comedy_video = tuple(f"comedy-V{n}" for n in range(8))
    service.weekly.set("2024-W10.1", {"en|AUDIO|*": science_audio, "*|*|*": comedy_video,
                                      "en|AUDIO|tv": comedy_video})  # fmt: skip
    body = service.feed(request("new", kind="AUDIO"))
    assert body["fallback"] == "cold_start"
    cohort = [i["media_id"] for i in body["items"] if i["source"] == "cohort"]
    assert set(cohort) <= set(science_audio) and len(cohort) >= 5
    assert all(i["reason"]["type"] == "popular" for i in body["items"] if i["source"] == "cohort")
    top = [i["media_id"] for i in body["items"][:5]]
    assert sum(m in science_audio for m in top) >= 4
    stranger = service.feed(request("never-seen"))  # no language, no type: the general list
    assert {i["media_id"] for i in stranger["items"] if i["source"] == "cohort"} <= set(
        comedy_video
    )


def test_warm_users_do_not_get_cohort_lists() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    service.weekly.set("v", {"*|*|*": ("comedy-V1", "comedy-V2")})
    assert all(i["source"] != "cohort" for i in service.feed(request("u1"))["items"])


def test_the_memory_source_reads_weights_beside_features() -> None:
    source = MemoryUserSource({"u": b"f"}, {"u": b"w"})
    assert source.fetch_user("u") == (b"f", b"w") and source.fetch_user("x") == (None, None)
