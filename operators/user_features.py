"""The per-user feature record written to the feature store, and its packed form.

One record is the full value of a user's features (never an increment), so a write is
idempotent; `ts` is the user's event time when it was built, for the store to refuse a write
older than what it holds. The packed form is msgpack with positional fields (no field names
on the wire), an int8 user vector and 32-bit id hashes for the long lists, to stay well
under the budget of 500 bytes per user in Redis.

Example:
    >>> f = UserFeatures(ts=1, engagements=2, vector=vector_bytes([3.0, 4.0]))
    >>> g = decode_user_features(encode_user_features(f))
    >>> g == f, g.cold_start, [round(x, 2) for x in vector_of(g).tolist()]
    (True, True, [0.6, 0.8])
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

FEATURES_VERSION: Final = 1
COLD_START_ENGAGEMENTS: Final = 5


class UserFeatures(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A user's features as stored (see module doc for the packing).

    Attributes:
        version: record schema version.
        ts: the user's event time (newest event ts applied); the write guard.
        engagements: closed views plus explicit feedback applied (plus open views).
        late_events: events not applied because they were late.
        vector: behavioural user vector as int8 components (the direction; scale it to unit
            norm with :func:`vector_of`); b"" if none.
        top_categories: categories by seconds consumed, decayed over ~7 days.
        genre_affinity_30m: categories by seconds consumed in the last 30 minutes.
        creators: CRC-32 hashes (uint32 LE) of the creators with the highest
            signal-weighted affinity (positive only, ~7 days), best first.
        language: the language of most seconds consumed (~28 days), if known.
        content_type: VIDEO or AUDIO if ≥ 70 % of recent seconds, else MIXED; None if none.
        completion_rate_7d: completed views / closed views over 7 days, None if no view.
        avg_session_s: mean session length (sessions end after `view_inactivity_s`).
        binge_depth: items started in the current (or last) session.
        hours: 24 bytes, seconds consumed per UTC hour of day (~28 days), max scaled to 255.
        recent: most recently consumed items, newest first (anchors for "because you
            watched").
        continue_watching: (media id, resume position in seconds), newest first.
        consumed: CRC-32 hashes of recently consumed items (uint32 LE, newest first).
        disliked: CRC-32 hashes of disliked items.
        co_recent: 8-byte digests (:func:`operators.dedup.id_hash64`) of the user's last
            positively engaged items, newest first: the seeds of the co-engagement source,
            which finds each one's record under its digest.
        subscriptions: creators the user subscribed to (`subscription_to_creator`, each
            once among the user's last 32).
    """

    version: int = FEATURES_VERSION
    ts: int = 0
    engagements: int = 0
    late_events: int = 0
    vector: bytes = b""
    top_categories: tuple[str, ...] = ()
    genre_affinity_30m: tuple[str, ...] = ()
    creators: bytes = b""
    language: str | None = None
    content_type: str | None = None
    completion_rate_7d: float | None = None
    avg_session_s: int = 0
    binge_depth: int = 0
    hours: bytes = b""
    recent: tuple[str, ...] = ()
    continue_watching: tuple[tuple[str, int], ...] = ()
    consumed: bytes = b""
    disliked: bytes = b""
    co_recent: bytes = b""  # appended: records written before it decode with none
    subscriptions: int = 0  # appended likewise

    @property
    def cold_start(self) -> bool:
        """Fewer than :data:`COLD_START_ENGAGEMENTS` engagements."""
        return self.engagements < COLD_START_ENGAGEMENTS

    def consumed_hashes(self) -> tuple[int, ...]:
        """The consumed-item hashes as ints (compare with `dedup.id_hash32`)."""
        return struct.unpack(f"<{len(self.consumed) // 4}I", self.consumed)

    def creator_hashes(self) -> tuple[int, ...]:
        """The top creators' hashes as ints, best first."""
        return struct.unpack(f"<{len(self.creators) // 4}I", self.creators)

    def co_seeds(self) -> tuple[bytes, ...]:
        """The co-engagement seeds' digests, newest first."""
        raw = self.co_recent
        return tuple(raw[i : i + 8] for i in range(0, len(raw) - 7, 8))

    def disliked_hashes(self) -> tuple[int, ...]:
        """The disliked-item hashes as ints."""
        return struct.unpack(f"<{len(self.disliked) // 4}I", self.disliked)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserFeatures)


def encode_user_features(features: UserFeatures) -> bytes:
    """Packed bytes of a record."""
    return _encoder.encode(features)


def decode_user_features(payload: bytes) -> UserFeatures:
    """A record from its packed bytes."""
    return _decoder.decode(payload)


def vector_bytes(vector: Sequence[float] | npt.NDArray[np.floating]) -> bytes:
    """A vector's direction as int8 components (largest magnitude 127); b"" for zero.

    One byte per dimension: the cosine between the decoded and the original vector stays
    above 0.999 for 64 dimensions, far below the noise of a taste estimate.

    Example:
        >>> list(vector_bytes([0.5, -1.0, 0.0]))
        [64, 129, 0]
    """
    v = np.asarray(vector, dtype=np.float64)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return b""
    return np.round(v * (127.0 / top)).astype(np.int8).tobytes()


def vector_of(features: UserFeatures) -> npt.NDArray[np.float32] | None:
    """The user vector as unit-norm float32, or None when the user has none yet."""
    if not features.vector:
        return None
    v = np.frombuffer(features.vector, dtype=np.int8).astype(np.float32)
    return v / np.float32(np.linalg.norm(v))
