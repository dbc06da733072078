"""A week read from the event lake gives the weights the topic gives: the engagement flow as
a `feedflow flow` process writes the lake from the broker, then `feedflow weights run` reads
the same week once from the topic and once from the lake (`--from-lake`).

The traffic has what a live week has: client retries of events (the same event again a moment
later), malformed payloads, and events arriving behind their user's newest."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from feedflow import cli
from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo
from feedflow.weights_audit import digest, read_snapshot, stored_users
from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent, decode_engagement
from operators.weekly_weights import decode_weights, week_span
from state.lake import Lake, unique
from state.lake_schema import EVENTS
from state.redis_client import JOB, connect
from state.weights_registry import WeightsRegistry
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import start_flow
from tests.integration.test_serving_e2e import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WEEK = "2024-W10"


class Retrying:
    """Forwards to the broker; sends some events twice, as a client retrying would."""

    def __init__(self, inner: KafkaSink, share: float) -> None:
        self.inner, self.share, self.rng = inner, share, random.Random(4)
        self.valid: set[str] = set()
        self.retried = 0

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        self.inner.write(topic, key, ts, value)
        if topic != TOPIC_ENGAGEMENT:
            return
        event = decode_engagement(value.encode())
        if isinstance(event, EngagementEvent):
            self.valid.add(event.event_id)
            if self.rng.random() < self.share:
                self.inner.write(topic, key, ts, value)
                self.retried += 1

    def idle(self, seconds: float) -> None:
        self.inner.idle(seconds)

    def close(self) -> None:
        self.inner.close()


def test_a_week_from_the_lake_gives_the_weights_the_topic_gives(
    private_stack: StackInfo,
    tmp_path: Path,
    stack_lake: Lake,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = stack_lake
    start, _end = week_span(WEEK)
    sim = Simulation(SimConfig(users=150, items=300, rate=1.0, duration_s=86_400, seed=21,
                               start_ms=start + 3_600_000, speedup=1.0, malformed=0.01),
                     now_ms=0)  # fmt: skip
    sink = Retrying(KafkaSink(private_stack.bootstrap), share=0.03)
    sim.run(sink)
    sink.close()
    assert sink.retried > 0
    flows = [start_flow(n, private_stack, tmp_path / n) for n in ("content", "engagement")]
    try:
        wait_for(lambda: unique(EVENTS, lake.read(EVENTS)).num_rows >= len(sink.valid), 120,
                 "every valid event in the lake")  # fmt: skip
    finally:
        for proc in flows:
            stop(proc)
    late = [e for e in lake.read(EVENTS).to_pylist() if e["arrival"] is None]
    assert not late  # every row has its arrival

    runs = {}
    for source in ("topic", "lake"):
        flags = ["--from-lake"] if source == "lake" else []
        code = cli.main(["weights", "run", "--week", WEEK, "--no-publish", "--json", *flags])
        runs[source] = json.loads(capsys.readouterr().out)
        assert code == 0, runs[source]
    topic, from_lake = runs["topic"], runs["lake"]
    assert topic["users"] > 50 and topic["invalid"] > 0 and topic["duplicates"] > 0
    assert from_lake["invalid"] == 0  # the lake holds valid events only
    for key in ("users", "events", "late", "cohorts"):
        assert from_lake[key] == topic[key], key

    client = connect(private_stack.redis_url, JOB)
    try:
        registry = WeightsRegistry(client, 86_400)
        weights = {s: dict(stored_users(client, runs[s]["version"])) for s in runs}
        assert len(weights["topic"]) == topic["users"]
        assert weights["lake"] == weights["topic"]  # byte for byte, every user
        lists = {s: registry.cohort_lists(runs[s]["version"]) for s in runs}
        assert lists["lake"] == lists["topic"] and lists["topic"]

        # Each run left its training snapshot in the lake: equal outputs, their own inputs.
        shots = {s: read_snapshot(lake, WEEK, runs[s]["version"]) for s in runs}
        assert runs["lake"]["snapshot"].startswith(f"weekly/week={WEEK}/")
        assert shots["lake"]["outputs"] == shots["topic"]["outputs"]
        assert shots["topic"]["outputs"]["weights_digest"] == digest(weights["topic"].items())
        assert (shots["topic"]["inputs"]["source"], shots["lake"]["inputs"]["source"]) == (
            "kafka", "lake",
        )  # fmt: skip
        assert shots["lake"]["versions"]["lake_schema"] >= 2
        assert not any(u in json.dumps(shots["lake"]) for u in weights["lake"])  # no user ids

        # As a two-process Bytewax batch flow, each process keeps its users' events of the
        # lake in their arrival order: the same users, counts and lists.
        code = cli.main(["weights", "run", "--week", WEEK, "--no-publish", "--json",
                         "--from-lake", "--processes", "2"])  # fmt: skip
        clustered = json.loads(capsys.readouterr().out)
        assert code == 0, clustered
        for key in ("users", "events", "late", "duplicates", "cohorts"):
            assert clustered[key] == from_lake[key], key
        assert registry.cohort_lists(clustered["version"]) == lists["lake"]
        spread = dict(stored_users(client, clustered["version"]))
        assert spread.keys() == weights["lake"].keys()
        for user, raw in list(spread.items())[:50]:  # the prior is summed in another order
            ours = decode_weights(raw)
            theirs = decode_weights(weights["lake"][user])
            assert ours.mass == theirs.mass
            assert dict(ours.categories) == pytest.approx(dict(theirs.categories))
    finally:
        client.close()
