"""The co-engagement source in serving: scores, normalisation, the cache, the feed."""

from __future__ import annotations

import numpy as np
import pytest

from operators.co_engagement import CoRecord
from operators.dedup import id_hash64
from operators.feature_codecs import encode_co_record
from serving.co_engagement import CoRecords, MemoryCoSource, co_candidates, collaborative
from state.feature_store import StoreUnavailableError
from tests.unit.serving_fixtures import build_world, request, service_for


def packed(media_id: str, engagements: int, *neighbours: tuple[str, int]) -> bytes:
    return encode_co_record(CoRecord(media_id, 1, engagements, tuple(neighbours)))


def test_recent_seeds_weigh_more_and_the_strongest_seed_is_the_anchor() -> None:
    newest = CoRecord("s1", 1, 10, (("x", 2000), ("y", 1000)))
    older = CoRecord("s2", 1, 10, (("y", 3000), ("z", 3000), ("s1", 9000)))
    found = co_candidates([newest, older])
    assert "s1" not in found.score  # a seed is never its own candidate
    assert found.score["x"] > found.score["y"] / 2  # the newest seed counts most
    assert found.anchor == {"x": "s1", "y": "s2", "z": "s2"}
    assert found.ranked(2)[0] == "y"  # supported by both seeds


def test_blockbusters_are_damped_by_their_own_engagement() -> None:
    raw = np.asarray([1.0, 1.0], dtype=np.float32)
    feature = collaborative(raw, np.asarray([10_000.0, 10.0], dtype=np.float32))
    assert feature[1] == 1.0 and feature[0] < 0.2
    assert collaborative(np.zeros(3, np.float32), np.ones(3, np.float32)).tolist() == [0, 0, 0]


def test_records_are_cached_briefly_and_a_failure_is_loud() -> None:
    now = [0.0]
    digest = id_hash64("s1")
    source = MemoryCoSource({digest: packed("s1", 3, ("x", 1000))})
    records = CoRecords(source, ttl_s=0.5, clock=lambda: now[0])
    nothing = id_hash64("none")
    assert records.get([digest, nothing])[0] is not None
    assert records.get([nothing, digest])[0] is None
    assert source.reads == 1  # both answers (a record, and none yet) are cached
    now[0] = 0.6
    records.get([digest])
    assert source.reads == 2  # never staler than the TTL
    now[0] = 2.0
    source.down = True
    with pytest.raises(StoreUnavailableError):
        records.get([digest])


def test_the_feed_serves_co_engaged_items_anchored_on_another_watched_item() -> None:
    world = build_world()
    seeds = ("news-V0", "news-V1")
    world.user("u1", "news", "VIDEO", recent=seeds, co_recent=b"".join(map(id_hash64, seeds)))
    # People who watched news-V0 went on to watch a science audio item: not near in content.
    co = {
        id_hash64("news-V0"): packed("news-V0", 5, ("science-A7", 4000), ("news-V1", 3000)),
        id_hash64("news-V1"): packed("news-V1", 5, ("comedy-A3", 1000)),
    }
    service, _ = service_for(world, co=MemoryCoSource(co))
    body = service.feed(request("u1", limit=20))
    items = {i["media_id"]: i for i in body["items"]}
    assert items["science-A7"]["source"] == "co_engagement"
    assert items["science-A7"]["reason"] == {
        "type": "because_you_watched", "anchor_media_id": "news-V0"
    }  # fmt: skip
    for item in body["items"]:
        anchor = item["reason"].get("anchor_media_id")
        assert anchor != item["media_id"]


def test_without_records_or_with_redis_failing_the_feed_still_answers() -> None:
    world = build_world()
    world.user("u1", "news", "VIDEO", co_recent=id_hash64("news-V0"))
    source = MemoryCoSource({})
    service, _ = service_for(world, co=source)
    assert len(service.feed(request("u1"))["items"]) == 20
    source.down = True
    body = service.feed(request("u1"))
    assert len(body["items"]) == 20 and body["fallback"] is None
