"""`feedflow forget` on the real stack: the flows as processes, the weekly job, the audit.

One user is forgotten after the engagement and learning flows have built their features and
a weekly weights version holds their weights. Then: every store reports clean; nobody else
changed; the user's old events replayed onto the topic are not applied (only what they do
after the erasure counts); a rebuild from the topic's start does not bring them back; the
next weekly run leaves them out; the audit trail never holds the raw id.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from feedflow import cli
from feedflow.stack import StackInfo
from flows.topic_reader import read_topic
from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent, decode_engagement, encode
from operators.user_features import decode_user_features
from operators.weekly_weights import week_of
from state.erasure_log import AUDIT_KEY
from state.feature_store import USER, RedisFeatureStore, feature_key
from state.lake import Lake
from state.lake_schema import EVENTS
from state.weights_registry import user_key
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import (
    START_MS,
    USERS,
    feature_digest,
    load_catalogue,
    publish,
    start_flow,
    wait_until_stable,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def lake_events(lake: Lake, user_id: str) -> list[str]:
    rows = lake.read(EVENTS, columns=["event_id", "user_id"]).to_pylist()
    return [r["event_id"] for r in rows if r["user_id"] == user_id]


def features_only(digest: dict[str, str]) -> dict[str, str]:
    """User feature keys (`ff:{u:<id>}`), not the weights keys that share the prefix."""
    return {k: v for k, v in digest.items() if k.endswith("}")}


def test_forget_erases_a_user_everywhere_and_nothing_brings_them_back(
    private_stack: StackInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", private_stack.bootstrap)
    monkeypatch.setenv("REDIS_URL", private_stack.redis_url)
    lake = Lake(str(tmp_path / "lake"))  # one lake for both flows and `forget`
    monkeypatch.setenv("FEEDFLOW_LAKE_URL", lake.root)
    run = publish(private_stack, users=40, rate=20_000, duration=2, malformed=0.0)
    users = run["users"]
    client = redis.Redis.from_url(private_stack.redis_url)
    store = RedisFeatureStore(client)
    history = [
        ev
        for raw in read_topic(private_stack.bootstrap, TOPIC_ENGAGEMENT)
        if isinstance(ev := decode_engagement(raw), EngagementEvent)
    ]
    victim = max(users, key=lambda u: sum(ev.user_id == u for ev in history))
    mine = [ev for ev in history if ev.user_id == victim]

    def settled(d: dict[str, str]) -> bool:
        return len(features_only(d)) == len(users)

    content = load_catalogue(private_stack, tmp_path, client)
    flows = [
        start_flow("engagement", private_stack, tmp_path / "eng"),
        start_flow("learning", private_stack, tmp_path / "learn"),
    ]
    try:
        before = features_only(
            wait_until_stable(lambda: feature_digest(client, (USERS,)), settled, 180)
        )
        raw = store.get_many(USER, [victim])[0]
        assert raw is not None
        engaged = decode_user_features(raw).engagements
        week = week_of(START_MS)
        code, weekly = cli_json(capsys, "weights", "run", "--week", week)
        assert code == 0 and client.exists(user_key(victim, weekly["version"]))

        code, forgot = cli_json(capsys, "forget", victim)
        assert code == 0 and forgot["keys_deleted"] == 2  # features and one weights version
        assert forgot["lake_rows_deleted"] >= len(mine)  # events, views, impressions
        code, report = cli_json(capsys, "forget", "--verify", victim, "--wait", "60")
        assert code == 0, report
        states = {name: s["state"] for name, s in report["stores"].items()}
        assert states["engagement flow"] == states["learning flow"] == states["redis"] == "clean"
        assert states["event lake"] == "clean" and lake.read(EVENTS).num_rows > 0
        assert "pending" not in states.values()
        after = features_only(feature_digest(client, (USERS,)))
        assert victim not in {k[len("ff:{u:") : -1] for k in after}
        assert after == {k: v for k, v in before.items() if k != feature_key(USER, victim)}

        # The user's old events replayed, then one new event after the erasure, in one
        # partition (same key): the old ones are dropped, the new one starts a new history.
        comeback = EngagementEvent(
            event_id="comeback-1", event_type="media_started", user_id=victim,
            media_id=mine[0].media_id, ts=int(time.time() * 1000), position_s=0.0,
        )  # fmt: skip
        producer = Producer({"bootstrap.servers": private_stack.bootstrap})
        for ev in [*mine, comeback]:
            producer.produce(TOPIC_ENGAGEMENT, encode(ev), key=victim.encode())
        assert producer.flush(30) == 0
        del producer
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and store.get_many(USER, [victim])[0] is None:
            time.sleep(0.5)
        back = store.get_many(USER, [victim])[0]
        assert back is not None, "the comeback event was not applied"
        assert decode_user_features(back).engagements < engaged
        deadline = time.monotonic() + 30  # the lake is written as the epoch closes
        while not (theirs := lake_events(lake, victim)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert theirs == ["comeback-1"]  # the replayed history never reached the lake
        renewed = features_only(feature_digest(client, (USERS,)))
    finally:
        for proc in flows:
            stop(proc)
        stop(content)

    # Redis loses the features; a rebuild from the topic's start brings everyone back as
    # they were, the forgotten user only as what they did after the erasure.
    for key in renewed:
        client.delete(key)
    rebuild = start_flow("engagement", private_stack, tmp_path / "eng", "--rebuild")
    try:
        rebuilt = wait_until_stable(
            lambda: features_only(feature_digest(client, (USERS,))),
            lambda d: len(d) == len(renewed), 180,
        )  # fmt: skip
    finally:
        stop(rebuild)
    assert rebuilt == renewed

    code, weekly2 = cli_json(capsys, "weights", "run", "--week", week, "--no-publish")
    assert code == 0 and weekly2["erased"] == 2 * len(mine)  # the history and its replay
    assert not client.exists(user_key(victim, weekly2["version"]))

    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(AUDIT_KEY)  # type: ignore[assignment]
    assert [e[1][b"action"] for e in entries] == [b"forget", b"verify"]
    assert all(victim.encode() not in value for _id, e in entries for value in e.values())
