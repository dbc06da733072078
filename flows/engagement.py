"""The engagement flow: `user.engagement.events` → user features, item stats, boards.

Wiring only; the logic is in `operators/`. The shape:

    kafka ─ decode ─┬─ rejected ─────────────────────────────────────────────→ dead letters
    (+ erasures)    └─ key(user) ─ user ─┬─ UserFeatures ───────────────────→ feature store
                                         ├─ Erased ─ delete + ack ──────────→ feature store
                                         ├─ Dropped (late, duplicate, erased) → counted
                                         ├─ Feedback: a first subscription (by creator)
                                         │    └─ key(creator) ─ creators ─ CreatorRecord ─→ store
                                         ├─ CoVisit (a new positive item, after the user's last few)
                                         │    └─ key(media) ─ co_engagement ─ CoRecord ──→ store
                                         └─ ViewStart/Segment/Feedback
                                              └─ key(media) ─ item ─┬─ ItemStatsRecord → store
                                                                    └─ ScoreUpdate
                                                   └─ key(board) ─ trending ─ TrendingList → store
    events (by user) + closed views (by item) ───────────────────────────────→ event lake

Per-user and per-item state is keyed, so it spreads over workers with the partitions; the
co-engagement sketches are keyed by item: a visit goes to its item, and one link to each of
the user's recent positive items (:mod:`operators.co_engagement`); the
trending boards are keyed by ranking (global, per content type, per category), and the
long-horizon popularity boards (`popular:all`, `popular:type:<T>`, `popular:category:<c>`)
are more keys of the same step: a popularity update carries its half-life, and a board
ranks whatever kind of score it is fed (:mod:`operators.trending`). Item metadata
(duration, category, vector) comes from the content flow's item store through a per-worker
cache. Every write is a full value guarded by event time, so the epoch replayed after a
crash rewrites the same values.

Erasure requests (`feedflow.erasure`) reach the user step under the user's key: it drops the
user's state, deletes the stored features and acknowledges; events of the erased history are
dropped from then on (:mod:`operators.erasure`). Item stats, boards and co-engagement hold
counts over many users and no user id, so they are left as they are.

Validated events (client retries included) and closed views also go to the event lake
(:mod:`flows.lake_sink`): Parquet by event hour, written once per epoch.

Run: `feedflow flow engagement` (or `python -m bytewax.run "flows.engagement:build_flow()"`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeGuard

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from flows.erasure_in import decode_erasure, tombstones_for
from flows.kafka_in import (
    STEP_CONSUMER_ERRORS,
    STEP_DEADLETTER_OUT,
    STEP_DEADLETTERS,
    STEP_DECODE,
    STEP_ROUTE,
    STEP_SPLIT,
    coordinates,
    decoded_input,
    kafka_source,
)
from flows.keyed_logic import ErasableLogic, KeyedLogic
from flows.lake_sink import LakeSink, lake_batches, lake_sink
from flows.redis_sink import ErasureAck, FeatureSink, Output
from flows.sinks import deadletter_sink
from kernel.metrics import EVENT_LAG, EVENTS
from kernel.settings import Settings, load_settings
from operators.co_engagement import CoLink, CoNeighbours, CoRecord, CoVisit, links
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_ERASURE,
    DeadLetter,
    EngagementEvent,
    ErasureRequest,
    dead_letter,
)
from operators.contracts import decode_engagement as decode_payload
from operators.creator_stats import CreatorRecord, CreatorStats, encode_creator, is_subscription
from operators.dedup import id_hash64
from operators.emissions import Dropped, Feedback, Segment, ViewStart
from operators.erasure import Erased, Tombstones
from operators.eventtime import now_ms
from operators.feature_codecs import encode_co_record, encode_item_stats, encode_trending
from operators.item_info import ItemLookup
from operators.item_stats import ItemStats, ItemStatsRecord, ScoreUpdate, ranking_keys
from operators.trending import TrendingBoard, TrendingList
from operators.user_engagement import UserEngagement
from operators.user_features import UserFeatures, encode_user_features
from state.feature_store import (
    CO_ENGAGEMENT,
    CREATOR,
    ITEM,
    TRENDING,
    USER,
    FeatureErase,
    FeatureWrite,
)
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry
from state.item_lookup import CachedItemLookup
from state.item_store import ItemStore
from state.redis_client import FLOW, connect

FLOW_ID: Final = "engagement"
INPUT_TOPICS: Final = (TOPIC_ENGAGEMENT, TOPIC_ERASURE)
STEP_INPUT: Final = "events_in"
STEP_KEY_USER: Final = "key_user"
STEP_USER: Final = "user"
STEP_USER_WRITES: Final = "user_writes"
STEP_TO_ITEMS: Final = "to_items"
STEP_TO_CO: Final = "to_co_engagement"
STEP_CO: Final = "co_engagement"
STEP_CO_WRITES: Final = "co_engagement_writes"
STEP_ITEM: Final = "item"
STEP_ITEM_WRITES: Final = "item_writes"
STEP_TO_BOARDS: Final = "to_boards"
STEP_TRENDING: Final = "trending"
STEP_TRENDING_WRITES: Final = "trending_writes"
STEP_WRITES: Final = "writes"
STEP_FEATURES_OUT: Final = "features_out"
STEP_LAKE_EVENTS: Final = "lake_events"
STEP_LAKE_VIEWS: Final = "lake_views"
STEP_TO_LAKE: Final = "to_lake"
STEP_TO_CREATORS: Final = "to_creators"
STEP_CREATORS: Final = "creators"
STEP_CREATOR_WRITES: Final = "creator_writes"
STEP_LAKE_OUT: Final = "lake_out"
# Recovery data is keyed by these: renaming a stateful step silently loses its state.
STATEFUL_STEPS: Final = frozenset({STEP_USER, STEP_ITEM, STEP_TRENDING, STEP_CO, STEP_CREATORS})
STEP_IDS: Final = frozenset(
    {
        STEP_INPUT, STEP_SPLIT, STEP_DECODE, STEP_ROUTE, STEP_CONSUMER_ERRORS,
        STEP_DEADLETTERS, STEP_DEADLETTER_OUT, STEP_KEY_USER, STEP_USER, STEP_USER_WRITES,
        STEP_TO_ITEMS, STEP_ITEM, STEP_ITEM_WRITES, STEP_TO_BOARDS, STEP_TRENDING,
        STEP_TRENDING_WRITES, STEP_WRITES, STEP_FEATURES_OUT, STEP_TO_CO, STEP_CO,
        STEP_CO_WRITES, STEP_TO_CREATORS, STEP_CREATORS, STEP_CREATOR_WRITES,
    }
)  # fmt: skip
# with the lake on
LAKE_STEP_IDS: Final = frozenset({STEP_LAKE_EVENTS, STEP_LAKE_VIEWS, STEP_TO_LAKE, STEP_LAKE_OUT})

ItemMessage = ViewStart | Segment | Feedback
CoMessage = CoVisit | CoLink


def decode(msg: KafkaSourceMessage[Any, Any]) -> EngagementEvent | ErasureRequest | DeadLetter:
    """An engagement event or erasure request, or the dead letter of a payload that failed
    validation."""
    if msg.topic == TOPIC_ERASURE:
        return decode_erasure(msg)
    raw = msg.value if isinstance(msg.value, bytes) else b""
    event = decode_payload(raw)
    now = now_ms()
    if isinstance(event, EngagementEvent):
        EVENT_LAG.observe(max(now - event.ts, 0) / 1000)
        return event
    EVENTS.labels(topic=TOPIC_ENGAGEMENT, outcome="invalid").inc()
    partition, offset = coordinates(msg)
    return dead_letter(TOPIC_ENGAGEMENT, partition, offset, event.reason, raw, now)


def user_outputs(
    settings: Settings, key_value: tuple[str, Any]
) -> Iterable[Output | tuple[str, ItemMessage | CoMessage]]:
    """Sort one output of the user logic: feature changes and erasure acks, item and
    co-engagement messages (keyed by media id), counted drops."""
    user_id, out = key_value
    if isinstance(out, Erased):
        ack = ErasureAck(out.request_id, FLOW_ID)
        return [ack] if out.kept else [FeatureErase(USER, user_id, out.ts), ack]
    if isinstance(out, CoVisit):
        return [(out.media_id, out), *((link.media_id, link) for link in links(out))]
    if isinstance(out, UserFeatures):
        ttl = settings.user_ttl_days * 86_400
        return [FeatureWrite(USER, user_id, out.ts, encode_user_features(out), ttl)]
    if isinstance(out, Dropped):
        EVENTS.labels(topic=TOPIC_ENGAGEMENT, outcome=out.outcome).inc()
        return []
    if isinstance(out, Feedback) and out.creator_id and not out.media_id:
        return [(out.creator_id, out)] if is_subscription(out) else []
    if (isinstance(out, Segment) and not out.final) or not out.media_id:
        return []  # provisional views do not count for an item
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


def is_creator_message(key_value: tuple[str, Any]) -> TypeGuard[tuple[str, Feedback]]:
    """True for the creator step's inputs (a user's first subscription to a creator)."""
    return is_subscription(key_value[1])


def creator_write(settings: Settings, key_value: tuple[str, CreatorRecord]) -> FeatureWrite:
    """A creator's record (its subscriber count)."""
    creator_id, record = key_value
    ttl = settings.item_ttl_days * 86_400
    return FeatureWrite(CREATOR, creator_id, record.ts, encode_creator(record), ttl)


