"""Co-engagement through the engagement flow (`bytewax.testing`) and the feed.

A world with planted co-watch structure: series whose episodes people watch in order. The
content of every episode of a category looks alike, so only what people watched *together*
tells which episode comes next.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from flows import engagement
from kernel.settings import Settings
from operators.co_engagement import CoRecord
from operators.contracts import TOPIC_ENGAGEMENT
from operators.feature_codecs import decode_co_record
from operators.item_info import ItemInfo, lookup_from
from operators.user_features import decode_user_features
from serving.catalogue import MemoryCatalogue
from serving.co_engagement import MemoryCoSource
from state.feature_store import CO_ENGAGEMENT, USER, FeatureWrite, MemoryFeatureStore
from tests.unit.serving_fixtures import DAY_MS, NOW_MS, World, request, service_for

SERIES, EPISODES, CATEGORIES = 16, 6, ("news", "comedy")
DURATION_S = 300
T0 = NOW_MS - 5 * DAY_MS


def episode(series: int, n: int) -> str:
    return f"s{series:02d}-e{n}"


def category_of(series: int) -> str:
    return CATEGORIES[series % len(CATEGORIES)]


def events_of(user: str, watched: list[str], start_ms: int) -> list[dict[str, Any]]:
    """Whole views laid end to end, a minute apart."""
    out, t = [], start_ms
    for media in watched:
        base = {"user_id": user, "media_id": media, "content_type": "VIDEO"}
        out.append({**base, "event_type": "media_started", "ts": t, "position_s": 0.0})
        t += DURATION_S * 1000
        out.append({**base, "event_type": "media_completed", "ts": t, "position_s": DURATION_S})
        t += 60_000
    return out


def traffic(seed: int = 5) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Viewers binge a series in order; each probe user stopped somewhere: its next episode."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(240):
        watched = []
        for series in rng.sample(range(SERIES), 2):
            watched += [episode(series, e) for e in range(rng.randint(3, EPISODES))]
        events += events_of(f"viewer{n}", watched, T0 + rng.randrange(DAY_MS))
    probes = {}
    for n in range(40):
        series, stop = rng.randrange(SERIES), rng.randint(2, EPISODES - 1)
        watched = [episode(series, e) for e in range(stop)]
        events += events_of(f"probe{n}", watched, T0 + 2 * DAY_MS + n * 3_600_000)
        probes[f"probe{n}"] = episode(series, stop)
    events.sort(key=lambda e: e["ts"])
    for n, e in enumerate(events):
        e["event_id"] = f"e{n}"
    return events, probes


def run_flow(events: list[dict[str, Any]], items: dict[str, ItemInfo]) -> list[FeatureWrite]:
    inputs: list[Any] = [
        KafkaSourceMessage(e["user_id"].encode(), msgspec.json.encode(e),
                           topic=TOPIC_ENGAGEMENT, partition=0, offset=n)
        for n, e in enumerate(events)
    ]  # fmt: skip
    writes: list[FeatureWrite] = []
    flow = engagement.build_flow(
        Settings(kafka_bootstrap_servers="unused", redis_url="unused", embedding_dim=16),
        source=TestingSource(inputs, batch_size=200),
        deadletters=TestingSink([]),
        features=TestingSink(writes),
        items=lambda: lookup_from(items),
    )
    run_main(flow)
    return writes


def test_the_co_engagement_source_finds_the_next_episode() -> None:
    rng = np.random.default_rng(1)
    world = World(MemoryCatalogue(16))
    items = {}
    for series in range(SERIES):
        for n in range(EPISODES):
            media = episode(series, n)
            record = world.publish(media, category_of(series), "VIDEO", creator=f"studio{series}")
            vector = rng.standard_normal(16).astype(np.float32)
            items[media] = ItemInfo(media, DURATION_S, "VIDEO", record.category,
                                    record.creator_id, "en", record.published_at,
                                    vector / np.linalg.norm(vector))  # fmt: skip
    events, probes = traffic()
    writes = run_flow(events, items)
    store = MemoryFeatureStore()
    store.put_many(writes)

    co_writes = [w for w in writes if w.kind == CO_ENGAGEMENT]
    records = {bytes.fromhex(w.entity_id): w.payload for w in co_writes}
    assert len({decode_co_record(p).media_id for p in records.values()}) == SERIES * EPISODES
    for probe in probes:
        [raw] = store.get_many(USER, [probe])
        assert raw is not None
        world.users[probe] = raw
    service, _ = service_for(world, co=MemoryCoSource(records))

    found, anchored = 0, 0
    for probe, wanted in probes.items():
        body = service.feed(request(probe, limit=10))
        top = [i["media_id"] for i in body["items"][:3]]
        found += wanted in top
        for item in body["items"]:
            if item["source"] == "co_engagement":
                anchor = item["reason"]["anchor_media_id"]
                assert anchor != item["media_id"]
                seeds = decode_user_features(world.users[probe]).co_seeds()
                assert len(seeds) > 0
                anchored += anchor.startswith(wanted[:4])  # anchored in the same series
    assert found >= 0.8 * len(probes), f"next episode in the top 3 for {found}/{len(probes)}"
    assert anchored > 0


def test_records_name_their_item_and_bound_their_neighbours() -> None:
    items = {episode(s, n): ItemInfo(episode(s, n), DURATION_S, "VIDEO", category_of(s))
             for s in range(SERIES) for n in range(EPISODES)}  # fmt: skip
    events, _ = traffic(seed=9)
    writes = run_flow(events, items)
    latest: dict[str, CoRecord] = {}
    for w in writes:
        if w.kind == CO_ENGAGEMENT:
            latest[w.entity_id] = decode_co_record(w.payload)
    settings = Settings()
    for record in latest.values():
        assert 0 < len(record.neighbours) <= settings.co_list_size
        assert all(m != record.media_id for m, _ in record.neighbours)
        counts = [c for _, c in record.neighbours]
        assert counts == sorted(counts, reverse=True)
