"""One contract suite for the feature store, run against the in-memory twin and real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.redis_sink import ErasureAck, FeatureSink
from state.erasure_log import ErasureLog
from state.feature_store import (
    ITEM,
    LAST_WRITE_KEY,
    USER,
    FeatureErase,
    FeatureStore,
    FeatureWrite,
    MemoryFeatureStore,
    RedisFeatureStore,
    StoreUnavailableError,
    feature_key,
)
from state.redis_client import JOB, connect
from tests.conftest import BACKENDS, emptied_redis_url


@pytest.fixture(
    params=["memory", *(pytest.param(b, marks=pytest.mark.integration) for b in BACKENDS)]
)
def store(request: pytest.FixtureRequest) -> Iterator[FeatureStore]:
    """The in-memory twin, then Redis: the single server and the cluster."""
    if request.param == "memory":
        yield MemoryFeatureStore()
        return
    client = connect(emptied_redis_url(request, request.param), JOB)
    yield RedisFeatureStore(client)
    client.close()


def test_reads_return_what_was_written_in_order(store: FeatureStore) -> None:
    store.put_many([FeatureWrite(USER, "a", 1, b"A"), FeatureWrite(USER, "b", 1, b"B")])
    assert store.get_many(USER, ["b", "missing", "a"]) == [b"B", None, b"A"]
    assert store.get_many(ITEM, ["a"]) == [None]


def test_an_older_write_never_replaces_a_newer_one(store: FeatureStore) -> None:
    assert store.put_many([FeatureWrite(USER, "u", 200, b"new")]) == 1
    assert store.put_many([FeatureWrite(USER, "u", 100, b"replayed-old")]) == 0
    assert store.get_many(USER, ["u"]) == [b"new"]
    assert store.put_many([FeatureWrite(USER, "u", 200, b"same-time")]) == 1
    assert store.get_many(USER, ["u"]) == [b"same-time"]


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["x", "y", "z"]), st.integers(0, 2**40), st.binary(max_size=8)),
        max_size=20,
    ),
    data=st.data(),
)
def test_any_replay_order_ends_at_the_newest_value(
    store: FeatureStore, writes: list[tuple[str, int, bytes]], data: st.DataObject
) -> None:
    # Distinct timestamps per entity: the newest write must win whatever order they arrive in.
    seen: dict[tuple[str, int], bytes] = {}
    for entity, ts, payload in writes:
        seen.setdefault((entity, ts), payload)
    unique = [FeatureWrite(ITEM, e, ts, p) for (e, ts), p in seen.items()]
    shuffled = data.draw(st.permutations(unique))
    prefix = f"t{abs(hash(tuple(unique))) % 10**9}-"
    store.put_many([FeatureWrite(w.kind, prefix + w.entity_id, w.ts_ms, w.payload)
                    for w in shuffled])  # fmt: skip
    for entity in ("x", "y", "z"):
        mine = [w for w in unique if w.entity_id == entity]
        want = max(mine, key=lambda w: w.ts_ms).payload if mine else None
        assert store.get_many(ITEM, [prefix + entity]) == [want]


def test_ids_cannot_reach_another_entitys_key() -> None:
    assert feature_key(USER, "a}:x") != feature_key(USER, "a")
    assert feature_key(USER, "i:b") != feature_key(ITEM, "b")


@pytest.mark.integration
def test_ttl_is_applied(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    RedisFeatureStore(client).put_many([FeatureWrite(USER, "t", 1, b"x", ttl_s=120)])
    assert 0 < client.ttl(feature_key(USER, "t")) <= 120


def test_an_unreachable_redis_is_retried_then_fails_loudly() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    store = RedisFeatureStore(client, attempts=3, backoff_s=0.01)
    with pytest.raises(StoreUnavailableError, match="after 3 attempts"):
        store.put_many([FeatureWrite(USER, "u", 1, b"x")])


def test_an_erasure_in_the_sink_is_never_coalesced_away(any_redis_url: str) -> None:
    """Stored: a record stamped after the erasure but built on the erased history. One
    batch then erases the key and writes the new history's first record, stamped older:
    the erasure lands first, the new record after it, and the acknowledgement last."""
    sink = FeatureSink(any_redis_url).build("features_out", 0, 1)
    client = connect(any_redis_url, JOB)
    try:
        sink.write_batch([FeatureWrite(USER, "back", 160, b"contaminated")])
        sink.write_batch([
            FeatureErase(USER, "back", 100),
            FeatureWrite(USER, "back", 130, b"new history"),
            ErasureAck("req-back", "engagement"),
        ])  # fmt: skip
        assert RedisFeatureStore(client).get_many(USER, ["back"]) == [b"new history"]
        assert ErasureLog(client).acks("req-back").keys() == {"engagement"}
        sink.write_batch([FeatureWrite(USER, "gone", 10, b"x"), FeatureErase(USER, "gone", 20)])
        assert not client.exists(feature_key(USER, "gone"))  # write then erase: erased
    finally:
        sink.close()
        client.close()


def test_the_sink_notes_when_it_last_wrote(any_redis_url: str) -> None:
    """What the explorer shows as "last feature write": wall-clock ms, at most once a second
    per worker, and only after a batch that changed something."""
    sink = FeatureSink(any_redis_url).build("features_out", 0, 1)
    client = connect(any_redis_url, JOB)
    try:
        client.delete(LAST_WRITE_KEY)
        sink.write_batch([ErasureAck("req-none", "engagement")])
        assert client.get(LAST_WRITE_KEY) is None  # nothing written, nothing noted
        before = time.time() * 1000
        sink.write_batch([FeatureWrite(USER, "noted", 10, b"x")])
        first = int(client.get(LAST_WRITE_KEY))
        assert before - 1 <= first <= time.time() * 1000 + 1
        sink.write_batch([FeatureWrite(USER, "noted", 20, b"y")])
        assert int(client.get(LAST_WRITE_KEY)) == first  # within the second: not again
    finally:
        sink.close()
        client.close()
