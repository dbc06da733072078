"""Erasure through the engagement and learning flows (`bytewax.testing`, in-memory sinks).

Whatever the interleaving of a user's events with the erasure request, and whatever is
replayed after it, the user's features end deleted and nobody else's features change; with
the request already on the topic at start (a rebuild), the flow's output is exactly that of
a history without the user.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import engagement, learning
from flows.redis_sink import ErasureAck
from kernel.settings import Settings
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_ERASURE,
    TOPIC_IMPRESSIONS,
    ErasureRequest,
    Impression,
    ImpressionItem,
    encode,
)
from operators.erasure import Tombstones
from operators.item_info import ItemInfo, lookup_from
from state.feature_store import USER, FeatureErase, MemoryFeatureStore
from tests.flows.test_engagement_flow import START_MS as EVENTS_START
from tests.flows.test_engagement_flow import catalogue, simulate

SETTINGS = Settings(kafka_bootstrap_servers="unused", redis_url="unused")
Message = tuple[str, str, str]  # topic, key, value


def world() -> tuple[list[Message], dict[str, ItemInfo], str, ErasureRequest]:
    _sim, messages = simulate(users=12, items=80, rate=400, duration=6)
    events = [(t, k, v) for t, k, _ts, v in messages if t == TOPIC_ENGAGEMENT]
    victim = Counter(k for _t, k, _v in events).most_common(1)[0][0]
    last_ts = max(ts for t, _k, ts, _v in messages if t == TOPIC_ENGAGEMENT)
    request = ErasureRequest(user_id=victim, ts=last_ts + 1, request_id="req-1")
    return events, catalogue(messages), victim, request


EVENTS, ITEMS, VICTIM, REQUEST = world()
ERASURE: Message = (TOPIC_ERASURE, VICTIM, encode(REQUEST).decode())


def run_engagement(messages: list[Message], erased: Tombstones | None = None) -> list[Any]:
    inputs = [
        KafkaSourceMessage(k.encode(), v.encode(), topic=t, partition=0, offset=n)
        for n, (t, k, v) in enumerate(messages)
    ]
    out: list[Any] = []
    flow = engagement.build_flow(
        SETTINGS, source=TestingSource(inputs, batch_size=50), deadletters=TestingSink([]),
        features=TestingSink(out), items=lambda: lookup_from(ITEMS), erased=erased,
    )  # fmt: skip
    run_main(flow)
    return out


def stored(outputs: list[Any]) -> MemoryFeatureStore:
    store = MemoryFeatureStore()
    store.put_many([x for x in outputs if not isinstance(x, ErasureAck)])
    return store


def users_of(store: MemoryFeatureStore) -> dict[str, bytes]:
    return {k: v for k, v in store.values.items() if k.startswith("ff:{u:")}


WITHOUT_VICTIM = stored(run_engagement([m for m in EVENTS if m[1] != VICTIM]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(0, len(EVENTS)), replayed=st.integers(0, 40))
def test_an_erased_user_ends_deleted_and_nobody_else_changes(at: int, replayed: int) -> None:
    """The request anywhere in the stream; then some of the user's own events again (a
    replay): the user's features are gone, every other user's are as if the user had never
    been there, and the request is acknowledged once."""
    again = [m for m in EVENTS if m[1] == VICTIM][:replayed]
    outputs = run_engagement([*EVENTS[:at], ERASURE, *EVENTS[at:], *again])
    store = stored(outputs)
    assert store.get_many(USER, [VICTIM]) == [None]
    assert users_of(store) == users_of(WITHOUT_VICTIM)
    assert [x for x in outputs if isinstance(x, ErasureAck)] == [
        ErasureAck(REQUEST.request_id, engagement.FLOW_ID)
    ]
    assert any(isinstance(x, FeatureErase) and x.entity_id == VICTIM for x in outputs)


def test_a_rebuild_after_an_erasure_is_the_history_without_the_user() -> None:
    """Tombstones read at start (the request is on the topic): the user's events are
    dropped, so users, items, boards and co-engagement equal a run that never saw them."""
    rebuilt = stored(run_engagement(EVENTS, Tombstones([REQUEST])))
    assert rebuilt.values == WITHOUT_VICTIM.values


def comeback() -> list[Message]:
    """Twenty of the erased user's events again, stamped a minute after the erasure."""
    later = REQUEST.ts + 60_000
    shifted = []
    for t, k, v in [m for m in EVENTS if m[1] == VICTIM][:20]:
        event = orjson.loads(v)
        event["ts"] += later - EVENTS_START
        shifted.append((t, k, orjson.dumps(event).decode()))
    return shifted


def test_events_after_the_erasure_start_a_new_history() -> None:
    """A user who comes back after being forgotten is a new user from then on, and a
    rebuild that meets the old request after the new history keeps that history."""
    live = stored(run_engagement([*EVENTS, ERASURE, *comeback()]))
    assert live.get_many(USER, [VICTIM]) != [None]
    rebuilt = stored(run_engagement([*EVENTS, *comeback(), ERASURE], Tombstones([REQUEST])))
    assert rebuilt.get_many(USER, [VICTIM]) == live.get_many(USER, [VICTIM])


def test_the_learning_flow_drops_an_erased_users_open_impressions() -> None:
    """An impression waiting for its labels is dropped with the user; nothing is learned
    from it and the request is acknowledged."""
    impression = Impression(
        request_id="imp-1", user_id=VICTIM, ts=REQUEST.ts - 10, arm="a", model_version="m",
        index_version="i", items=[ImpressionItem(media_id="m1", position=0, score=1.0,
                                                 source="ann")],
    )  # fmt: skip
    raw = [
        (TOPIC_IMPRESSIONS, VICTIM, encode(impression).decode()),
        ERASURE,
        (TOPIC_IMPRESSIONS, VICTIM, encode(impression).decode()),  # replayed: dropped
    ]
    inputs = [
        KafkaSourceMessage(k.encode(), v.encode(), topic=t, partition=0, offset=n)
        for n, (t, k, v) in enumerate(raw)
    ]
    acks: list[Any] = []
    models: list[Any] = []
    flow = learning.build_flow(
        SETTINGS, source=TestingSource(inputs), deadletters=TestingSink([]),
        models=TestingSink(models), acks=TestingSink(acks),
    )  # fmt: skip
    run_main(flow)
    assert acks == [ErasureAck(REQUEST.request_id, learning.FLOW_ID)]
