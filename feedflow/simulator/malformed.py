"""Bad engagement payloads, of the kinds real clients and proxies send.

Every payload made here is rejected by :func:`operators.contracts.decode_engagement`: broken
JSON (a truncated object), JSON that is not an object, a missing required field, a field of
the wrong type or out of range, an unknown event type, and an oversized (> 64 KiB) message.

Example:
    >>> import random
    >>> from operators.contracts import Rejection, decode_engagement
    >>> good = ('{"event_id":"e1","event_type":"media_liked","user_id":"u1",'
    ...         '"media_id":"m1","ts":1700000000000}')
    >>> bad = Malformer(random.Random(0)).corrupt(good)
    >>> isinstance(decode_engagement(bad.encode()), Rejection)
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import orjson

from operators.contracts import MAX_PAYLOAD_BYTES, POSITION_REQUIRED

KINDS: Final = (
    "broken_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_event_type",
    "oversized",
)
_NOT_OBJECTS: Final = ("null", "[]", '"media_started"', "42", "[{}]", "")
_WRONG_TYPES: Final[tuple[tuple[str, Any], ...]] = (
    ("ts", "yesterday"),
    ("ts", -1),
    ("ts", 1.5e12),
    ("user_id", 12345),
    ("user_id", ""),
    ("event_id", None),
    ("event_id", "x" * 200),
    ("media_id", ["m1"]),
    ("position_s", "ten"),
    ("position_s", -5.0),
    ("content_type", "HOLOGRAM"),
    ("session_id", {"id": 1}),
)
_UNKNOWN_TYPES: Final = ("media_teleported", "page_view", "MEDIA_STARTED", "media_rated", "")
_PADDING: Final = "x" * (MAX_PAYLOAD_BYTES + 512)


class Malformer:
    """Turns valid engagement payloads into rejected ones, cycling through the kinds."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counts = dict.fromkeys(KINDS, 0)
        self._makers: dict[str, Callable[[str], str]] = {
            "broken_json": self._broken_json,
            "not_an_object": lambda _: self.rng.choice(_NOT_OBJECTS),
            "missing_field": self._missing_field,
            "wrong_type": self._wrong_type,
            "unknown_event_type": self._unknown_type,
            "oversized": self._oversized,
        }

    def corrupt(self, payload: str) -> str:
        """A bad payload derived from `payload` (a valid engagement event's JSON text)."""
        kind = KINDS[int(self.rng.random() * len(KINDS))]
        self.counts[kind] += 1
        return self._makers[kind](payload)

    def _broken_json(self, payload: str) -> str:
        # Any strict prefix of a JSON object is invalid JSON: the closing brace is missing.
        return payload[: 1 + int(self.rng.random() * (len(payload) - 2))]

    def _missing_field(self, payload: str) -> str:
        event = orjson.loads(payload)
        required = ["event_id", "event_type", "user_id", "ts"]
        kind = event.get("event_type", "")
        if kind.startswith("media_"):
            required.append("media_id")
        if kind in POSITION_REQUIRED:
            required.append("position_s")
        if kind == "media_seeked":
            required.append("from_position_s")
        if kind == "subscription_to_creator":
            required.append("creator_id")
        event.pop(self.rng.choice(required), None)
        return orjson.dumps(event).decode()

    def _wrong_type(self, payload: str) -> str:
        event = orjson.loads(payload)
        name, value = self.rng.choice(_WRONG_TYPES)
        event[name] = value
        return orjson.dumps(event).decode()

    def _unknown_type(self, payload: str) -> str:
        event = orjson.loads(payload)
        event["event_type"] = self.rng.choice(_UNKNOWN_TYPES)
        return orjson.dumps(event).decode()

    def _oversized(self, payload: str) -> str:
        # Valid JSON and a valid event in every other respect: only the size is wrong.
        return payload[:-1] + ',"debug_trace":"' + _PADDING + '"}'
