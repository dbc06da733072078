"""The dead-letter sink fails loudly instead of dropping what it cannot deliver."""

from __future__ import annotations

import pytest

from flows.sinks import DeadLetterSink, DeliveryError
from operators.contracts import TOPIC_MEDIA, dead_letter


def test_undeliverable_dead_letters_raise():
    # Nothing listens on loopback port 1: every delivery times out.
    sink = DeadLetterSink(
        "127.0.0.1:1",
        add_config={"message.timeout.ms": 300, "log_level": 0},
        flush_timeout_s=5.0,
    )
    part = sink.build("dlq", 0, 1)
    letter = dead_letter(TOPIC_MEDIA, 0, 7, "bad json", b"{", 0)
    with pytest.raises(DeliveryError, match=r"undelivered|failures"):
        part.write_batch([letter])
