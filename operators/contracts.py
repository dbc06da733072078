"""Typed event contracts for the Kafka topics Feedflow reads and writes.

Every decoder takes raw bytes and returns either the event or a :class:`Rejection` with a
reason; it never raises on bad input, so a flow can route the rejection to the dead-letter
topic and keep going.

Example:
    >>> ev = decode_engagement(b'{"event_id":"e1","event_type":"media_liked",'
    ...                        b'"user_id":"u1","media_id":"m1","ts":1700000000000}')
    >>> ev.event_type
    'media_liked'
    >>> decode_engagement(b'{"event_id":"e1"}').reason
    'Object missing required field `event_type`'
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated, Final, Literal

import msgspec

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_ID_CHARS: Final = 128
# A dead letter keeps at most this much of the payload (every payload a flow accepts fits
# whole; a larger one is cut, its size and digest kept) and of the reason.
DEADLETTER_PAYLOAD_BYTES: Final = MAX_PAYLOAD_BYTES
MAX_REASON_CHARS: Final = 1024
MAX_TEXT_CHARS: Final = 8192
MAX_TAGS: Final = 64
MAX_EMBEDDING_DIM: Final = 4096
MAX_FEED_ITEMS: Final = 1000

TOPIC_ENGAGEMENT: Final = "user.engagement.events"
TOPIC_MEDIA: Final = "media.published"
TOPIC_IMPRESSIONS: Final = "feed.impressions"
TOPIC_DEADLETTER: Final = "feedflow.deadletter"
TOPIC_ERASURE: Final = "feedflow.erasure"
ALL_TOPICS: Final = (
    TOPIC_ENGAGEMENT, TOPIC_MEDIA, TOPIC_IMPRESSIONS, TOPIC_DEADLETTER, TOPIC_ERASURE,
)  # fmt: skip

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Position = Annotated[float, msgspec.Meta(ge=0.0, le=1e7)]
# Up to 2100-01-01: state packs event seconds as uint32 (to 2106), so a later stamp a broker
# accepts must be refused here, not crash a flow.
MAX_EPOCH_MS: Final = 4_102_444_800_000
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
ContentType = Literal["VIDEO", "AUDIO"]

PLAYBACK_TYPES: Final = frozenset(
    {
        "media_started",
        "media_progress",
        "media_paused",
        "media_seeked",
        "media_stopped",
        "media_completed",
        "media_replay",
        "media_skipped",
        "media_paused_early",
    }
)
FEEDBACK_TYPES: Final = frozenset(
    {
        "media_liked",
        "media_disliked",
        "media_shared",
        "media_added_to_playlist",
        "subscription_to_creator",
    }
)
EVENT_TYPES: Final = PLAYBACK_TYPES | FEEDBACK_TYPES
# Telemetry that must say where playback was; `media_skipped` is an auto-play skip and may not.
POSITION_REQUIRED: Final = PLAYBACK_TYPES - {"media_skipped"}


class EngagementEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event on `user.engagement.events` (key: `user_id`)."""

    event_id: Id
    event_type: str
    user_id: Id
    ts: EpochMs
    media_id: Id | None = None
    creator_id: Id | None = None
    position_s: Position | None = None
    from_position_s: Position | None = None
    session_id: Id | None = None
    content_type: ContentType | None = None
    device: Id | None = None
    country: Id | None = None
    language: Id | None = None


