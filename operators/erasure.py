"""Forgetting a user: the tombstones a flow keeps, and what a keyed step does with them.

An erasure request (`feedflow.erasure`, :class:`~operators.contracts.ErasureRequest`) reaches
each flow's per-user step under the user's key. The step drops the user's state (Bytewax
discards the key), answers :class:`Erased` — the flow then deletes the user's stored
features and acknowledges the request — and notes a tombstone: from then on, any event of
that user stamped at or before the request's `ts` is :class:`~operators.emissions.Dropped`
with outcome `erased` instead of applied, so a replay, a rebuild from the topic's start or a
late straggler never brings the user back. Events stamped after it (the user came back and
agreed anew) are a new history.

Tombstones name users by a 64-bit digest, not by id, and live in memory only: a flow seeds
them at start from the erasure topic (:func:`flows.erasure_in.read_erasures`), so they are
complete before the first event is read, whatever the interleaving of the topics, and they
survive no longer than the topic keeps its requests.

Example:
    >>> from operators.contracts import ErasureRequest
    >>> stones = Tombstones()
    >>> stones.erase(ErasureRequest(user_id="u1", ts=100, request_id="r1")).request_id
    'r1'
    >>> stones.covers("u1", 100), stones.covers("u1", 101), stones.covers("u2", 0)
    (True, False, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from operators.contracts import EngagementEvent, ErasureRequest, Impression
from operators.dedup import id_hash64
from operators.emissions import Dropped, dropped

ERASED: Final = "erased"


class Erased(msgspec.Struct, frozen=True, kw_only=True):
    """A user's state was dropped for `request_id`; stored features must go too — unless
    `kept`: the request was met again (a replay, a rebuild) and the state holds only what
    the user did after it, which stays."""

    user_id: str
    request_id: str
    ts: int
    kept: bool = False


class Tombstones:
    """Erased users (by digest) and the event time each was erased at, for one process.

    Args:
        requests: requests already on the topic (read at start), in any order.
    """

    def __init__(self, requests: Iterable[ErasureRequest] = ()) -> None:
        self._at: dict[bytes, int] = {}
        for request in requests:
            self.erase(request)

    def erase(self, request: ErasureRequest, kept: bool = False) -> Erased:
        """Note a request (the latest `ts` per user wins) and say what to do next."""
        digest = id_hash64(request.user_id)
        self._at[digest] = max(self._at.get(digest, -1), request.ts)
        return Erased(
            user_id=request.user_id, request_id=request.request_id, ts=request.ts, kept=kept
        )

    def covers(self, user_id: str, ts: int) -> bool:
        """True when an event of `user_id` stamped `ts` belongs to an erased history."""
        if not self._at:
            return False
        return ts <= self._at.get(id_hash64(user_id), -1)

    def __len__(self) -> int:
        return len(self._at)


def erased_drop(value: EngagementEvent | Impression, now_ms: int) -> Dropped:
    """The drop of an event that belongs to an erased history (no payload kept)."""
    return dropped(value, ERASED, "the user was erased", max(now_ms - value.ts, 0))
