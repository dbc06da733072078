"""Erasure requests in a flow: decoding them off the topic, and the tombstones at start.

A flow that keeps per-user state reads `feedflow.erasure` beside its own topics and routes
each request to its per-user step (:mod:`operators.erasure`). Before it starts, it reads
the erasure topic to its end once, so every user erased so far is tombstoned before the
first event arrives, whatever order the topics are read in later (a rebuild from the
start, a replay after a crash).
"""

from __future__ import annotations

import logging
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage

from flows.kafka_in import coordinates
from flows.topic_reader import read_topic
from kernel.metrics import EVENTS
from kernel.settings import Settings
from operators.contracts import TOPIC_ERASURE, DeadLetter, ErasureRequest, dead_letter
from operators.contracts import decode_erasure as decode_payload
from operators.erasure import Tombstones
from operators.eventtime import now_ms

log = logging.getLogger(__name__)


def decode_erasure(msg: KafkaSourceMessage[Any, Any]) -> ErasureRequest | DeadLetter:
    """An erasure request, or the counted dead letter of a malformed one."""
    raw = msg.value if isinstance(msg.value, bytes) else b""
    request = decode_payload(raw)
    if isinstance(request, ErasureRequest):
        EVENTS.labels(topic=TOPIC_ERASURE, outcome="ok").inc()
        return request
    EVENTS.labels(topic=TOPIC_ERASURE, outcome="invalid").inc()
    now = now_ms()
    return dead_letter(TOPIC_ERASURE, *coordinates(msg), request.reason, raw, now)


def read_erasures(settings: Settings) -> list[ErasureRequest]:
    """Every valid request on the erasure topic now (malformed ones are skipped here: the
    flow dead-letters them when it reads the topic).

    Raises:
        TopicReadError: the topic is missing or the broker does not answer; a flow that
            could not honour erasures must not start.
    """
    found = []
    for raw in read_topic(
        settings.kafka_bootstrap_servers, TOPIC_ERASURE, client=settings.kafka_client
    ):
        request = decode_payload(raw)
        if isinstance(request, ErasureRequest):
            found.append(request)
    return found


def tombstones_for(settings: Settings, source: object | None) -> Tombstones:
    """A flow's tombstones: from the erasure topic, or none when a test swapped the source."""
    return Tombstones() if source is not None else tombstones(settings)


def tombstones(settings: Settings) -> Tombstones:
    """This process's tombstones, seeded from the erasure topic."""
    stones = Tombstones(read_erasures(settings))
    log.info("%d erased users tombstoned from %s", len(stones), TOPIC_ERASURE)
    return stones
