"""The serving process's in-process state: item table, stats, side vectors, fresh items,
trending boards, and the refresher that keeps them (with a fake Redis)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
import redis

from operators.content import ItemRecord, Stamp
from operators.feature_codecs import encode_item_stats, encode_trending
from operators.item_stats import ItemStatsRecord
from operators.ranking_contract import default_model, encode_model
from operators.trending import TrendingList
from serving.caches import FreshItems, ItemStatsCache, SideVectors, TrendingCache
from serving.catalogue import MemoryCatalogue
from serving.feed import ModelHolder
from serving.item_table import ItemTable
from serving.refresher import Refresher
from state.feature_store import ITEM, TRENDING, feature_key, stamp
from state.model_registry import ACTIVE_KEY, version_key

HOUR = 3_600_000


def rec(media_id: str, **kw: Any) -> ItemRecord:
    fields: dict[str, Any] = {"media_id": media_id, "stamp": Stamp(0, 0), "category": "news"}
    fields.update(kw)
    return ItemRecord(**fields)


def test_item_table_grows_marks_removals_and_keeps_stats_on_metadata_updates() -> None:
    table = ItemTable(capacity=2)
    table.upsert([rec(f"m{i}", content_type="AUDIO") for i in range(5)])
    assert len(table) == 5 and table.lookup(["m4", "x"]).tolist() == [4, -1]
    stats = ItemStatsCache(table, ttl_s=60.0, clock=lambda: 0.0)
    stats.store(["m1"], [_stats("m1", completion=0.9)])
    table.upsert([rec("m1", category="music"), rec("m2", removed=True)])
    cols = table.columns()
    assert cols.completion[1] == pytest.approx(0.9)
    assert cols.category[1] == table.vocab.category("music")
    assert cols.live[:5].tolist() == [True, True, False, True, True]


def test_item_stats_are_queued_when_missing_or_stale() -> None:
    table, now = ItemTable(), [0.0]
    table.upsert([rec("a"), rec("b")])
    stats = ItemStatsCache(table, ttl_s=10.0, clock=lambda: now[0])
    rows = table.lookup(["a", "b"])
    looked = stats.lookup(["a", "b"], table.columns().take(rows))
    assert looked.tolist() == [[0.5, 0.5, 0.0, 0.0]] * 2
    assert stats.take_pending() == ["a", "b"]
    stats.store(["a", "b", "unknown"], [_stats("a", trending=7.0), None, None])
    assert len(stats) == 2
    assert stats.lookup(["a", "b"], table.columns().take(rows))[0, 2] == 7.0
    assert stats.take_pending() == []
    now[0] = 11.0
    stats.lookup(["a", "b"], table.columns().take(rows))
    assert stats.take_pending() == ["a", "b"]


def test_trending_scores_come_from_the_boards_and_refreshes_are_bounded() -> None:
    table = ItemTable()
    table.upsert([rec(f"m{i}") for i in range(5)])
    stats = ItemStatsCache(table, ttl_s=10.0, clock=lambda: 0.0)
    stats.store_trending([(("m1", 4.0), ("zz", 9.0)), (("m3", 2.0),)])
    assert table.columns().trending[:5].tolist() == [0.0, 4.0, 0.0, 2.0, 0.0]
    ids = [f"m{i}" for i in range(5)]
    stats.lookup(ids, table.columns().take(table.lookup(ids)))
    first = stats.take_pending(limit=2)
    assert len(first) == 2 and sorted(first + stats.take_pending()) == ids


def test_side_vectors_fetch_only_what_is_new_and_drop_the_rest() -> None:
    side, asked = SideVectors(), []

    def fetch(ids: Any) -> dict[str, Any]:
        asked.extend(ids)
        return {i: np.full(2, float(i[-1]), dtype=np.float32) for i in ids if i != "gone"}

    assert side.sync(["v1", "v2", "gone"], fetch) == 2
    assert side.sync(["v2", "v3"], fetch) == 1
    assert asked == ["v1", "v2", "gone", "v3"]
    found, matrix = side.lookup(["v3", "v1", "v2"])
    assert found == [0, 2] and matrix[:, 0].tolist() == [3.0, 2.0]


def test_fresh_items_are_newest_first_per_key_and_expire() -> None:
    now = [10.0 * HOUR]
    fresh = FreshItems(window_ms=5 * HOUR, clock_ms=lambda: now[0])
    fresh.add([
        rec("old", published_at=1 * HOUR), rec("a", published_at=8 * HOUR),
        rec("b", published_at=9 * HOUR, category="music", content_type="AUDIO"),
        rec("c", published_at=7 * HOUR),
    ])  # fmt: skip
    assert fresh.newest() == ("b", "a", "c")
    assert fresh.newest("category:news") == ("a", "c")
    assert fresh.newest("type:AUDIO") == ("b",)
    fresh.add([rec("a", removed=True)])
    now[0] = 12.5 * HOUR
    fresh.rebuild()
    assert fresh.newest() == ("b",) and sorted(fresh.categories()) == ["music"]


def test_trending_boards_keep_their_last_value() -> None:
    boards = TrendingCache()
    boards.want(["news", "unknown"])
    trending = ["all", "category:news", "type:AUDIO", "type:VIDEO"]
    assert boards.names() == sorted([*trending, *(f"popular:{n}" for n in trending)])
    boards.update({"all": (("m1", 2.0),)})
    boards.update({"category:news": (("m2", 1.0),)})
    assert boards.board("all") == (("m1", 2.0),) and boards.item_ids() == ["m1", "m2"]


class FakeRedis:
    """GET and MGET over a dict; `down` makes every call fail like a refused connection."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("refused")

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.values.get(key)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self._check()
        return [self.values.get(k) for k in keys]


