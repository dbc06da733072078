"""The HTTP surface on in-memory components: status codes, JSON bodies, validation."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import orjson
import pytest
from prometheus_client import REGISTRY

from feedflow.asgi_client import AsgiClient
from serving.app import create_app
from serving.errors import BadParameterError, NotReadyError, ServingError, http_status
from serving.params import Limits
from serving.refresher import Refresher
from serving.runtime import Runtime
from tests.unit.serving_fixtures import RecordedImpressions, build_world, service_for


@pytest.fixture
def client() -> Iterator[AsgiClient]:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    service.trending.update({"all": (("news-V1", 9.0), ("music-A2", 8.0), ("gone", 7.0))})
    runtime = Runtime(service, Limits(default=20, maximum=50))
    with AsgiClient(create_app(runtime)) as c:
        yield c


def test_feed_answers_json_in_the_documented_shape(client: AsgiClient) -> None:
    r = client.get("/api/v1/content/feed", params={"user_id": "u1", "limit": 7})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"request_id", "user_id", "items", "model_version", "index_version",
                         "arm", "fallback", "took_ms"}  # fmt: skip
    assert len(body["items"]) == 7
    assert set(body["items"][0]) == {"media_id", "content_type", "category", "creator_id",
                                     "score", "source", "reason"}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "a\x00b"}, "user_id"),
        ({"user_id": "u1", "limit": "ten"}, "limit"),
        ({"user_id": "u1", "limit": "0"}, "limit"),
        ({"user_id": "u1", "limit": "-3"}, "limit"),
        ({"user_id": "u1", "content_type": "TEXT"}, "content_type"),
        ({"user_id": "u1", "diversity": "1.5"}, "diversity"),
        ({"user_id": "u1", "diversity": "nan"}, "diversity"),
        ({"user_id": "u1", "diversity": "lots"}, "diversity"),
    ],
)
def test_bad_parameters_get_422_with_a_json_body(
    client: AsgiClient, query: dict[str, str], field: str
) -> None:
    r = client.get("/api/v1/content/feed", params=query)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_parameter" and r.json()["field"] == field


def test_a_huge_limit_is_capped(client: AsgiClient) -> None:
    r = client.get("/api/v1/content/feed", params={"user_id": "u1", "limit": "10000000000"})
    assert r.status_code == 200 and len(r.json()["items"]) == 50


def test_odd_characters_in_ids_reach_only_their_own_user(client: AsgiClient) -> None:
    for user in ("u1}", "{u1}", "u1*", "ff:{u:u1}", "../u1"):
        r = client.get("/api/v1/content/feed", params={"user_id": user})
        assert r.status_code == 200 and r.json()["fallback"] == "cold_start", user


def test_similar_items_and_unknown_items(client: AsgiClient) -> None:
    r = client.get("/api/v1/content/music-A1/similar", params={"limit": 5})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 5 and "music-A1" not in {i["media_id"] for i in items}
    assert sum(i["category"] == "music" for i in items) >= 4
    missing = client.get("/api/v1/content/nope/similar")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_item"
    assert client.get("/api/v1/content/music-A1/similar?limit=x").status_code == 422


def test_trending_skips_unknown_items_and_filters_by_type(client: AsgiClient) -> None:
    body = client.get("/api/v1/trending").json()
    assert [i["media_id"] for i in body["items"]] == ["news-V1", "music-A2"]
    audio = client.get("/api/v1/trending", params={"content_type": "AUDIO"}).json()
    assert [i["media_id"] for i in audio["items"]] == []  # no type:AUDIO board yet
    assert client.get("/api/v1/trending?content_type=x").status_code == 422
    assert client.get("/api/v1/trending", params={"category": "Music"}).json()["category"] == (
        "music"
    )


def test_probes_metrics_and_openapi(client: AsgiClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    client.get("/api/v1/content/feed", params={"user_id": "u1"})
    metrics = client.get("/metrics").text
    assert 'feedflow_feed_request_seconds_count{arm="default",stage="ranking"}' in metrics
    doc = orjson.loads(client.get("/openapi.json").content)
    assert doc["openapi"].startswith("3.") and "/api/v1/content/feed" in doc["paths"]
    assert client.get("/no/such/path").json()["error"] == "not_found"


def test_readyz_is_503_until_boards_are_read() -> None:
    world = build_world()
    service, _ = service_for(world)
    with AsgiClient(create_app(Runtime(service, Limits()))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["trending_loaded"] is False
        assert "feedflow_serving_ready 0.0" in c.get("/metrics").text


def test_with_redis_down_a_replica_is_degraded_not_unready() -> None:
    world = build_world()
    service, _ = service_for(world)
    service.trending.update({"all": (("news-V1", 9.0),)})
    down = SimpleNamespace(redis_ok=False, refresh=lambda: None, start=lambda: None,
                           stop=lambda: None)  # fmt: skip
    runtime = Runtime(service, Limits(), refresher=cast(Refresher, down))
    with AsgiClient(create_app(runtime)) as c:
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] == ["redis_unreachable"] and not r.json()["redis_reachable"]
        assert "feedflow_serving_redis_up 0.0" in c.get("/metrics").text
        assert "feedflow_serving_ready 1.0" in c.get("/metrics").text
        down.redis_ok = True
        runtime.after_round()  # the next refresh round
        assert c.get("/readyz").json()["degraded"] == []
        assert "feedflow_serving_redis_up 1.0" in c.get("/metrics").text


def test_errors_map_to_status_codes_in_one_place() -> None:
    assert http_status(BadParameterError("x", "bad")) == 422
    assert http_status(NotReadyError("later")) == 503
    assert http_status(ServingError("boom")) == 500


def test_head_on_the_feed_validates_but_computes_and_publishes_nothing() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    recorded = RecordedImpressions()
    service.impressions = recorded
    with AsgiClient(create_app(Runtime(service, Limits()))) as c:
        for _ in range(5):
            r = c.request("HEAD", "/api/v1/content/feed", params={"user_id": "u1"})
            assert r.status_code == 200 and r.content == b""
        assert c.request("HEAD", "/api/v1/content/feed").status_code == 422
        assert recorded.served == []
        assert c.get("/api/v1/content/feed", params={"user_id": "u1"}).status_code == 200
        assert len(recorded.served) == 1


def test_a_wrong_method_gets_405_with_allow_and_a_json_body(client: AsgiClient) -> None:
    r = client.request("POST", "/api/v1/content/feed", params={"user_id": "u1"})
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
    assert "GET" in r.headers["allow"] and r.json()["error"] == "http_error"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/content/feed?user_id=%ff%fe",  # not UTF-8: never two U+FFFD
        "/api/v1/content/feed?user_id=u1&content_type=video",  # the enum is upper-case
        "/api/v1/content/feed?user_id=u1&content_type=v%C4%B1deo",  # dotless ı upper-cases to I
        "/api/v1/trending?category=%c3%28",
    ],
)
def test_what_the_schema_does_not_allow_is_refused(client: AsgiClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 422 and r.json()["error"] == "invalid_parameter"


def test_the_schema_says_what_the_server_enforces(client: AsgiClient) -> None:
    doc = client.get("/openapi.json").json()
    feed = {
        p["name"]: p["schema"] for p in doc["paths"]["/api/v1/content/feed"]["get"]["parameters"]
    }
    assert feed["user_id"]["pattern"] and feed["user_id"]["maxLength"] == 128
    assert feed["content_type"]["enum"] == ["VIDEO", "AUDIO", "MIXED"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_served_items_are_counted_by_whether_they_are_among_the_most_popular() -> None:
    world = build_world()
    world.user("u1", "music", "AUDIO")
    service, _ = service_for(world)
    everything = sorted(world.records)
    popular = everything[:100]  # the `popular:all` board's top 100, then more
    service.trending.update({
        "all": ((everything[0], 9.0),),
        "popular:all": tuple((m, 1000.0 - n) for n, m in enumerate(everything[:150])),
    })  # fmt: skip

    def count(kind: str) -> float:
        labels = {"arm": "default", "popular": kind}
        return REGISTRY.get_sample_value("feedflow_feed_items_total", labels) or 0.0

    before = count("top100"), count("other")
    with AsgiClient(create_app(Runtime(service, Limits(default=20, maximum=50)))) as c:
        items = c.get("/api/v1/content/feed", params={"user_id": "u1"}).json()["items"]
    top = sum(i["media_id"] in popular for i in items)
    assert (count("top100") - before[0], count("other") - before[1]) == (top, len(items) - top)
    assert len(items) == 20 and 0 < top < 20  # both kinds were served
