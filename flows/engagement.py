"""The engagement flow: `user.engagement.events` → user features, item stats, boards.

Wiring only; the logic is in `operators/`. The shape:

    kafka ─ decode ─┬─ rejected ─────────────────────────────────────────────→ dead letters
                    └─ key(user) ─ user ─┬─ UserFeatures ───────────────────→ feature store
                                         ├─ Dropped (late, duplicate) ──────→ counted
                                         └─ ViewStart/Segment/Feedback
                                              └─ key(media) ─ item ─┬─ ItemStatsRecord → store
                                                                    └─ ScoreUpdate
                                                   └─ key(board) ─ trending ─ TrendingList → store

Per-user and per-item state is keyed, so it spreads over workers with the partitions; the
trending boards are keyed by ranking (global, per content type, per category), and the
long-horizon popularity boards (`popular:all`, `popular:type:<T>`, `popular:category:<c>`)
are more keys of the same step: a popularity update carries its half-life, and a board
ranks whatever kind of score it is fed (:mod:`operators.trending`). Item metadata
(duration, category, vector) comes from the content flow's item store through a per-worker
cache. Every write is a full value guarded by event time, so the epoch replayed after a
crash rewrites the same values.

Run: `feedflow flow engagement` (or `python -m bytewax.run "flows.engagement:build_flow()"`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import bytewax.operators as op
import redis
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from flows.kafka_in import (
    STEP_CONSUMER_ERRORS,
    STEP_DEADLETTER_OUT,
    STEP_DEADLETTERS,
    STEP_DECODE,
    STEP_ROUTE,
    STEP_SPLIT,
    decoded_input,
    kafka_source,
)
from flows.keyed_logic import KeyedLogic
from flows.redis_sink import FeatureSink
from flows.sinks import DeadLetterSink
from operators.contracts import TOPIC_ENGAGEMENT, DeadLetter, EngagementEvent, dead_letter
from operators.contracts import decode_engagement as decode_payload
from operators.emissions import Dropped, Feedback, Segment, ViewStart
from operators.feature_codecs import encode_item_stats, encode_trending
from operators.item_info import ItemLookup
from operators.item_stats import ItemStats, ItemStatsRecord, ScoreUpdate, ranking_keys
from operators.metrics import EVENT_LAG, EVENTS
from operators.settings import Settings, load_settings
from operators.trending import TrendingBoard, TrendingList
from operators.user_engagement import UserEngagement
from operators.user_features import UserFeatures, encode_user_features
from state.feature_store import ITEM, TRENDING, USER, FeatureWrite
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry
from state.item_lookup import CachedItemLookup
from state.item_store import ItemStore

FLOW_ID: Final = "engagement"
STEP_INPUT: Final = "events_in"
STEP_KEY_USER: Final = "key_user"
STEP_USER: Final = "user"
STEP_USER_WRITES: Final = "user_writes"
STEP_TO_ITEMS: Final = "to_items"
STEP_ITEM: Final = "item"
STEP_ITEM_WRITES: Final = "item_writes"
STEP_TO_BOARDS: Final = "to_boards"
STEP_TRENDING: Final = "trending"
STEP_TRENDING_WRITES: Final = "trending_writes"
STEP_WRITES: Final = "writes"
STEP_FEATURES_OUT: Final = "features_out"
# Recovery data is keyed by these: renaming a stateful step silently loses its state.
STATEFUL_STEPS: Final = frozenset({STEP_USER, STEP_ITEM, STEP_TRENDING})
STEP_IDS: Final = frozenset(
    {
        STEP_INPUT, STEP_SPLIT, STEP_DECODE, STEP_ROUTE, STEP_CONSUMER_ERRORS,
        STEP_DEADLETTERS, STEP_DEADLETTER_OUT, STEP_KEY_USER, STEP_USER, STEP_USER_WRITES,
        STEP_TO_ITEMS, STEP_ITEM, STEP_ITEM_WRITES, STEP_TO_BOARDS, STEP_TRENDING,
        STEP_TRENDING_WRITES, STEP_WRITES, STEP_FEATURES_OUT,
    }
)  # fmt: skip

ItemMessage = ViewStart | Segment | Feedback


def decode(msg: KafkaSourceMessage[Any, Any]) -> EngagementEvent | DeadLetter:
    """An engagement event, or the dead letter of a payload that failed validation."""
    raw = msg.value if isinstance(msg.value, bytes) else b""
    event = decode_payload(raw)
    now_ms = time.time_ns() // 1_000_000
    if isinstance(event, EngagementEvent):
        EVENT_LAG.observe(max(now_ms - event.ts, 0) / 1000)
        return event
    EVENTS.labels(topic=TOPIC_ENGAGEMENT, outcome="invalid").inc()
    partition, offset = msg.partition or 0, msg.offset or 0
    return dead_letter(TOPIC_ENGAGEMENT, partition, offset, event.reason, raw, now_ms)


def user_outputs(
    settings: Settings, key_value: tuple[str, Any]
) -> Iterable[FeatureWrite | tuple[str, ItemMessage]]:
    """Sort one output of the user logic: feature writes, item messages, counted drops."""
    user_id, out = key_value
    if isinstance(out, UserFeatures):
        ttl = settings.user_ttl_days * 86_400
        return [FeatureWrite(USER, user_id, out.ts, encode_user_features(out), ttl)]
    if isinstance(out, Dropped):
        EVENTS.labels(topic=TOPIC_ENGAGEMENT, outcome=out.outcome).inc()
        return []
    if (isinstance(out, Segment) and not out.final) or not out.media_id:
        return []  # provisional views and creator-only feedback do not count for an item
    return [(out.media_id, out)]


def item_outputs(
    settings: Settings, key_value: tuple[str, ItemStatsRecord | ScoreUpdate]
) -> Iterable[FeatureWrite | tuple[str, ScoreUpdate]]:
    """Item stats go to the store; score updates go to each of their boards (trending or
    popularity)."""
    media_id, out = key_value
    if isinstance(out, ItemStatsRecord):
        ttl = settings.item_ttl_days * 86_400
        return [FeatureWrite(ITEM, media_id, out.ts, encode_item_stats(out), ttl)]
    return [(board, out) for board in ranking_keys(out)]


def board_write(key_value: tuple[str, TrendingList]) -> FeatureWrite:
    """A trending or popularity board as one full value."""
    board, top = key_value
    return FeatureWrite(TRENDING, board, top.ts, encode_trending(top))


_EVENTS_OK: Final = EVENTS.labels(topic=TOPIC_ENGAGEMENT, outcome="ok")


def count_outcome(ev: EngagementEvent, out: list[Any]) -> None:
    """Count an event `ok` unless the user logic dropped it (drops count by their outcome)."""
    # Runs once per event: a plain loop and the counter child looked up once cost a quarter
    # of `any(...)` plus `labels(...)` per call.
    for x in out:
        if isinstance(x, Dropped) and x.event_id == ev.event_id:
            return
    _EVENTS_OK.inc()


def item_lookup(settings: Settings) -> ItemLookup:
    """The per-worker item cache over the content flow's item store."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    keys = IndexKeys()
    return CachedItemLookup(ItemStore(client, keys), IndexRegistry(client, keys))


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Any] | None = None,
    deadletters: Sink[DeadLetter] | None = None,
    features: Sink[FeatureWrite] | None = None,
    items: Callable[[], ItemLookup] | None = None,
) -> Dataflow:
    """The engagement dataflow; tests may swap the source, the sinks and the item lookup."""
    s = settings or load_settings(os.environ)
    make_items = items or (lambda: item_lookup(s))
    lookups: dict[str, ItemLookup] = {}

    def lookup() -> ItemLookup:
        # One cache per worker process, built lazily on the worker that needs it.
        if "items" not in lookups:
            lookups["items"] = make_items()
        return lookups["items"]

    flow = Dataflow(FLOW_ID)
    dlq = deadletters or DeadLetterSink(s.kafka_bootstrap_servers)
    src = source or kafka_source(s, [TOPIC_ENGAGEMENT])
    events = decoded_input(flow, STEP_INPUT, src, TOPIC_ENGAGEMENT, decode, dlq)
    by_user = op.key_on(STEP_KEY_USER, events, lambda ev: ev.user_id)
    users = op.stateful(
        STEP_USER,
        by_user,
        lambda resume: KeyedLogic(UserEngagement(s, lookup(), resume), count_outcome),
    )
    user_out = op.flat_map(STEP_USER_WRITES, users, lambda kv: user_outputs(s, kv))
    user_split = op.branch(STEP_TO_ITEMS, user_out, lambda x: isinstance(x, tuple))
    item_in: Stream[tuple[str, ItemMessage]] = user_split.trues  # type: ignore[assignment]
    item_state = op.stateful(
        STEP_ITEM, item_in, lambda resume: KeyedLogic(ItemStats(s, lookup(), resume))
    )
    item_out = op.flat_map(STEP_ITEM_WRITES, item_state, lambda kv: item_outputs(s, kv))
    item_split = op.branch(STEP_TO_BOARDS, item_out, lambda x: isinstance(x, tuple))
    board_in: Stream[tuple[str, ScoreUpdate]] = item_split.trues  # type: ignore[assignment]
    boards = op.stateful(
        STEP_TRENDING,
        board_in,
        lambda resume: KeyedLogic(TrendingBoard(s.trending_top_k, resume=resume)),
    )
    board_writes = op.map(STEP_TRENDING_WRITES, boards, board_write)
    writes: Stream[FeatureWrite] = op.merge(
        STEP_WRITES, user_split.falses, item_split.falses, board_writes
    )
    op.output(STEP_FEATURES_OUT, writes, features or FeatureSink(s.redis_url))
    return flow