def refresher_world() -> tuple[Refresher, FakeRedis, ModelHolder, TrendingCache, ItemTable]:
    client, catalogue = FakeRedis(), MemoryCatalogue(dim=2)
    for n, cat in enumerate(["news", "music"]):
        catalogue.put(rec(f"m{n}", category=cat), np.array([1.0, n]))
    table, trending, models = ItemTable(), TrendingCache(), ModelHolder(default_model())
    refresher = Refresher(
        client, catalogue, ItemStatsCache(table, 30.0), trending,
        FreshItems(24 * HOUR), models, SideVectors(), table,
    )  # fmt: skip
    return refresher, client, models, trending, table


def test_refresher_scans_reads_boards_stats_and_hot_loads_the_ranker() -> None:
    refresher, client, models, trending, table = refresher_world()
    board = encode_trending(TrendingList(ts=1, items=(("m1", 3.0),)))
    client.values[feature_key(TRENDING, "category:music")] = stamp(1, board)
    client.values[feature_key(ITEM, "m0")] = stamp(1, encode_item_stats(_stats("m0", 0.8)))
    client.values[ACTIVE_KEY] = b"v2"
    client.values[version_key("v2")] = encode_model("v2", {"similarity": 1.0})
    refresher.refresh()
    assert refresher.redis_ok and len(table) == 2
    assert trending.board("category:music") == (("m1", 3.0),)
    assert table.columns().completion[0] == pytest.approx(0.8)
    assert models.model.version == "v2"
    client.values[ACTIVE_KEY] = b"v3"
    client.values[version_key("v3")] = b'{"version": "v3", "weights": {"nope": 1}}'
    refresher.refresh()
    assert models.model.version == "v2"  # a bad document never replaces a good model


def test_popularity_is_decayed_to_the_popular_board_and_scaled_by_its_top() -> None:
    refresher, client, _, trending, table = refresher_world()
    week = 168 * HOUR  # the default half-life
    popular = TrendingList(ts=2 * week, items=(("m0", 63.0),))
    client.values[feature_key(TRENDING, "popular:all")] = stamp(2 * week, encode_trending(popular))
    # m1's count of 31 is as of its last view, a week before the board: 15.5 by then
    m1 = msgspec.structs.replace(_stats("m1"), ts=week, popularity=31.0)
    client.values[feature_key(ITEM, "m1")] = stamp(week, encode_item_stats(m1))
    refresher.refresh()
    assert trending.board("popular:all") == (("m0", 63.0),)
    assert table.columns().trending[:2].tolist() == [0.0, 0.0]  # not a trending score
    cols = table.columns().take(table.lookup(["m0", "m1"]))
    feature = refresher._stats.lookup(["m0", "m1"], cols)[:, 3]
    assert feature.tolist() == pytest.approx([0.0, math.log1p(15.5) / math.log1p(63.0)])


def test_refresher_keeps_state_through_an_outage() -> None:
    refresher, client, _, trending, _ = refresher_world()
    board = encode_trending(TrendingList(ts=1, items=(("m0", 1.0),)))
    client.values[feature_key(TRENDING, "all")] = stamp(1, board)
    refresher.refresh()
    client.down = True
    refresher.refresh()
    assert not refresher.redis_ok and trending.board("all") == (("m0", 1.0),)
    client.down = False
    refresher.refresh()
    assert refresher.redis_ok


def _stats(media_id: str, completion: float = 0.5, trending: float = 0.0) -> ItemStatsRecord:
    return ItemStatsRecord(
        version=1, media_id=media_id, ts=1, views_1h=1, plays_24h=1, plays_total=1,
        like_ratio=0.6, completion_rate=completion, mean_watch_fraction=0.5,
        trending_score=trending,
    )  # fmt: skip