class MediaPublished(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event on `media.published` (key: `media_id`)."""

    media_id: Id
    status: Literal["published", "updated", "removed"] = "published"
    creator_id: Id | None = None
    content_type: ContentType | None = None
    title: Text = ""
    description: Text = ""
    category: Id | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)] = []
    language: Id | None = None
    duration_s: Annotated[float, msgspec.Meta(gt=0.0, le=1e7)] | None = None
    published_at: EpochMs | None = None
    embedding: Annotated[list[float], msgspec.Meta(max_length=MAX_EMBEDDING_DIM)] | None = None
    embedding_model: Id | None = None


MAX_RANK_FEATURES: Final = 64


class ImpressionItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One served slot of a feed.

    `features` is the ranking feature row serving scored the item with, in the column order
    of :data:`operators.ranking_contract.FEATURES` (optional, beyond the contract's required
    fields): the learning flow trains on exactly what serving computed.
    """

    media_id: Id
    position: Annotated[int, msgspec.Meta(ge=0)]
    score: float
    source: Id
    features: Annotated[list[float], msgspec.Meta(max_length=MAX_RANK_FEATURES)] = []


class Impression(msgspec.Struct, frozen=True, kw_only=True):
    """One served feed on `feed.impressions` (key: `user_id`)."""

    request_id: Id
    user_id: Id
    ts: EpochMs
    arm: Id
    model_version: Id
    index_version: Id
    items: Annotated[list[ImpressionItem], msgspec.Meta(max_length=MAX_FEED_ITEMS)]


class ErasureRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A user to forget, on `feedflow.erasure` (key: `user_id`): every flow drops the user's
    state and stored features when it reads one, and never rebuilds them from events stamped
    at or before `ts`."""

    user_id: Id
    ts: EpochMs
    request_id: Id


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A rejected message on `feedflow.deadletter`: where the original is (topic, partition,
    offset: the topic keeps it for its retention), why, and a bounded copy of it.

    `payload_b64` holds the payload, or its first bytes when `truncated`; `size` and `digest`
    (BLAKE2b-128, hex) are the whole original's, so a replay can check what it fetched.
    Records written before these fields existed decode with `size` -1 and no digest.
    """

    topic: str
    partition: int
    offset: int
    reason: str
    payload_b64: str
    ts: int
    size: int = -1
    digest: str = ""
    truncated: bool = False

    def payload(self) -> bytes:
        """The kept bytes of the rejected message (all of them unless `truncated`)."""
        return base64.b64decode(self.payload_b64)

    def bounded(self, keep: int) -> DeadLetter:
        """This letter with at most `keep` bytes of payload (a letter only ever shrinks)."""
        kept = self.payload()
        if len(kept) <= keep:
            return self
        prefix = base64.b64encode(kept[:keep]).decode("ascii")
        return msgspec.structs.replace(self, payload_b64=prefix, truncated=True)


class Rejection(msgspec.Struct, frozen=True):
    """Why a payload was refused. Routed to the dead-letter topic, never raised."""

    reason: str


_engagement_decoder = msgspec.json.Decoder(EngagementEvent)
_media_decoder = msgspec.json.Decoder(MediaPublished)
_impression_decoder = msgspec.json.Decoder(Impression)
_deadletter_decoder = msgspec.json.Decoder(DeadLetter)
_erasure_decoder = msgspec.json.Decoder(ErasureRequest)
_encoder = msgspec.json.Encoder()


def _too_big(payload: bytes) -> Rejection | None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return None


def decode_engagement(payload: bytes) -> EngagementEvent | Rejection:
    """Decode and validate one engagement event."""
    if (big := _too_big(payload)) is not None:
        return big
    try:
        ev = _engagement_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(str(exc))
    return _check_engagement(ev) or ev


def _check_engagement(ev: EngagementEvent) -> Rejection | None:
    kind = ev.event_type
    if kind not in EVENT_TYPES:
        return Rejection(f"unknown event_type {kind[:MAX_ID_CHARS]!r}")
    if kind.startswith("media_") and ev.media_id is None:
        return Rejection(f"{kind} requires media_id")
    if kind == "subscription_to_creator" and ev.creator_id is None:
        return Rejection("subscription_to_creator requires creator_id")
    if kind in POSITION_REQUIRED and ev.position_s is None:
        return Rejection(f"{kind} requires position_s")
    if kind == "media_seeked" and ev.from_position_s is None:
        return Rejection("media_seeked requires from_position_s")
    return None


def decode_media(payload: bytes) -> MediaPublished | Rejection:
    """Decode and validate one catalogue event."""
    if (big := _too_big(payload)) is not None:
        return big
    try:
        item = _media_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(str(exc))
    if item.status == "removed":
        return item
    missing = [
        name
        for name in ("creator_id", "content_type", "category", "duration_s", "published_at")
        if getattr(item, name) is None
    ]
    if missing:
        return Rejection(f"{item.status} item requires {', '.join(missing)}")
    if item.embedding is not None and item.embedding_model is None:
        return Rejection("embedding requires embedding_model")
    return item


def decode_impression(payload: bytes) -> Impression | Rejection:
    """Decode and validate one served-feed record."""
    if (big := _too_big(payload)) is not None:
        return big
    try:
        return _impression_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(str(exc))


def decode_erasure(payload: bytes) -> ErasureRequest | Rejection:
    """Decode and validate one erasure request."""
    if (big := _too_big(payload)) is not None:
        return big
    try:
        return _erasure_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(str(exc))


def decode_deadletter(payload: bytes) -> DeadLetter | Rejection:
    """Decode one dead-letter record (for tooling and tests)."""
    try:
        return _deadletter_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(str(exc))


def encode(event: msgspec.Struct) -> bytes:
    """Encode any contract struct to its JSON wire form (fields left at None are kept)."""
    return _encoder.encode(event)


def dead_letter(
    topic: str, partition: int, offset: int, reason: str, payload: bytes, ts_ms: int
) -> DeadLetter:
    """Build the bounded dead-letter record for a rejected message (see :class:`DeadLetter`).

    Example:
        >>> letter = dead_letter("t", 0, 7, "too big", b"x" * 100_000, 0)
        >>> letter.size, letter.truncated, len(letter.payload()), len(letter.digest)
        (100000, True, 65536, 32)
    """
    kept = payload[:DEADLETTER_PAYLOAD_BYTES]
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason[:MAX_REASON_CHARS],
        payload_b64=base64.b64encode(kept).decode("ascii"),
        ts=ts_ms,
        size=len(payload),
        digest=hashlib.blake2b(payload, digest_size=16).hexdigest(),
        truncated=len(kept) < len(payload),
    )
