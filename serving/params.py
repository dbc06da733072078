"""Query and path parameters: parsed and validated at the edge, before anything reads them.

The query string must be UTF-8 (percent-escapes included): an invalid byte is a 422, never a
U+FFFD that would make different raw ids one user. Identifiers follow the event contracts
(non-empty, at most 128 characters) and may not hold control characters; `content_type` is
one of the upper-case names exactly, as the schema says. An id becomes part of exactly one
Redis key (`ff:{u:<id>}`), whatever characters it holds, so no id can address another
entity's key. A `limit` above the configured maximum is capped, not rejected; anything else
out of range is a 422.

Example:
    >>> feed_request({"user_id": "u1", "limit": "500"}, Limits(default=20, maximum=100))
    FeedRequest(user_id='u1', limit=100, content_type=None, diversity=0.2, device=None)
    >>> feed_request({"user_id": "u1", "limit": "0"}, Limits(20, 100))
    Traceback (most recent call last):
    ...
    serving.errors.BadParameterError: limit: must be a positive integer
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from kernel.settings import DEFAULTS
from operators.content import normalise_category
from serving.errors import BadParameterError
from serving.feed import FeedRequest

MAX_ID: Final = 128
CONTENT_TYPES: Final = ("VIDEO", "AUDIO", "MIXED")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """Page sizes: the default and the cap."""

    default: int = DEFAULTS.feed_limit_default
    maximum: int = DEFAULTS.feed_limit_max
    diversity: float = DEFAULTS.feed_diversity


def query(raw: bytes) -> dict[str, str]:
    """The parameters of a raw query string (the last value of a repeated name).

    Example:
        >>> query(b"user_id=u%C3%A9&limit=5")
        {'user_id': 'ué', 'limit': '5'}
        >>> query(b"user_id=%ff%fe")
        Traceback (most recent call last):
        ...
        serving.errors.BadParameterError: query: must be UTF-8 (percent-escapes included)
    """
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadParameterError("query", "must be UTF-8 (percent-escapes included)") from None
    return dict(pairs)


def identifier(value: str | None, name: str) -> str:
    """A valid identifier, or BadParameterError.

    Example:
        >>> identifier("u}1", "user_id")
        'u}1'
    """
    if value is None or value == "":
        raise BadParameterError(name, "is required")
    if len(value) > MAX_ID:
        raise BadParameterError(name, f"at most {MAX_ID} characters")
    if _CONTROL.search(value):
        raise BadParameterError(name, "may not contain control characters")
    return value


def optional_identifier(value: str | None, name: str) -> str | None:
    """An identifier when given, else None.

    Example:
        >>> optional_identifier("", "device"), optional_identifier("tv", "device")
        (None, 'tv')
    """
    return None if value is None or value == "" else identifier(value, name)


def limit(value: str | None, limits: Limits) -> int:
    """The page size: default when absent, capped at the maximum (empty is not absent)."""
    if value is None:
        return limits.default
    try:
        n = int(value)
    except ValueError:
        raise BadParameterError("limit", "must be a positive integer") from None
    if n < 1:
        raise BadParameterError("limit", "must be a positive integer")
    return min(n, limits.maximum)


def content_type(value: str | None, allow_mixed: bool = True) -> str | None:
    """VIDEO or AUDIO; None for absent (or MIXED, where allowed); empty is not absent."""
    if value is None:
        return None
    if value not in CONTENT_TYPES or (value == "MIXED" and not allow_mixed):
        allowed = CONTENT_TYPES if allow_mixed else CONTENT_TYPES[:2]
        raise BadParameterError("content_type", f"must be one of {', '.join(allowed)}")
    return None if value == "MIXED" else value


def diversity(value: str | None, default: float) -> float:
    """A number in [0, 1] (empty is not absent)."""
    if value is None:
        return default
    try:
        x = float(value)
    except ValueError:
        raise BadParameterError("diversity", "must be a number between 0 and 1") from None
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise BadParameterError("diversity", "must be a number between 0 and 1")
    return x


def category(value: str | None) -> str | None:
    """A category in its canonical form, or None."""
    if value is None or value == "":
        return None
    return normalise_category(identifier(value, "category"))


def feed_request(query: Mapping[str, str], limits: Limits) -> FeedRequest:
    """A validated feed request from query parameters."""
    return FeedRequest(
        user_id=identifier(query.get("user_id"), "user_id"),
        limit=limit(query.get("limit"), limits),
        content_type=content_type(query.get("content_type")),
        diversity=diversity(query.get("diversity"), limits.diversity),
        device=optional_identifier(query.get("device"), "device"),
    )
