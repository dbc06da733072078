"""Per-creator features: how many users subscribed (`subscription_to_creator`).

The user logic reports a subscription once per (user, creator) among the user's last 32
creators (:class:`operators.emissions.Feedback`, signal `subscribed`); this keyed state counts
them per creator and emits the creator's full record after each, stamped with the newest
subscription's event time, so a write is idempotent and a replay rewrites the same value.
The count never goes down: the event contract has no unsubscribe.

Example:
    >>> c = CreatorStats()
    >>> [r.subscribers for r in c.on_event(Feedback(user_id="u1", signal="subscribed", ts=5,
    ...                                             creator_id="c1"))]
    [1]
    >>> CreatorStats(c.snapshot()).on_event(
    ...     Feedback(user_id="u2", signal="subscribed", ts=9, creator_id="c1"))[0].subscribers
    2
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from operators.emissions import Feedback
from operators.keyed import KeyedState

_VERSION: Final = 1


class CreatorRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A creator's features as stored; `ts` is the newest subscription's event time."""

    creator_id: str
    ts: int
    subscribers: int


class CreatorStats(KeyedState[Feedback, CreatorRecord]):
    """One creator's subscriber count."""

    def __init__(self, resume: Any = None) -> None:
        snap = resume or (_VERSION, "", -1, 0)
        if snap[0] != _VERSION:
            raise ValueError(f"CreatorStats: snapshot version {snap[0]} is not supported")
        self.creator_id: str = snap[1]
        self._ts: int = snap[2]
        self._subscribers: int = snap[3]

    def on_event(self, value: Feedback) -> list[CreatorRecord]:
        """Count one new subscription; the creator's record."""
        if value.signal != "subscribed" or value.creator_id is None:
            return []
        self.creator_id = value.creator_id
        self._subscribers += 1
        self._ts = max(self._ts, value.ts)
        return [self.record()]

    def record(self) -> CreatorRecord:
        """The creator's full record."""
        return CreatorRecord(creator_id=self.creator_id, ts=self._ts, subscribers=self._subscribers)

    def snapshot(self) -> tuple[Any, ...]:
        """Plain state: version, creator, newest ts, count."""
        return _VERSION, self.creator_id, self._ts, self._subscribers


def is_subscription(value: Any) -> bool:
    """True for a user's first subscription to a creator (the creator step's input)."""
    return isinstance(value, Feedback) and value.signal == "subscribed" and not value.media_id


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CreatorRecord)


def encode_creator(record: CreatorRecord) -> bytes:
    """The stored form (msgpack array)."""
    return _encoder.encode(record)


def decode_creator(raw: bytes) -> CreatorRecord:
    """A stored creator record."""
    return _decoder.decode(raw)
