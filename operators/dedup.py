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
from collections.abc import Iterable, Iterator
from typing import Final

DedupSnapshot = tuple[bytes, bytes, int, int] | tuple[bytes, bytes, int]

_HASH_BYTES: Final = 8
_DIGEST_BYTES: Final = 6  # of an event id in EventDedup (see its doc)


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

    Ids are kept in arrival order as 6-byte digests in a `bytearray`, with the event second
    of each as an offset from a base second (2 bytes when the window fits in 65,535 s, as
    the default hour does, else 4): 8 bytes an id, snapshotted as they lie. An id counts as
    a duplicate while it is among the last `capacity` ids and was seen at most `window_s`
    before the newest event of the key; an event already older than that is never stored
    (nothing could match it). Older entries are dropped from the front as the key's event
    time moves on, so an idle key holds almost nothing.

    Six bytes are 48 bits: with 128 ids kept, a new id matches one of them by chance once in
    2**48 / 128 ≈ 2·10**12 events, so a platform of 50M events a day loses one event to a
    false duplicate in about 60,000 years.

    Args:
        capacity: most ids kept (the ring never grows past it).
        window_s: dedup window in event-time seconds.
        resume: a value returned by :meth:`snapshot` (or the 3-tuple of 8-byte digests and
            absolute uint32 seconds that releases before it wrote), or None for a new key.
    """

    __slots__ = ("_base_s", "_capacity", "_hashes", "_limit", "_max_s", "_secs", "_window_s")

    def __init__(self, capacity: int, window_s: int, resume: DedupSnapshot | None = None):
        if capacity < 1 or window_s < 0:
            raise ValueError(f"EventDedup: capacity {capacity} and window_s {window_s} invalid")
        self._capacity = capacity
        self._window_s = window_s
        code = "H" if window_s <= 0xFFFF else "I"
        self._limit = (1 << (8 * array(code).itemsize)) - 1
        self._secs = array(code)
        self._hashes = bytearray()
        self._base_s = self._max_s = 0
        if resume is None:
            return
        if len(resume) == 3:  # 8-byte digests, absolute uint32 seconds
            old, secs, self._max_s = resume
            absolute = array("I")
            absolute.frombytes(secs)
            digests = [old[i : i + 8][:_DIGEST_BYTES] for i in range(0, len(old), 8)]
            self._rebuild(list(zip(digests, absolute, strict=True)))
        else:
            hashes, secs, self._base_s, self._max_s = resume
            self._hashes = bytearray(hashes)
            self._secs.frombytes(secs)

    def __len__(self) -> int:
        return len(self._secs)

    def seen(self, event_id: str, ts_ms: int) -> bool:
        """True if `event_id` is a duplicate; otherwise remember it and return False."""
        digest = id_hash64(event_id)[:_DIGEST_BYTES]
        sec = ts_ms // 1000
        if sec > self._max_s:
            self._max_s = sec
            self._expire()
        horizon = self._max_s - self._window_s
        at = self._find(digest)
        if at >= 0 and self._secs[at] + self._base_s >= horizon:
            return True
        if sec < horizon:
            return False
        offset = sec - self._base_s
        if not 0 <= offset <= self._limit:
            self._rebuild(list(self._entries()))
            offset = sec - self._base_s
        self._hashes += digest
        self._secs.append(offset)
        if len(self._secs) > self._capacity:
            del self._hashes[:_DIGEST_BYTES]
            del self._secs[0]
        return False

    def snapshot(self) -> DedupSnapshot:
        """Plain immutable state: (digests, second offsets as bytes, base second, newest
        second)."""
        return (bytes(self._hashes), self._secs.tobytes(), self._base_s, self._max_s)

    def _entries(self) -> Iterator[tuple[bytes, int]]:
        """(digest, absolute second) of every entry, oldest first."""
        hashes, base = self._hashes, self._base_s
        for i, offset in enumerate(self._secs):
            yield bytes(hashes[i * _DIGEST_BYTES : (i + 1) * _DIGEST_BYTES]), base + offset

    def _rebuild(self, entries: list[tuple[bytes, int]]) -> None:
        """Keep the entries still inside the window, as offsets from its start."""
        self._base_s = max(self._max_s - self._window_s, 0)
        kept = [(d, s) for d, s in entries if s >= self._base_s][-self._capacity :]
        self._hashes = bytearray(b"".join(d for d, _ in kept))
        self._secs = array(self._secs.typecode, [s - self._base_s for _, s in kept])

    def _find(self, digest: bytes) -> int:
        """Index of the newest entry with this digest, or -1."""
        hashes = self._hashes
        at = hashes.rfind(digest)
        while at > 0 and at % _DIGEST_BYTES:  # a match straddling two digests
            at = hashes.rfind(digest, 0, at + _DIGEST_BYTES - 1)
        return at // _DIGEST_BYTES if at >= 0 and at % _DIGEST_BYTES == 0 else -1

    def _expire(self) -> None:
        horizon = self._max_s - self._window_s - self._base_s
        secs = self._secs
        drop = 0
        while drop < len(secs) and secs[drop] < horizon:
            drop += 1
        if drop:
            del self._hashes[: drop * _DIGEST_BYTES]
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
