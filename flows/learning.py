"""The learning flow: served feeds + engagement → labels → the online ranker → Redis.

Wiring only; the logic is in `operators/labels.py` and `operators/online_ranker.py`:

    kafka(feed.impressions, user.engagement.events, feedflow.erasure)
      └ decode ─┬─ rejected impressions and erasures ─────────────────────→ dead letters
                └─ key(user) ─ labels ─┬─ Dropped (late, duplicate, erased) → counted
                                       ├─ Erased ─ ack ───────────────────→ Redis
                                       └─ LabelledImpression
                        └─ key("ranker") ─ ranker ─ ModelVersion ─────────→ model registry

Labels are per-user keyed state, so they spread over workers; the ranker is one model under
one key (one worker), sized to fit one process. Both are Bytewax state with plain-data
snapshots, so a restart resumes the model where the last epoch left it. An erasure request
drops the user's open impressions and pending labels (:mod:`operators.erasure`); the model
itself holds weights over features, no user id. Malformed
impressions go to the dead-letter topic; malformed engagement events are only counted here,
because the engagement flow, which owns that topic, already dead-letters them.

Run: `feedflow flow learning` (or `python -m bytewax.run "flows.learning:build_flow()"`).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Final, cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from flows.erasure_in import decode_erasure, tombstones_for
from flows.kafka_in import FRONT_STEPS, coordinates, decoded_input, kafka_source
from flows.keyed_logic import ErasableLogic, KeyedLogic
from flows.lake_sink import LakeSink, lake_batches, lake_sink
from flows.model_sink import ModelSink
from flows.redis_sink import ErasureAck, FeatureSink
from flows.sinks import deadletter_sink
from kernel.metrics import (
    EVENT_LAG,
    EVENTS,
    LABELS,
    RANKER_AUC,
    RANKER_EXAMPLES,
    RANKER_LOG_LOSS,
)
from kernel.settings import Settings, load_settings
from operators.ab import MAX_ARMS
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_ERASURE,
    TOPIC_IMPRESSIONS,
    DeadLetter,
    EngagementEvent,
    ErasureRequest,
    Impression,
    dead_letter,
    decode_engagement,
    decode_impression,
)
from operators.emissions import Dropped
from operators.erasure import Erased, Tombstones
from operators.eventtime import Clock, now_ms, utc_now
from operators.labels import LabelJoin, LabelledImpression, label_config
from operators.online_ranker import ModelVersion, OnlineRanker, RankerConfig
from operators.ranking_contract import FEATURES

FLOW_ID: Final = "learning"
INPUT_TOPICS: Final = (TOPIC_IMPRESSIONS, TOPIC_ENGAGEMENT, TOPIC_ERASURE)
STEP_INPUT: Final = "learning_in"
STEP_KNOWN: Final = "known"
STEP_KEY_USER: Final = "key_user"
STEP_LABELS: Final = "labels"
STEP_LABELLED: Final = "labelled"
STEP_ERASED: Final = "erased"
STEP_ACKS_OUT: Final = "erasure_acks_out"
STEP_KEY_RANKER: Final = "key_ranker"
STEP_RANKER: Final = "ranker"
STEP_MODELS: Final = "models"
STEP_MODELS_OUT: Final = "models_out"
STEP_LAKE_BATCHES: Final = "lake_batches"
STEP_LAKE_OUT: Final = "lake_out"
LAKE_STEP_IDS: Final = frozenset({STEP_LAKE_BATCHES, STEP_LAKE_OUT})  # with the lake on
RANKER_KEY: Final = "ranker"
# Recovery data is keyed by these: renaming a stateful step silently loses its state.
STATEFUL_STEPS: Final = frozenset({STEP_LABELS, STEP_RANKER})
STEP_IDS: Final = FRONT_STEPS | {
    STEP_INPUT, STEP_KNOWN, STEP_KEY_USER, STEP_LABELS, STEP_LABELLED, STEP_KEY_RANKER,
    STEP_RANKER, STEP_MODELS, STEP_MODELS_OUT, STEP_ERASED, STEP_ACKS_OUT,
}  # fmt: skip

Joined = Impression | EngagementEvent


def is_known(x: Joined | ErasureRequest | None) -> bool:
    """False for what decoding could not use (None: an impression without items)."""
    return x is not None


def decode(msg: KafkaSourceMessage[Any, Any]) -> Joined | ErasureRequest | DeadLetter | None:
    """An impression, engagement event or erasure request; a dead letter for a bad
    impression or erasure, else None."""
    if msg.topic == TOPIC_ERASURE:
        return decode_erasure(msg)
    raw = msg.value if isinstance(msg.value, bytes) else b""
    now = now_ms()
    if msg.topic == TOPIC_ENGAGEMENT:
        event: Joined | Any = decode_engagement(raw)
    else:
        event = decode_impression(raw)
    if isinstance(event, Impression | EngagementEvent):
        EVENT_LAG.observe(max(now - event.ts, 0) / 1000)
        return event
    topic = msg.topic or TOPIC_IMPRESSIONS
    _events(topic, "invalid").inc()
    if topic == TOPIC_ENGAGEMENT:
        return None
    partition, offset = coordinates(msg)
    return dead_letter(topic, partition, offset, event.reason, raw, now)


def count_input(value: Joined, out: list[Any]) -> None:
    """Count an input `ok` unless the label logic dropped it (then by its outcome)."""
    topic = TOPIC_IMPRESSIONS if isinstance(value, Impression) else TOPIC_ENGAGEMENT
    outcome = next((x.outcome for x in out if isinstance(x, Dropped)), "ok")
    _events(topic, outcome).inc()


def erasure_acks(key_value: tuple[str, Any]) -> list[ErasureAck]:
    """The acknowledgement of an erasure the label step applied."""
    _user, out = key_value
    return [ErasureAck(out.request_id, FLOW_ID)] if isinstance(out, Erased) else []


def labelled(key_value: tuple[str, Any]) -> list[LabelledImpression]:
    """Closed impressions go on (their labels counted); drops were counted on input."""
    _user, out = key_value
    if not isinstance(out, LabelledImpression):
        return []
    arm = _arm_label(out.arm)
    for ex in out.examples:
        _labels("positive" if ex.label else "negative", ex.reason, arm).inc()
    return [out]


_ARMS_SEEN: set[str] = set()
_ARM_LABELS: Final = 2 * MAX_ARMS  # an experiment's arms, the holdback, a previous experiment's


def _arm_label(arm: str) -> str:
    """The arm as a metric label: the first few names seen, then `other` (impressions come
    from the broker: a flood of made-up names must not become series)."""
    if arm in _ARMS_SEEN:
        return arm
    if len(_ARMS_SEEN) < _ARM_LABELS:
        _ARMS_SEEN.add(arm)
        return arm
    return "other"


# Label lookups once per value pair, not per event (as the engagement flow does for `ok`).
@functools.cache
def _events(topic: str, outcome: str) -> Any:
    return EVENTS.labels(topic=topic, outcome=outcome)


@functools.cache
def _labels(label: str, reason: str, arm: str) -> Any:
    return LABELS.labels(label=label, reason=reason, arm=arm)


class RankerReport:
    """Exports the ranker's counters and progressive validation after each impression."""

    def __init__(self, ranker: OnlineRanker) -> None:
        self.ranker = ranker
        self.learned, self.unusable = ranker.examples, ranker.unusable

    def __call__(self, _value: Any, _out: list[Any]) -> None:
        """After each impression: the new counters since the last call."""
        r = self.ranker
        RANKER_EXAMPLES.labels(outcome="learned").inc(r.examples - self.learned)
        RANKER_EXAMPLES.labels(outcome="unusable").inc(r.unusable - self.unusable)
        self.learned, self.unusable = r.examples, r.unusable
        if (loss := r.progress.log_loss) is not None:
            RANKER_LOG_LOSS.set(loss)
        if (auc := r.progress.auc) is not None:
            RANKER_AUC.set(auc)


