"""The learning flow end to end through `bytewax.testing`, on simulated feeds with planted tastes.

Impressions carry the feature rows serving's own feature code computed (the simulator ranks
candidates with `serving.ranking.feature_matrix` and the default weights); users engage with
planted affinities and a position bias. The flow labels, trains and publishes; the last
version must rank held-out feeds better than the default weights did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import bytewax.operators as op
import numpy as np
import pyarrow.compute as pc
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from feedflow.simulator.feeds import FeedWorld, Message, feed_traffic
from flows import learning
from flows.lake_sink import LakeSink
from kernel.settings import Settings
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_IMPRESSIONS,
    EngagementEvent,
    Impression,
    decode_engagement,
    decode_impression,
)
from operators.item_info import no_items
from operators.labels import LabelJoin, LabelledImpression, label_config
from operators.online_ranker import ModelVersion, roc_auc
from operators.point_in_time import training_rows
from operators.ranking_contract import FEATURES, RankerModel, default_model, parse_model
from state.lake import Lake
from state.lake_schema import EVENTS, IMPRESSIONS
from state.model_registry import MemoryModelRegistry, document
from tests.flows.steps import stateful_steps, top_level_steps

T0 = 1_600_000_000_000  # historical on purpose: nothing may depend on the wall clock
DAY_MS = 86_400_000
SETTINGS = Settings(
    kafka_bootstrap_servers="unused",
    redis_url="unused",
    ranker_min_examples=1_000,
    ranker_publish_every_s=1_800,
)
MALFORMED = [
    (TOPIC_IMPRESSIONS, b"{not json"),
    (TOPIC_IMPRESSIONS, b'{"request_id": "r", "user_id": "u", "ts": -5}'),
    (TOPIC_IMPRESSIONS, b'{"request_id":"r","user_id":"u","ts":1,"arm":"a","model_version":'
     b'"v","index_version":"i","items":[{"media_id":"m","position":-1,"score":0,"source":"s"}]}'),
    (TOPIC_ENGAGEMENT, b'{"event_id": "e"}'),
]  # fmt: skip


def as_inputs(messages: list[Message], malformed: Sequence[tuple[str, bytes]] = ()) -> list[Any]:
    inputs: list[Any] = [
        KafkaSourceMessage(key.encode(), value.encode(), topic=topic, partition=0, offset=n)
        for n, (topic, key, _ts, value) in enumerate(messages)
    ]
    for n, (topic, raw) in enumerate(malformed):
        at = (n + 1) * len(inputs) // (len(malformed) + 1)
        inputs.insert(at, KafkaSourceMessage(b"u", raw, topic=topic, partition=1, offset=n))
    return inputs


def run_flow(
    inputs: list[Any],
    batch_size: int = 500,
    recovery: RecoveryConfig | None = None,
    versions: list[ModelVersion] | None = None,
) -> tuple[list[ModelVersion], list[Any]]:
    versions = [] if versions is None else versions
    letters: list[Any] = []
    flow = learning.build_flow(
        SETTINGS,
        source=TestingSource(inputs, batch_size=batch_size),
        deadletters=TestingSink(letters),
        models=TestingSink(versions),
        acks=TestingSink([]),
    )
    run_main(flow, epoch_interval=timedelta(0) if recovery else None, recovery_config=recovery)
    return versions, letters


def label_offline(messages: list[Message]) -> list[LabelledImpression]:
    """The held-out labels, by the same join the flow runs (one state per user)."""
    joins: dict[str, LabelJoin] = {}
    config = label_config(SETTINGS)
    out: list[Any] = []
    for topic, key, _ts, value in messages:
        decode = decode_impression if topic == TOPIC_IMPRESSIONS else decode_engagement
        join = joins.setdefault(key, LabelJoin(config))
        out += join.on_event(decode(value.encode()))
    for join in joins.values():
        out += join.flush()
    return [x for x in out if isinstance(x, LabelledImpression)]


def auc_of(model: RankerModel, held_out: list[LabelledImpression]) -> float:
    rows = [e for li in held_out for e in li.examples]
    matrix = np.asarray([e.features for e in rows], dtype=np.float32)
    auc = roc_auc(model.score(matrix), [e.label for e in rows])
    assert auc is not None
    return auc


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    world = FeedWorld(users=150, items=600, seed=7)
    common = {"feed_size": 10, "candidates": 40, "world": world}
    train = feed_traffic(feeds_per_user=12, seed=1, start_ms=T0, **common)
    # Held-out feeds come later and in random order (an exploration bucket), so that the
    # order the default weights chose cannot lend them the position bias.
    held = feed_traffic(feeds_per_user=4, seed=2, start_ms=T0 + 7 * DAY_MS, order="random",
                        **common)  # fmt: skip
    versions, letters = run_flow(as_inputs(train, MALFORMED))
    return {"train": train, "held": label_offline(held), "versions": versions,
            "letters": letters}  # fmt: skip


def test_the_online_ranker_beats_the_default_weights_on_held_out_feeds(trained) -> None:
    last = trained["versions"][-1]
    learned = parse_model(document(last))
    held = trained["held"]
    default_auc, learned_auc = auc_of(default_model(), held), auc_of(learned, held)
    # Measured: 0.768 against 0.746 (the batch optimum of this model on these labels: 0.768).
    assert learned_auc > default_auc + 0.01, (learned_auc, default_auc)
    labels = Counter(e.label for li in held for e in li.examples)
    assert labels[True] > 200 and labels[False] > 200


def test_versions_are_published_on_the_event_time_cadence_and_parse(trained) -> None:
    versions = trained["versions"]
    assert len(versions) >= 3
    assert [v.seq for v in versions] == list(range(1, len(versions) + 1))
    assert all(b.ts - a.ts >= 1_800_000 for a, b in pairwise(versions[:-1]))
    registry = MemoryModelRegistry()
    for v in versions:
        registry.publish(v)
        model = parse_model(registry.get(v.version) or b"")
        assert model.version == v.version and set(v.weights) == set(FEATURES)
    assert registry.active() == versions[-1].version


def test_malformed_impressions_go_to_dead_letters_and_the_flow_keeps_going(trained) -> None:
    letters = trained["letters"]
    # Three bad impressions; the bad engagement event is the engagement flow's to dead-letter.
    assert [(x.topic, x.partition) for x in letters] == [(TOPIC_IMPRESSIONS, 1)] * 3
    assert all(x.reason for x in letters)
    assert trained["versions"][-1].examples > 10_000


def test_a_replayed_input_retrains_to_the_same_versions() -> None:
    world = FeedWorld(users=20, items=200, seed=3)
    msgs = feed_traffic(world, feeds_per_user=6, feed_size=10, candidates=30, seed=4, start_ms=T0)
    once, _ = run_flow(as_inputs(msgs))
    again, _ = run_flow(as_inputs(msgs))
    assert once and once == again


def test_a_crash_mid_stream_resumes_to_the_model_of_a_clean_run(tmp_path: Path) -> None:
    world = FeedWorld(users=30, items=200, seed=3)
    msgs = feed_traffic(world, feeds_per_user=8, feed_size=10, candidates=30, seed=5, start_ms=T0)
    clean, _ = run_flow(as_inputs(msgs), batch_size=50)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    inputs = as_inputs(msgs)
    # Late enough for a version to be out (labels trail their impressions by 40 min), and on
    # a batch boundary: SGD depends on the order of examples, and a resume mid-batch re-cuts
    # the batches (the state is still exact; the last float digits would not be).
    inputs.insert(len(inputs) * 6 // 7 // 50 * 50, TestingSource.ABORT())
    versions: list[ModelVersion] = []
    run_flow(inputs, batch_size=50, recovery=recovery, versions=versions)
    crashed = len(versions)
    run_flow(inputs, batch_size=50, recovery=recovery, versions=versions)
    assert 0 < crashed < len(versions)
    # Labels and the model came back from their snapshots: the same final version.
    assert versions[-1] == clean[-1]


def test_step_ids_are_frozen() -> None:
    # Recovery state is keyed by step id: a rename silently loses it. Change this list only
    # together with a migration note. Read from the built dataflow, not from the constants.
    sink: TestingSink[Any] = TestingSink([])
    flow = learning.build_flow(
        Settings(), source=TestingSource([]), deadletters=sink, models=sink, acks=sink
    )
    assert flow.flow_id == "learning"
    assert stateful_steps(flow) == {"labels", "ranker"}
    assert top_level_steps(flow) == learning.STEP_IDS
    lake = LakeSink("learning", 2, Lake("unused"))
    with_lake = learning.build_flow(
        Settings(), source=TestingSource([]), deadletters=sink, models=sink, acks=sink, lake=lake
    )
    assert top_level_steps(with_lake) == learning.STEP_IDS | learning.LAKE_STEP_IDS


def test_served_feeds_reach_the_lake_one_row_per_item(tmp_path: Path) -> None:
    world = FeedWorld(users=10, items=100, seed=3)
    msgs = feed_traffic(world, feeds_per_user=3, feed_size=10, candidates=30, seed=4, start_ms=T0)
    lake = Lake(str(tmp_path / "lake"))
    flow = learning.build_flow(
        SETTINGS,
        source=TestingSource(as_inputs(msgs), batch_size=100),
        deadletters=TestingSink([]),
        models=TestingSink([]),
        acks=TestingSink([]),
        lake=LakeSink("learning", 2, lake),
    )
    run_main(flow)
    feeds = [decode_impression(v.encode()) for t, _, _, v in msgs if t == TOPIC_IMPRESSIONS]
    served = [f for f in feeds if isinstance(f, Impression)]
    rows = lake.read(IMPRESSIONS)
    assert sorted(zip(rows.column("request_id").to_pylist(), rows.column("position").to_pylist(),
                      strict=True)) == sorted(
        (f.request_id, item.position) for f in served for item in f.items
    )  # fmt: skip
    assert lake.read(EVENTS).num_rows == 0  # the engagement flow's to write
    first = served[0]
    mine = rows.filter(pc.equal(rows.column("request_id"), first.request_id))
    assert mine.column("features").to_pylist()[0] == pytest.approx(first.items[0].features)


def test_the_online_ranker_learns_to_trust_co_engagement(trained) -> None:
    # Feeds carry serving's co-engagement candidates and collaborative feature for each
    # user's recent items; people play what they like, and those who watched what the user
    # watched liked the same things: the weight must come out positive.
    feeds = [v for topic, _, _, v in trained["train"] if topic == TOPIC_IMPRESSIONS]
    share = sum('"co_engagement"' in v for v in feeds) / len(feeds)
    assert share > 0.5, f"only {share:.0%} of feeds had co-engaged candidates"
    last = parse_model(document(trained["versions"][-1]))
    assert last.vector[FEATURES.index("collaborative")] > 0.0  # measured: 0.11


def test_exported_training_rows_equal_what_the_online_ranker_learned_from() -> None:
    world = FeedWorld(users=15, items=150, seed=3)
    msgs = feed_traffic(world, feeds_per_user=5, feed_size=10, candidates=30, seed=6, start_ms=T0)
    closed: list[LabelledImpression] = []
    flow = Dataflow("labels-only")
    stream = learning.labelled_impressions(
        flow, SETTINGS, TestingSource(as_inputs(msgs), batch_size=100), TestingSink([]),
        acks=TestingSink([]),
    )  # fmt: skip
    op.output("out", stream, TestingSink(closed))
    run_main(flow)
    decoded = [
        (decode_impression if t == TOPIC_IMPRESSIONS else decode_engagement)(v.encode())
        for t, _, _, v in msgs
    ]
    events = [x for x in decoded if isinstance(x, EngagementEvent)]
    feeds = [x for x in decoded if isinstance(x, Impression)]
    rows = training_rows(SETTINGS, no_items, events, feeds)
    exported = {(r["request_id"], r["media_id"], r["position"]): r for r in rows}
    online = [(imp, e) for imp in closed for e in imp.examples]
    assert len(online) == len(rows) > 500
    for imp, e in online:
        r = exported[imp.request_id, e.media_id, e.position]
        assert (r["label"], r["label_reason"]) == (e.label, e.reason)
        assert r["features"] == pytest.approx(list(e.features))
    assert {r["label"] for r in rows} == {True, False}
