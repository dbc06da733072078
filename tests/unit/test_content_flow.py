"""The content flow's wiring, driven through bytewax.testing (no broker, no Redis)."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import KafkaError as ConfluentError

from flows import content
from kernel.settings import Settings
from operators.contracts import TOPIC_MEDIA, MediaPublished, encode
from state.index_writer import Change
from tests.flows.steps import top_level_steps

GOOD = MediaPublished(
    media_id="m1",
    creator_id="c1",
    content_type="VIDEO",
    category="music",
    duration_s=10.0,
    published_at=1_000,
)


def message(value: bytes, offset: int) -> KafkaSourceMessage:
    return KafkaSourceMessage(b"k", value, topic=TOPIC_MEDIA, partition=2, offset=offset)


def run(items):
    letters, index = [], []
    flow = content.build_flow(
        Settings(),
        source=TestingSource(items),
        deadletters=TestingSink(letters),
        index=TestingSink(index),
        tick=None,
    )
    run_main(flow)
    return letters, index


def test_valid_changes_reach_the_index_writer_in_order_and_rejects_dead_letter():
    removed = MediaPublished(media_id="m1", status="removed")
    broken = message(b'{"media_id": "m2"', 11)
    missing = message(b'{"media_id": "m3"}', 12)
    err = KafkaError(ConfluentError(ConfluentError._MSG_TIMED_OUT), message(b"", 13))
    letters, index = run(
        [message(encode(GOOD), 10), broken, missing, err, message(encode(removed), 14)]
    )
    assert [(k, c.event.media_id, c.event.status, c.partition, c.offset) for k, c in index] == [
        ("index", "m1", "published", 2, 10),
        ("index", "m1", "removed", 2, 14),
    ]
    assert all(isinstance(c, Change) for _, c in index)
    by_offset = {d.offset: d for d in letters}
    assert sorted(by_offset) == [11, 12, 13]
    assert by_offset[11].payload() == b'{"media_id": "m2"' and by_offset[11].partition == 2
    assert "requires creator_id" in by_offset[12].reason
    assert by_offset[13].topic == TOPIC_MEDIA


def test_step_ids_are_a_stable_contract():
    # Recovery data is keyed by step ids (the index sink's state under "index_out"):
    # renaming one silently loses state. Read from the built dataflow, ticks included.
    flow = content.build_flow(
        Settings(), source=TestingSource([]), deadletters=TestingSink([]), index=TestingSink([])
    )
    assert flow.flow_id == "content"
    assert (
        top_level_steps(flow)
        == content.STEP_IDS
        == {
            "media_in",
            "split_consumer_errors",
            "decode",
            "route",
            "consumer_errors",
            "deadletters",
            "deadletter_out",
            "tick",
            "index_items",
            "key_index",
            "index_out",
        }
    )
