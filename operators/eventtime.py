"""Conversions between epoch milliseconds (event time inside the logic) and UTC datetimes.

The logic computes on integer milliseconds of event time; the stream runtime speaks
UTC-aware datetimes (`notify_at`, timers) of processing time, which the logic reads only
through an injected :data:`Clock`.

Example:
    >>> from_ms(1_700_000_000_000).isoformat()
    '2023-11-14T22:13:20+00:00'
    >>> to_ms(from_ms(1_700_000_000_123))
    1700000000123
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def to_ms(when: datetime) -> int:
    """Epoch milliseconds of a UTC-aware datetime.

    Raises:
        ValueError: for a naive datetime, which would silently mean local time.
    """
    if when.tzinfo is None:
        raise ValueError(f"to_ms: naive datetime {when!r}; pass a UTC-aware one")
    return round(when.timestamp() * 1000)


def utc_now() -> datetime:
    """The real clock: the current UTC-aware time (the default :data:`Clock`)."""
    return datetime.now(UTC)


def now_ms() -> int:
    """The real clock in epoch milliseconds (processing time: dead letters, drops, lags)."""
    return time.time_ns() // 1_000_000


def from_ms(ms: int) -> datetime:
    """UTC-aware datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
