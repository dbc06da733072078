"""Event contracts: decoders never raise, enforce the limits, and valid events round-trip."""

from __future__ import annotations

import json
from typing import Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.contracts import (
    EVENT_TYPES,
    MAX_EPOCH_MS,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    POSITION_REQUIRED,
    DeadLetter,
    EngagementEvent,
    Impression,
    ImpressionItem,
    MediaPublished,
    Rejection,
    dead_letter,
    decode_deadletter,
    decode_engagement,
    decode_erasure,
    decode_impression,
    decode_media,
    encode,
)

DECODERS = [decode_engagement, decode_media, decode_impression, decode_deadletter, decode_erasure]
ids = st.text(min_size=1, max_size=MAX_ID_CHARS)
positions = st.floats(min_value=0, max_value=1e6, allow_nan=False)
ms = st.integers(min_value=0, max_value=MAX_EPOCH_MS)


@st.composite
def engagement_events(draw: st.DrawFn) -> EngagementEvent:
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    needs_pos = kind in POSITION_REQUIRED
    return EngagementEvent(
        event_id=draw(ids),
        event_type=kind,
        user_id=draw(ids),
        ts=draw(ms),
        media_id=draw(ids) if kind.startswith("media_") else draw(st.none() | ids),
        creator_id=draw(ids) if kind == "subscription_to_creator" else None,
        position_s=draw(positions) if needs_pos else draw(st.none() | positions),
        from_position_s=draw(positions) if kind == "media_seeked" else None,
        session_id=draw(st.none() | ids),
        content_type=draw(st.none() | st.sampled_from(["VIDEO", "AUDIO"])),
    )


@st.composite
def media_events(draw: st.DrawFn) -> MediaPublished:
    if draw(st.booleans()) and draw(st.booleans()):
        return MediaPublished(media_id=draw(ids), status="removed")
    status: Literal["published", "updated"] = draw(st.sampled_from(["published", "updated"]))
    dim = draw(st.integers(0, 16))
    emb = [draw(st.floats(-1, 1)) for _ in range(dim)] if dim else None
    return MediaPublished(
        media_id=draw(ids),
        status=status,
        creator_id=draw(ids),
        content_type=draw(st.sampled_from(["VIDEO", "AUDIO"])),
        title=draw(st.text(max_size=80)),
        category=draw(ids),
        tags=draw(st.lists(ids, max_size=5)),
        language=draw(st.none() | ids),
        duration_s=draw(st.floats(min_value=0.5, max_value=1e5)),
        published_at=draw(ms),
        embedding=emb,
        embedding_model="m1" if emb else None,
    )


@pytest.mark.parametrize("decoder", DECODERS)
@given(payload=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(decoder, payload: bytes) -> None:
    result = decoder(payload)
    assert isinstance(result, Rejection) or result is not None


@given(payload=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
))  # fmt: skip
def test_arbitrary_json_never_raises(payload: object) -> None:
    raw = json.dumps(payload).encode()
    for decoder in DECODERS:
        decoder(raw)


@given(engagement_events())
def test_valid_engagement_round_trips(event: EngagementEvent) -> None:
    assert decode_engagement(encode(event)) == event


@given(media_events())
def test_valid_media_round_trips(item: MediaPublished) -> None:
    assert decode_media(encode(item)) == item


@given(st.lists(st.builds(ImpressionItem, media_id=ids, position=st.integers(0, 500),
                          score=st.floats(-1e6, 1e6), source=ids), max_size=30))  # fmt: skip
def test_valid_impression_round_trips(items: list[ImpressionItem]) -> None:
    imp = Impression(
        request_id="r", user_id="u", ts=1, arm="control", model_version="v1",
        index_version="hashing-v1", items=items,
    )  # fmt: skip
    assert decode_impression(encode(imp)) == imp


def _event(**overrides: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e1",
        "event_type": "media_progress",
        "user_id": "u1",
        "media_id": "m1",
        "ts": 1_700_000_000_000,
        "position_s": 10.0,
    }
    base.update(overrides)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("overrides", "reason_part"),
    [
        ({"event_type": "media_teleported"}, "unknown event_type"),
        ({"media_id": None}, "requires media_id"),
        ({"position_s": None}, "requires position_s"),
        ({"position_s": -1.0}, "position_s"),
        ({"user_id": "u" * (MAX_ID_CHARS + 1)}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": True}, "ts"),
        ({"ts": MAX_EPOCH_MS + 1}, "ts"),  # past 2100: refused, not a crash of the flow
        ({"content_type": "HOLOGRAM"}, "content_type"),
        ({"event_type": "media_seeked"}, "from_position_s"),
        ({"event_type": "subscription_to_creator"}, "creator_id"),
    ],
)
def test_engagement_limits_are_enforced_with_a_reason(overrides, reason_part: str) -> None:
    result = decode_engagement(_event(**overrides))
    assert isinstance(result, Rejection)
    assert reason_part in result.reason


def test_unknown_fields_are_ignored_and_feedback_needs_no_position() -> None:
    ok = decode_engagement(_event(event_type="media_liked", position_s=None, extra={"x": 1}))
    assert isinstance(ok, EngagementEvent)
    assert ok.event_type == "media_liked"


def test_oversized_payload_is_rejected_before_parsing() -> None:
    big = _event(device="d" * 10, session_id="s") + b" " * MAX_PAYLOAD_BYTES
    result = decode_engagement(big)
    assert isinstance(result, Rejection)
    assert "exceeds" in result.reason


def test_media_requires_fields_unless_removed() -> None:
    missing = decode_media(b'{"media_id":"m1"}')
    assert isinstance(missing, Rejection)
    assert "creator_id" in missing.reason and "duration_s" in missing.reason
    removed = decode_media(b'{"media_id":"m1","status":"removed"}')
    assert isinstance(removed, MediaPublished)
    assert removed.status == "removed"
    zero = decode_media(
        b'{"media_id":"m","creator_id":"c","content_type":"AUDIO","category":"x",'
        b'"duration_s":0,"published_at":1}'
    )
    assert isinstance(zero, Rejection)


@settings(max_examples=50)
@given(payload=st.binary(max_size=256), offset=st.integers(0, 2**40))
def test_dead_letter_keeps_the_original_bytes(payload: bytes, offset: int) -> None:
    record = dead_letter("user.engagement.events", 3, offset, "why", payload, 5)
    back = decode_deadletter(encode(record))
    assert isinstance(back, DeadLetter)
    assert back.payload() == payload
    assert (back.partition, back.offset, back.reason) == (3, offset, "why")
