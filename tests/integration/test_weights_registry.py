"""The weights registry on a real Redis and a real Redis Cluster, and `feedflow weights run`
reading the real topic and writing to both."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import orjson
import pytest

from feedflow import cli
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo
from operators.contracts import TOPIC_ENGAGEMENT
from operators.weekly_weights import UserWeights, WeekPrior, week_span
from state.redis_client import JOB, RedisClient, connect
from state.weights_registry import (
    COMPLETE,
    WRITING,
    WeightsRegistry,
    WeightsStateError,
    cohorts_key,
    user_key,
)

pytestmark = [pytest.mark.integration]
DAY_S = 86_400
PRIOR = WeekPrior(categories={"news": 1.0}, video=0.5, explore=0.1, fresh=0.1, users=1, mass=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(any_redis_client: RedisClient, clock: Clock) -> WeightsRegistry:
    return WeightsRegistry(any_redis_client, ttl_s=35 * DAY_S, clock=clock)


def weights(category: str) -> UserWeights:
    return UserWeights(categories=((category, 0.9),), video=0.5, explore=1.0, fresh=1.0, mass=9)


def finished(registry: WeightsRegistry, week: str, category: str, publish: bool = True) -> str:
    version = registry.begin(week, "test", 10.0).version
    registry.write_users(version, [("u1", weights(category)), ("u2", weights(category))])
    registry.write_cohorts(version, {"*|*|*": ["m1", "m2"]})
    registry.complete(version, users=2, events=10, cohorts=1, prior=PRIOR)
    if publish:
        registry.publish(version)
    return version


def test_publish_and_rollback_move_the_pointer_between_complete_versions(
    registry: WeightsRegistry,
) -> None:
    assert registry.active() is None and registry.user_weights("u1") is None
    v1 = finished(registry, "2024-W01", "news")
    v2 = finished(registry, "2024-W02", "music")
    assert registry.active() == v2
    assert registry.user_weights("u1") == weights("music")
    assert registry.user_weights("u1", v1) == weights("news")
    assert registry.cohort_lists(v2) == {"*|*|*": ("m1", "m2")}
    assert registry.rollback() == (v2, v1)
    assert registry.user_weights("u1") == weights("news")
    with pytest.raises(WeightsStateError, match="no complete, unexpired version older"):
        registry.rollback()
    assert registry.publish(v2) == v1


def test_rollback_skips_failed_unfinished_and_expired_versions(
    registry: WeightsRegistry, clock: Clock
) -> None:
    old = finished(registry, "2024-W01", "news", publish=False)
    clock.now += 30 * DAY_S
    good = finished(registry, "2024-W05", "sport", publish=False)
    failed = registry.begin("2024-W06", "test", 10.0).version
    registry.fail(failed, "RuntimeError: disk on fire")
    unfinished = registry.begin("2024-W06", "test", 10.0).version
    current = finished(registry, "2024-W06", "music")
    clock.now += 6 * DAY_S  # `old` has expired, `good` has not
    assert registry.rollback() == (current, good)
    with pytest.raises(WeightsStateError, match="no complete"):
        registry.rollback()
    for version, why in ((failed, "failed"), (unfinished, WRITING), (old, "expired"),
                         ("2099-W01.9", "not on record")):  # fmt: skip
        with pytest.raises(WeightsStateError, match=why):
            registry.publish(version)
    assert registry.active() == good
    status = registry.status()
    rows = {row["version"]: row for row in status["versions"]}
    assert [row["version"] for row in status["versions"]] == [current, unfinished, failed,
                                                              good, old]  # fmt: skip
    assert rows[good]["active"] and rows[old]["expired"] and not rows[good]["expired"]
    assert rows[failed]["error"] == "RuntimeError: disk on fire"
    assert rows[current]["state"] == COMPLETE and rows[current]["users"] == 2


def test_a_versions_data_expires_with_its_ttl(
    registry: WeightsRegistry, any_redis_client: RedisClient
) -> None:
    version = finished(registry, "2024-W01", "news")
    for key in (user_key("u1", version), cohorts_key(version)):
        assert 34 * DAY_S < any_redis_client.ttl(key) <= 35 * DAY_S
    manifest = registry.get(version)
    assert manifest.expires_ms - manifest.created_ms == 35 * DAY_S * 1000


def test_a_version_cannot_be_written_once_it_is_complete(registry: WeightsRegistry) -> None:
    version = finished(registry, "2024-W01", "news", publish=False)
    with pytest.raises(WeightsStateError, match="complete, not writing"):
        registry.write_users(version, [("u9", weights("news"))])


@pytest.fixture
def cli_env(stack: StackInfo, any_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("REDIS_URL", any_redis_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap)
    yield any_redis_url


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]], ids=["one", "cluster"])
def test_a_weekly_run_reads_its_week_from_the_topic(
    cli_env: str, stack: StackInfo, capsys: pytest.CaptureFixture[str], processes: list[str]
) -> None:
    week = "2023-W07"  # long before anything else the session's broker holds
    start, end = week_span(week)
    user, other = f"weekly-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(stack.bootstrap)
    for n, (who, ts) in enumerate([(user, start + 1000), (user, end - 1000), (other, end)]):
        event = {"event_id": f"{who}-{n}", "event_type": "media_liked", "user_id": who,
                 "media_id": f"m{n}", "ts": ts, "content_type": "AUDIO",
                 "language": "de"}  # fmt: skip
        sink.write(TOPIC_ENGAGEMENT, who, ts, orjson.dumps(event).decode())
    sink.close()
    capsys.readouterr()
    assert cli.main(["weights", "run", "--week", week, "--json", *processes]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["published"] and result["users"] >= 1 and result["events"] >= 2
    client = connect(cli_env, JOB)
    registry = WeightsRegistry(client, 35 * DAY_S)
    mine = registry.user_weights(user)
    assert mine is not None and mine.video < 0.5 and mine.mass == pytest.approx(1.6)
    assert registry.user_weights(other) is None  # its event lies after the week
    assert "de|AUDIO|*" in registry.cohort_lists(result["version"])
    assert cli.main(["weights", "status"]) == 0
    assert cli.main(["weights", "user", user]) == 0
    client.close()
