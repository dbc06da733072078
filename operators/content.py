"""Content understanding: taxonomy normalisation, text features and the stored item record.

Pure functions over :class:`operators.contracts.MediaPublished`; no I/O. The record built
here is what the item store, the index update log and every index reader hold for an item.

Example:
    >>> normalise_tags(["#Jazz", " jazz ", "Live Music"])
    ('jazz', 'live-music')
    >>> normalise_language("EN_us")
    'en'
    >>> tokens("The Best of Jazz: live in 1999!")
    ('best', 'jazz', 'live', '1999')
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import msgspec

from operators.contracts import MediaPublished

UNKNOWN: Final = "unknown"
CONTENT_TYPES: Final = ("VIDEO", "AUDIO")
MAX_TOKENS: Final = 256
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SEPARATORS = re.compile(r"[\s_/]+")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_STOPWORDS: Final = frozenset(
    (  # noqa: SIM905 (a word list reads better as one string)
        "a an and are as at be by for from has have in is it its of on or that the this to was"
        " were will with you your our we i me my not no"
    ).split()
)


class Stamp(msgspec.Struct, array_like=True, frozen=True, order=True):
    """Order of one change to an item: its event time, then its position in the source.

    `media.published` is keyed by `media_id`, so every change to an item sits on one
    partition and `seq` (the Kafka offset) orders them; `published_at` comes first so an
    older event can never overwrite a newer one, even from a later offset.
    """

    event_ms: int
    seq: int


class ItemRecord(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """The normalised metadata of one item, as ranking and the index readers see it."""

    media_id: str
    stamp: Stamp
    removed: bool = False
    creator_id: str = UNKNOWN
    content_type: str = UNKNOWN
    category: str = UNKNOWN
    tags: tuple[str, ...] = ()
    language: str = UNKNOWN
    duration_s: float = 0.0
    published_at: int = 0


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ItemRecord)


def pack_record(record: ItemRecord) -> bytes:
    """The compact wire form of a record (msgpack array, ~100 bytes)."""
    return _record_encoder.encode(record)


def unpack_record(data: bytes) -> ItemRecord:
    """Inverse of :func:`pack_record`."""
    return _record_decoder.decode(data)


def slug(value: str) -> str:
    """Lower-case, accent-free, hyphen-separated form of a taxonomy label.

    Example:
        >>> slug("  Science & Nature ")
        'science-&-nature'
    """
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return _SEPARATORS.sub("-", folded.strip().lower()).strip("-#")


def normalise_category(value: str | None) -> str:
    """A category's canonical slug, `unknown` when absent or empty."""
    return (slug(value) if value else "") or UNKNOWN


def normalise_tags(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Tags as unique slugs in first-seen order (`#Jazz` and `jazz` are one tag)."""
    seen: dict[str, None] = {}
    for value in values:
        tag = slug(value.lstrip("#"))
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


def normalise_language(value: str | None) -> str:
    """The primary ISO 639 subtag of a language tag (`en-US` → `en`), else `unknown`."""
    if not value:
        return UNKNOWN
    primary = re.split(r"[-_]", value.strip().lower(), maxsplit=1)[0]
    return primary if _LANGUAGE.fullmatch(primary) else UNKNOWN


def normalise_content_type(value: str | None) -> str:
    """`VIDEO` or `AUDIO`, else `unknown`."""
    upper = (value or "").strip().upper()
    return upper if upper in CONTENT_TYPES else UNKNOWN


def tokens(text: str) -> tuple[str, ...]:
    """Lower-case word tokens without stopwords or one-letter words, at most MAX_TOKENS."""
    folded = unicodedata.normalize("NFKC", text).lower()
    words = (w for w in _WORD.findall(folded) if len(w) > 1 and w not in _STOPWORDS)
    return tuple(w for _, w in zip(range(MAX_TOKENS), words, strict=False))


def stamp_of(event: MediaPublished, seq: int, previous: Stamp | None) -> Stamp:
    """The stamp of a change; a removal without `published_at` keeps the previous time."""
    if event.published_at is not None:
        return Stamp(event.published_at, seq)
    return Stamp(previous.event_ms if previous else 0, seq)


def is_newer(candidate: Stamp, current: Stamp | None) -> bool:
    """Whether a change with `candidate` may replace the state stamped `current`.

    Example:
        >>> is_newer(Stamp(10, 5), Stamp(10, 4)), is_newer(Stamp(9, 7), Stamp(10, 4))
        (True, False)
    """
    return current is None or candidate > current


def record_of(event: MediaPublished, stamp: Stamp) -> ItemRecord:
    """The normalised record of a catalogue event (a tombstone for `removed`)."""
    if event.status == "removed":
        return ItemRecord(media_id=event.media_id, stamp=stamp, removed=True)
    return ItemRecord(
        media_id=event.media_id,
        stamp=stamp,
        creator_id=event.creator_id or UNKNOWN,
        content_type=normalise_content_type(event.content_type),
        category=normalise_category(event.category),
        tags=normalise_tags(event.tags),
        language=normalise_language(event.language),
        duration_s=float(event.duration_s or 0.0),
        published_at=event.published_at or 0,
    )
