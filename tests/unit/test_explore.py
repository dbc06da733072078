"""The feed explorer's API on in-memory components (a dict standing in for Redis).

The page itself, in a real browser on the demo stack: tests/integration/explore_page.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from feedflow.asgi_client import AsgiClient
from serving.app import create_app
from serving.explore import PAGE, Explorer
from serving.params import Limits
from serving.runtime import Runtime
from state.feature_store import LAST_WRITE_KEY, USER, feature_key, stamp
from state.index_keys import IndexKeys
from state.item_store import ItemStore
from tests.unit.serving_fixtures import NOW_MS, RecordedImpressions, build_world, service_for

App = tuple[AsgiClient, RecordedImpressions]


class DictRedis:
    """The few commands the explorer sends (SCAN, MGET) over a dict; `down` makes them fail."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("connection refused (the test's)")

    def scan(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        self._check()
        keys = sorted(self.values)
        page = keys[cursor : cursor + count]
        pattern = re.compile(
            "".join(".*" if g == "*" else re.escape(g[-1]) for g in re.findall(r"\\.|.", match))
        )
        found = [k.encode() for k in page if pattern.fullmatch(k)]
        nxt = cursor + count
        return (0 if nxt >= len(keys) else nxt), found

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.values.get(key)

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check()
        return [self.values.get(k) for k in keys]


@pytest.fixture
def world() -> Any:
    w = build_world()
    w.user("u1", "music", "AUDIO", recent=("music-A0", "news-V0"))
    w.user("u2", "news", "VIDEO", engagements=90)
    w.user("u*x", "news", "VIDEO", engagements=3)
    return w


@pytest.fixture
def fake() -> DictRedis:
    return DictRedis()


@pytest.fixture
def app(world: Any, fake: DictRedis) -> Iterator[App]:
    service, _ = service_for(world)
    service.trending.update({"all": (("news-V1", 9.0), ("music-A2", 8.0))})
    recorded = RecordedImpressions()
    service.impressions = recorded
    for user, raw in world.users.items():
        fake.values[feature_key(USER, user)] = stamp(NOW_MS, raw)
    keys = IndexKeys()
    for media_id, r in world.records.items():
        event = {"media_id": media_id, "title": f"<b>Title of {media_id}</b>",
                 "creator_id": r.creator_id, "content_type": r.content_type,
                 "category": r.category, "duration_s": r.duration_s,
                 "published_at": r.published_at}  # fmt: skip
        fake.values[keys.src(media_id)] = orjson.dumps(event)
    client: Any = fake
    runtime = Runtime(service, Limits())
    runtime.explorer = Explorer(service, client, ItemStore(client, keys))
    with AsgiClient(create_app(runtime)) as c:
        yield c, recorded


def test_off_unless_enabled(world: Any) -> None:
    service, _ = service_for(world)
    with AsgiClient(create_app(Runtime(service, Limits()))) as c:
        for path in ("/explore", "/explore/api/status", "/explore/api/user/u1"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_the_page_is_one_file_that_needs_nothing_from_elsewhere(
    app: App,
) -> None:
    r = app[0].get("/explore")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page == PAGE.read_text()
    for remote in ("http://", "https://", "//cdn", "<script src", '<link rel="stylesheet"'):
        assert remote not in page, remote
    # Titles come from published events: the page writes text, never markup.
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page


def test_users_are_found_by_prefix_most_engaged_first(
    app: App,
) -> None:
    c = app[0]
    everyone = c.get("/explore/api/users").json()["users"]
    assert [u["user_id"] for u in everyone] == ["u2", "u1", "u*x"]
    assert everyone[2]["cold_start"] is True and everyone[0]["arm"] == "default"
    # The prefix is literal: `*` matches only itself.
    assert [u["user_id"] for u in c.get("/explore/api/users?q=u*").json()["users"]] == ["u*x"]
    assert c.get("/explore/api/users?q=nobody").json()["users"] == []
    r = c.get("/explore/api/users", params={"q": "u" * 200})
    assert r.status_code == 422 and r.json()["field"] == "q"


def test_a_users_page_is_a_preview_with_titles_and_counts_nothing(
    app: App,
) -> None:
    c, recorded = app

    def served_items() -> float:
        total = 0.0
        for kind in ("top100", "other"):
            labels = {"arm": "default", "popular": kind}
            total += REGISTRY.get_sample_value("feedflow_feed_items_total", labels) or 0.0
        return total

    before = served_items()
    body = c.get("/explore/api/user/u1?limit=10").json()
    assert recorded.served == [] and served_items() == before
    feed = body["feed"]
    assert len(feed["items"]) == 10 and feed["fallback"] is None
    assert all(i["title"] == f"<b>Title of {i['media_id']}</b>" for i in feed["items"])
    anchored = [i["reason"] for i in feed["items"] if "anchor_media_id" in i["reason"]]
    assert anchored and all(
        r["anchor_title"] == f"<b>Title of {r['anchor_media_id']}</b>" for r in anchored
    )
    features = body["features"]
    assert [r["media_id"] for r in features["recent"]] == ["music-A0", "news-V0"]
    assert features["recent_mix"] == {"AUDIO": 1, "VIDEO": 1}
    assert features["cold_start"] is False and body["arm"] == "default"
    # The public feed still publishes its impression.
    assert c.get("/api/v1/content/feed", params={"user_id": "u1"}).status_code == 200
    assert len(recorded.served) == 1


def test_an_unknown_user_has_no_features_and_still_a_feed(
    app: App,
) -> None:
    body = app[0].get("/explore/api/user/newcomer").json()
    assert body["features"] is None and body["feed"]["items"]


def test_an_item_with_its_neighbours(app: App) -> None:
    c = app[0]
    body = c.get("/explore/api/item/science-V3?limit=5").json()
    assert body["item"]["title"] == "<b>Title of science-V3</b>"
    assert body["item"]["category"] == "science" and body["stats"] is None
    similar = body["similar"]
    assert len(similar) == 5 and "science-V3" not in [s["media_id"] for s in similar]
    assert sum(s["category"] == "science" for s in similar) >= 4
    assert body["co_engaged"] == []
    r = c.get("/explore/api/item/never-published")
    assert r.status_code == 404 and r.json()["error"] == "unknown_item"


def test_trending_boards(app: App) -> None:
    c = app[0]
    body = c.get("/explore/api/trending").json()
    assert body["board"] == "all" and "all" in body["boards"]
    assert [i["media_id"] for i in body["items"]] == ["news-V1", "music-A2"]
    r = c.get("/explore/api/trending?board=nonsense")
    assert r.status_code == 404 and r.json()["error"] == "unknown_board"
    assert c.get("/explore/api/trending?content_type=FILM").status_code == 422


def test_status_names_the_index_the_models_and_the_last_write(app: App, fake: DictRedis) -> None:
    body = app[0].get("/explore/api/status").json()
    assert body["index"]["version"] == "memory.1" and body["index"]["items"] == 120
    assert body["model_version"] == "default"
    assert body["features"]["last_write_ms"] is None  # no flow has written yet
    fake.values[LAST_WRITE_KEY] = str(body["now_ms"] - 4000).encode()
    assert app[0].get("/explore/api/status").json()["features"]["last_write_age_s"] >= 4.0


def test_redis_down_is_a_503_with_a_json_body(app: App, fake: DictRedis) -> None:
    fake.down = True
    for path in ("/explore/api/users", "/explore/api/item/news-V1", "/explore/api/status"):
        r = app[0].get(path)
        assert r.status_code == 503 and r.json()["error"] == "store_unavailable", path
