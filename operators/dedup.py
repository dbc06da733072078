"""Drop duplicate events by id with bounded memory, and stable id hashes.

Python's `hash()` of a string changes with every process, so anything that is snapshotted or
shared with serving uses the stable hashes here: 64-bit BLAKE2b for event ids (collisions
would drop real events) and 32-bit CRC-32 for media and creator ids in bounded "seen" lists
(a collision only hides one item from one user's exclusion list).

Example:
    >>> d = EventDedup(capacity=4, window_s=60)
    >>> d.seen("e1", 1_000), d.seen("e1", 1_000), d.seen("e2", 2_000)
    (False, True, False)
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from array import array
from collections.abc import Iterable
from typing import Final

DedupSnapshot = tuple[bytes, bytes, int]

_HASH_BYTES: Final = 8


def id_hash64(value: str) -> bytes:
    """Stable 8-byte digest of an identifier (BLAKE2b).

    Example:
        >>> id_hash64("e1").hex()
        '1b5d5e51f54f0f04'
    """
    return hashlib.blake2b(value.encode(), digest_size=_HASH_BYTES).digest()


def hashes(values: Iterable[str]) -> bytes:
    """The :func:`id_hash32` of each value, as little-endian uint32 bytes in order.

    Example:
        >>> hashes(["m1", "m1"]) == 2 * struct.pack("<I", id_hash32("m1"))
        True
    """
    found = [zlib.crc32(v.encode()) for v in values]
    return struct.pack(f"<{len(found)}I", *found)


def id_hash32(value: str) -> int:
    """Stable 32-bit hash of an identifier (CRC-32), the one serving must use too.

    Example:
        >>> id_hash32("m1")
        3226732335
    """
    return zlib.crc32(value.encode())


class EventDedup:
    """Ids seen recently under one key, bounded by count and by event-time window.

    Ids are kept as 8-byte digests in arrival order in a `bytearray` (a cheap snapshot, and
    about 12 bytes per id), with the event second of each. An id counts as a duplicate while
    it is among the last `capacity` ids and was seen at most `window_s` before the newest
    event of the key. Older entries are dropped from the front as the key's event time moves
    on, so an idle key holds almost nothing.

    Args:
        capacity: most ids kept (the ring never grows past it).
        window_s: dedup window in event-time seconds.
        resume: a value returned by :meth:`snapshot`, or None for a new key.
    """

    __slots__ = ("_capacity", "_hashes", "_max_s", "_secs", "_window_s")

    def __init__(self, capacity: int, window_s: int, resume: DedupSnapshot | None = None):
        if capacity < 1 or window_s < 0:
            raise ValueError(f"EventDedup: capacity {capacity} and window_s {window_s} invalid")
        self._capacity = capacity
        self._window_s = window_s
        if resume is None:
            self._hashes = bytearray()
            self._secs = array("I")
            self._max_s = 0
        else:
            hashes, secs, self._max_s = resume
            self._hashes = bytearray(hashes)
            self._secs = array("I")
            self._secs.frombytes(secs)

    def __len__(self) -> int:
        return len(self._secs)

    def seen(self, event_id: str, ts_ms: int) -> bool:
        """True if `event_id` is a duplicate; otherwise remember it and return False."""
        digest = id_hash64(event_id)
        sec = ts_ms // 1000
        if sec > self._max_s:
            self._max_s = sec
            self._expire()
        at = self._find(digest)
        if at >= 0 and self._secs[at] + self._window_s >= self._max_s:
            return True
        self._hashes += digest
        self._secs.append(sec)
        if len(self._secs) > self._capacity:
            del self._hashes[:_HASH_BYTES]
            del self._secs[0]
        return False

    def snapshot(self) -> DedupSnapshot:
        """Plain immutable state: (digests, seconds as uint32 bytes, newest second)."""
        return (bytes(self._hashes), self._secs.tobytes(), self._max_s)

    def _find(self, digest: bytes) -> int:
        """Index of the newest entry with this digest, or -1."""
        hashes = self._hashes
        at = hashes.rfind(digest)
        while at > 0 and at % _HASH_BYTES:  # a match straddling two digests
            at = hashes.rfind(digest, 0, at + _HASH_BYTES - 1)
        return at // _HASH_BYTES if at >= 0 and at % _HASH_BYTES == 0 else -1

    def _expire(self) -> None:
        horizon = self._max_s - self._window_s
        secs = self._secs
        drop = 0
        while drop < len(secs) and secs[drop] < horizon:
            drop += 1
        if drop:
            del self._hashes[: drop * _HASH_BYTES]
            del secs[:drop]


class RecentIds:
    """A bounded, ordered set of 32-bit id hashes (consumed items, dislikes, subscriptions).

    Pushing an id moves it to the newest end; past `capacity` the oldest falls off.

    Example:
        >>> r = RecentIds(capacity=2)
        >>> for media in ("m1", "m2", "m1", "m3"):
        ...     r.push(media)
        >>> "m1" in r, "m2" in r, len(r)
        (True, False, 2)
    """

    __slots__ = ("_ids", "capacity")

    def __init__(self, capacity: int, resume: bytes | None = None):
        self.capacity = capacity
        self._ids = array("I")
        if resume:
            self._ids.frombytes(resume)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, value: str) -> bool:
        return id_hash32(value) in self._ids

    def push(self, value: str) -> None:
        """Add `value` as the newest id."""
        h = id_hash32(value)
        ids = self._ids
        if h in ids:
            ids.remove(h)
        ids.append(h)
        if len(ids) > self.capacity:
            del ids[0]

    def discard(self, value: str) -> None:
        """Remove `value` if present."""
        h = id_hash32(value)
        if h in self._ids:
            self._ids.remove(h)

    def newest(self, n: int) -> bytes:
        """Up to `n` hashes, newest first, as little-endian uint32 bytes (for records)."""
        picked = self._ids[::-1][:n]
        return struct.pack(f"<{len(picked)}I", *picked)

    def snapshot(self) -> bytes:
        """Plain immutable state: the hashes, oldest first, in native uint32 bytes."""
        return self._ids.tobytes()
