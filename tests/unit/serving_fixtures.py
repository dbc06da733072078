"""A small in-memory serving world: a catalogue with clustered vectors, users, boards."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from operators.content import ItemRecord, Stamp
from operators.ranking_contract import default_model
from operators.user_features import UserFeatures, encode_user_features, vector_bytes
from serving.caches import FreshItems, ItemStatsCache, TrendingCache
from serving.catalogue import MemoryCatalogue
from serving.co_engagement import CoRecords, CoSource
from serving.features import FeatureFetcher, MemoryUserSource
from serving.feed import FeedConfig, FeedRequest, FeedService, ModelHolder
from serving.impressions import NoImpressions
from serving.item_table import ItemTable

NOW_MS = 1_700_000_000_000
DAY_MS = 86_400_000
CATEGORIES = ("news", "music", "comedy", "science", "sports")
DIM = 16


def category_axis(category: str) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[CATEGORIES.index(category)] = 1.0
    return v


def item_vector(rng: np.random.Generator, category: str, kind: str) -> np.ndarray:
    v = category_axis(category) + 0.3 * rng.standard_normal(DIM).astype(np.float32)
    v[10 if kind == "VIDEO" else 11] += 0.6
    return v


def hashes(ids: list[str]) -> bytes:
    return np.asarray([zlib.crc32(i.encode()) for i in ids], dtype="<u4").tobytes()


@dataclass
class World:
    catalogue: MemoryCatalogue
    users: dict[str, bytes] = field(default_factory=dict)
    records: dict[str, ItemRecord] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(3))

    def publish(
        self, media_id: str, category: str, kind: str, age_ms: int = 10 * DAY_MS, creator: str = ""
    ) -> ItemRecord:
        record = ItemRecord(
            media_id=media_id,
            stamp=Stamp(NOW_MS - age_ms, len(self.records)),
            creator_id=creator or f"c-{media_id}",
            content_type=kind,
            category=category,
            language="en",
            duration_s=600.0,
            published_at=NOW_MS - age_ms,
        )
        self.records[media_id] = record
        self.catalogue.put(record, item_vector(self.rng, category, kind))
        return record

    def remove(self, media_id: str) -> None:
        old = self.records[media_id]
        self.catalogue.put(
            ItemRecord(media_id=media_id, stamp=old.stamp, removed=True), np.zeros(DIM)
        )

    def user(self, user_id: str, category: str, kind: str, **extra: object) -> UserFeatures:
        vec = category_axis(category).copy()
        vec[10 if kind == "VIDEO" else 11] += 0.5
        fields: dict[str, object] = {
            "ts": NOW_MS,
            "engagements": 40,
            "vector": vector_bytes(vec),
            "top_categories": (category,),
            "language": "en",
            "content_type": kind,
        }
        fields.update(extra)
        features = UserFeatures(**fields)
        self.users[user_id] = encode_user_features(features)
        return features


def build_world(per_cell: int = 12) -> World:
    """`per_cell` items per (category, type), ten days old."""
    world = World(MemoryCatalogue(DIM))
    for category in CATEGORIES:
        for kind in ("VIDEO", "AUDIO"):
            for n in range(per_cell):
                world.publish(f"{category}-{kind[0]}{n}", category, kind)
    return world


def service_for(
    world: World, config: FeedConfig | None = None, co: CoSource | None = None
) -> tuple[FeedService, MemoryUserSource]:
    source = MemoryUserSource(world.users)
    fresh = FreshItems(DAY_MS, clock_ms=lambda: NOW_MS)
    table = ItemTable()
    records = list(world.catalogue.live_records())
    fresh.add(records)
    table.upsert(records)
    world.catalogue.listeners += [table.upsert, fresh.add]
    trending = TrendingCache()
    trending.want(CATEGORIES)
    service = FeedService(
        config or FeedConfig(),
        world.catalogue,
        FeatureFetcher(source, cache_users=100, retry_s=60.0),
        ItemStatsCache(table, ttl_s=60.0),
        trending,
        fresh,
        ModelHolder(default_model()),
        clock_ms=lambda: NOW_MS,
        table=table,
        co=CoRecords(co) if co is not None else None,
    )
    return service, source


def request(
    user_id: str, limit: int = 20, kind: str | None = None, diversity: float = 0.2
) -> FeedRequest:
    return FeedRequest(user_id=user_id, limit=limit, content_type=kind, diversity=diversity)


class RecordedImpressions(NoImpressions):
    """An impression sink that keeps what was published, for assertions."""

    def __init__(self) -> None:
        super().__init__("recorded in the test")
        self.served: list[object] = []

    def publish(self, served: object) -> None:
        self.served.append(served)
