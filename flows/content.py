"""The content flow: `media.published` → the item store, the vector index and its update log.

Wiring only. Payloads are decoded by `operators.contracts.decode_media`; rejections and the
Kafka consumer's own errors go to the dead-letter topic; accepted changes are keyed to the
one partition of :class:`flows.index_sink.IndexSink`, the single index writer.

Run: `python -m bytewax.run "flows.content:build_flow()"` (or `feedflow flow content`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Final

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from flows.index_sink import PARTITION, IndexItem, IndexSink
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
from flows.sinks import deadletter_sink
from flows.sources import Ticker
from kernel.metrics import EVENTS
from kernel.settings import Settings, load_settings
from operators.contracts import TOPIC_MEDIA, DeadLetter, MediaPublished, dead_letter, decode_media
from operators.eventtime import now_ms
from state.index_writer import Change

FLOW_ID: Final = "content"
INPUT_TOPICS: Final = (TOPIC_MEDIA,)
STEP_INPUT: Final = "media_in"
STEP_TICK: Final = "tick"
STEP_INDEX_ITEMS: Final = "index_items"
STEP_KEY: Final = "key_index"
STEP_INDEX_OUT: Final = "index_out"
STEP_IDS: Final = frozenset(
    {
        STEP_INPUT,
        STEP_SPLIT,
        STEP_DECODE,
        STEP_ROUTE,
        STEP_CONSUMER_ERRORS,
        STEP_DEADLETTERS,
        STEP_DEADLETTER_OUT,
        STEP_TICK,
        STEP_INDEX_ITEMS,
        STEP_KEY,
        STEP_INDEX_OUT,
    }
)
TICK_INTERVAL: Final = timedelta(milliseconds=500)


def decode(msg: KafkaSourceMessage[Any, Any]) -> Change | DeadLetter:
    """A catalogue change, or the dead letter of a payload that failed validation."""
    raw = msg.value if isinstance(msg.value, bytes) else b""
    partition, offset = coordinates(msg)
    event = decode_media(raw)
    if isinstance(event, MediaPublished):
        return Change(event, raw, partition, offset)
    EVENTS.labels(topic=TOPIC_MEDIA, outcome="invalid").inc()
    return dead_letter(TOPIC_MEDIA, partition, offset, event.reason, raw, now_ms())


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Any] | None = None,
    deadletters: Sink[DeadLetter] | None = None,
    index: Sink[tuple[str, IndexItem]] | None = None,
    tick: timedelta | None = TICK_INTERVAL,
) -> Dataflow:
    """The content dataflow; tests may swap the source, the sinks, and turn ticks off."""
    settings = settings or load_settings(os.environ)
    flow = Dataflow(FLOW_ID)
    dlq = deadletters or deadletter_sink(settings)
    src = source or kafka_source(settings, list(INPUT_TOPICS))
    items: Stream[IndexItem] = decoded_input(flow, STEP_INPUT, src, TOPIC_MEDIA, decode, dlq)
    if tick is not None:
        items = op.merge(STEP_INDEX_ITEMS, items, op.input(STEP_TICK, flow, Ticker(tick)))
    keyed = op.key_on(STEP_KEY, items, lambda _item: PARTITION)
    op.output(STEP_INDEX_OUT, keyed, index or IndexSink(settings))
    return flow