def ranker_config(s: Settings) -> RankerConfig:
    """The ranker over serving's feature columns, from settings."""
    return RankerConfig(
        features=FEATURES, learning_rate=s.ranker_learning_rate,
        publish_every_ms=s.ranker_publish_every_s * 1000, min_examples=s.ranker_min_examples,
    )  # fmt: skip


def labelled_impressions(
    flow: Dataflow,
    settings: Settings,
    source: Source[Any],
    deadletters: Sink[DeadLetter],
    clock: Clock = utc_now,
    erased: Tombstones | None = None,
    acks: Sink[Any] | None = None,
    lake: LakeSink | None = None,
) -> Stream[LabelledImpression]:
    """Decode the topics, join per user and return the closed, labelled impressions;
    erasures go to `acks` (by default the feature store's Redis), served feeds to the lake.

    Other consumers of labels (a weekly job, an evaluation) can build on this stream.
    """
    decoded = decoded_input(flow, STEP_INPUT, source, TOPIC_IMPRESSIONS, decode, deadletters)
    # Decoding gives None for an impression without items; Bytewax's filter does not narrow.
    known = cast(Stream[Joined], op.filter(STEP_KNOWN, decoded, is_known))
    by_user = op.key_on(STEP_KEY_USER, known, lambda x: x.user_id)
    if lake is not None:
        impressions = lake_batches(STEP_LAKE_BATCHES, known, (Impression,))
        op.output(STEP_LAKE_OUT, impressions, lake)
    config = label_config(settings)
    stones = erased if erased is not None else Tombstones()
    joined = op.stateful(
        STEP_LABELS,
        by_user,
        lambda resume: ErasableLogic(
            LabelJoin(config, resume, clock), count_input, stones,
            resume is not None,
        ),
    )  # fmt: skip
    op.output(
        STEP_ACKS_OUT,
        op.flat_map(STEP_ERASED, joined, erasure_acks),
        acks or FeatureSink(settings.redis_url),
    )
    return op.flat_map(STEP_LABELLED, joined, labelled)


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Any] | None = None,
    deadletters: Sink[DeadLetter] | None = None,
    models: Sink[ModelVersion] | None = None,
    clock: Clock = utc_now,
    acks: Sink[Any] | None = None,
    lake: LakeSink | None = None,
) -> Dataflow:
    """The learning dataflow; tests may swap the source, the sinks and the idle clock (with
    a swapped source, no tombstones are read from the erasure topic, and the lake is off
    unless given)."""
    s = settings or load_settings(os.environ)
    flow = Dataflow(FLOW_ID)
    src = source or kafka_source(s, list(INPUT_TOPICS))
    dlq = deadletters or deadletter_sink(s)
    erased = tombstones_for(s, source)
    if lake is None and source is None:
        lake = lake_sink(s, FLOW_ID, erased)
    closed = labelled_impressions(flow, s, src, dlq, clock, erased, acks, lake)
    keyed = op.key_on(STEP_KEY_RANKER, closed, lambda _: RANKER_KEY)
    config = ranker_config(s)

    def ranker_logic(resume: Any) -> KeyedLogic:
        ranker = OnlineRanker(config, resume)
        return KeyedLogic(ranker, RankerReport(ranker))

    versions = op.stateful(STEP_RANKER, keyed, ranker_logic)
    op.output(STEP_MODELS_OUT, op.key_rm(STEP_MODELS, versions), models or ModelSink(s.redis_url))
    return flow
