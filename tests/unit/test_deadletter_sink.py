"""The dead-letter sink fails loudly instead of dropping what it cannot deliver."""

from __future__ import annotations

import hashlib

import pytest

from flows.sinks import DeadLetterSink, DeliveryError
from operators.contracts import (
    DEADLETTER_PAYLOAD_BYTES,
    MAX_REASON_CHARS,
    TOPIC_MEDIA,
    DeadLetter,
    dead_letter,
    decode_deadletter,
    encode,
)


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


def test_a_dead_letter_is_bounded_and_points_at_its_original():
    payload = bytes(range(256)) * 1000  # 256 KB, not UTF-8
    letter = dead_letter(TOPIC_MEDIA, 0, 0, "r" * 5000, payload, 1)
    assert (letter.partition, letter.offset) == (0, 0)  # real coordinates, not -1
    assert letter.size == len(payload) and letter.truncated
    assert letter.payload() == payload[:DEADLETTER_PAYLOAD_BYTES]
    assert letter.digest == hashlib.blake2b(payload, digest_size=16).hexdigest()
    assert len(letter.reason) == MAX_REASON_CHARS
    assert len(encode(letter)) < 2 * DEADLETTER_PAYLOAD_BYTES  # far below a 1 MB broker limit
    smaller = letter.bounded(10)
    assert smaller.payload() == payload[:10] and smaller.digest == letter.digest
    small = dead_letter(TOPIC_MEDIA, 1, 2, "bad json", b"{", 1)
    assert not small.truncated and small.bounded(10) is small and small.payload() == b"{"


def test_dead_letters_written_before_size_and_digest_still_decode():
    old = b'{"topic":"t","partition":0,"offset":3,"reason":"x","payload_b64":"ew==","ts":1}'
    letter = decode_deadletter(old)
    assert isinstance(letter, DeadLetter)
    assert letter.payload() == b"{" and letter.size == -1 and letter.digest == ""