def is_co_message(key_value: tuple[str, Any]) -> TypeGuard[tuple[str, CoMessage]]:
    """True for the co-engagement step's inputs."""
    return isinstance(key_value[1], CoVisit | CoLink)


def is_pair(x: object) -> TypeGuard[tuple[str, Any]]:
    """True for a `(key, value)` pair routed on by key (the user step's inputs of the item
    and co-engagement steps, the item step's board updates); the rest are writes."""
    return isinstance(x, tuple)


def co_write(settings: Settings, key_value: tuple[str, CoRecord]) -> FeatureWrite:
    """An item's co-engagement record, stored under its id's digest (users' seeds name
    their items by digest)."""
    media_id, record = key_value
    ttl = settings.item_ttl_days * 86_400
    digest = id_hash64(media_id).hex()
    return FeatureWrite(CO_ENGAGEMENT, digest, record.ts, encode_co_record(record), ttl)


def co_logic(settings: Settings, resume: Any) -> KeyedLogic:
    """The per-item co-engagement sketch under Bytewax."""
    s = settings
    ttl_ms = s.item_ttl_days * 86_400_000
    return KeyedLogic(CoNeighbours(s.co_capacity, s.co_list_size, s.co_flush_ms, ttl_ms, resume))


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
    client = connect(settings.redis_url, FLOW)
    keys = IndexKeys()
    return CachedItemLookup(ItemStore(client, keys), IndexRegistry(client, keys))


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Any] | None = None,
    deadletters: Sink[DeadLetter] | None = None,
    features: Sink[Output] | None = None,
    items: Callable[[], ItemLookup] | None = None,
    erased: Tombstones | None = None,
    lake: LakeSink | None = None,
) -> Dataflow:
    """The engagement dataflow; tests may swap the source, the sinks, the item lookup and
    the tombstones (by default read from the erasure topic, or none with a swapped source).
    The lake sink comes from the settings, or is off with a swapped source unless given."""
    s = settings or load_settings(os.environ)
    if erased is None:
        erased = tombstones_for(s, source)
    if lake is None and source is None:
        lake = lake_sink(s, FLOW_ID, erased)
    make_items = items or (lambda: item_lookup(s))
    lookups: dict[str, ItemLookup] = {}

    def lookup() -> ItemLookup:
        # One cache per worker process, built lazily on the worker that needs it.
        if "items" not in lookups:
            lookups["items"] = make_items()
        return lookups["items"]

    flow = Dataflow(FLOW_ID)
    dlq = deadletters or deadletter_sink(s)
    src = source or kafka_source(s, list(INPUT_TOPICS))
    events: Stream[EngagementEvent | ErasureRequest] = decoded_input(
        flow, STEP_INPUT, src, TOPIC_ENGAGEMENT, decode, dlq
    )
    by_user = op.key_on(STEP_KEY_USER, events, lambda ev: ev.user_id)
    users = op.stateful(
        STEP_USER,
        by_user,
        lambda resume: ErasableLogic(
            UserEngagement(s, lookup(), resume), count_outcome, erased, resume is not None
        ),
    )
    user_out = op.flat_map(STEP_USER_WRITES, users, lambda kv: user_outputs(s, kv))
    user_split = op.branch(STEP_TO_ITEMS, user_out, is_pair)
    keyed = user_split.trues
    co_split = op.branch(STEP_TO_CO, keyed, is_co_message)
    co_in: Stream[tuple[str, CoMessage]] = co_split.trues
    co_state = op.stateful(STEP_CO, co_in, lambda resume: co_logic(s, resume))
    co_writes = op.map(STEP_CO_WRITES, co_state, lambda kv: co_write(s, kv))
    creator_split = op.branch(STEP_TO_CREATORS, co_split.falses, is_creator_message)
    creators = op.stateful(
        STEP_CREATORS, creator_split.trues, lambda resume: KeyedLogic(CreatorStats(resume))
    )
    creator_writes = op.map(STEP_CREATOR_WRITES, creators, lambda kv: creator_write(s, kv))
    item_in: Stream[tuple[str, ItemMessage]] = creator_split.falses
    item_state = op.stateful(
        STEP_ITEM, item_in, lambda resume: KeyedLogic(ItemStats(s, lookup(), resume))
    )
    item_out = op.flat_map(STEP_ITEM_WRITES, item_state, lambda kv: item_outputs(s, kv))
    item_split = op.branch(STEP_TO_BOARDS, item_out, is_pair)
    board_in: Stream[tuple[str, ScoreUpdate]] = item_split.trues
    boards = op.stateful(
        STEP_TRENDING,
        board_in,
        lambda resume: KeyedLogic(TrendingBoard(s.trending_top_k, resume=resume)),
    )
    board_writes = op.map(STEP_TRENDING_WRITES, boards, board_write)
    writes: Stream[Output] = op.merge(
        STEP_WRITES,
        user_split.falses,
        item_split.falses,
        board_writes,
        co_writes,
        creator_writes,
    )
    op.output(STEP_FEATURES_OUT, writes, features or FeatureSink(s.redis_url))
    if lake is not None:
        # Events, and closed views among the item step's inputs, a batch at a time.
        batches = op.merge(
            STEP_TO_LAKE,
            lake_batches(STEP_LAKE_EVENTS, events, (EngagementEvent,)),
            lake_batches(STEP_LAKE_VIEWS, keyed, (Segment,)),
        )
        op.output(STEP_LAKE_OUT, batches, lake)
    return flow
