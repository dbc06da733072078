"""Records the engagement logic emits: to the item logic, to sinks, and to metrics.

All are frozen msgspec Structs, so they pickle cheaply between steps and encode to JSON or
msgpack as they are. A closed view is a :class:`Segment`; the item logic also takes
:class:`ViewStart` (fresh play counts) and :class:`Feedback` (likes, shares, …), re-keyed by
media id. :class:`Dropped` reports a late or duplicate event so it is counted, never silently
lost.

Example:
    >>> Dropped(outcome="late", reason="older than allowed lateness", user_id="u1",
    ...         event_id="e1", event_type="media_progress", ts=0, lag_ms=700_000).outcome
    'late'
"""

from __future__ import annotations

from typing import Literal

import msgspec

from operators import signals
from operators.contracts import EngagementEvent, Impression


class ViewStart(msgspec.Struct, frozen=True, kw_only=True):
    """A user started a new view of an item (emitted once per view, when it opens)."""

    user_id: str
    media_id: str
    ts: int
    content_type: str | None = None


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """What one view of one item consumed; final when the view closed, else provisional.

    Seconds are content seconds at 0.1 s resolution. `consumed_s` counts each second of the
    item once (coverage); `dwell_s` counts re-played seconds again. `watch_fraction`,
    `completed` (> 90 %) and `early_abandon` (< 30 %, final views only) come from
    `consumed_s` and the item's duration; with the duration unknown the fraction is None,
    `completed` falls back to the client's `media_completed` and `early_abandon` is False.
    `watch_score` is the duration-debiased quantile of :mod:`operators.watch_score`.
    `signals` is a mask of :mod:`operators.signals` bits (playback and explicit).
    """

    user_id: str
    media_id: str
    start_ts: int
    end_ts: int
    consumed_s: float
    dwell_s: float
    max_position_s: float
    last_position_s: float
    duration_s: float | None
    watch_fraction: float | None
    completed: bool
    early_abandon: bool
    replays: int
    signals: int
    watch_score: float
    content_type: str | None = None
    final: bool = True

    @property
    def view_key(self) -> str:
        """Identity of the view within its user: media id and its first event time."""
        return f"{self.media_id}@{self.start_ts}"

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals of the view by name."""
        return signals.names(self.signals)


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """An explicit signal applied for the first time for this (user, item or creator)."""

    user_id: str
    signal: str
    ts: int
    media_id: str | None = None
    creator_id: str | None = None


class Dropped(msgspec.Struct, frozen=True, kw_only=True):
    """An event not applied, with why; `outcome` matches the `feedflow_events_total` label."""

    outcome: Literal["late", "duplicate", "erased"]
    reason: str
    user_id: str
    event_id: str
    event_type: str
    ts: int
    lag_ms: int


def dropped(
    value: EngagementEvent | Impression,
    outcome: Literal["late", "duplicate", "erased"],
    reason: str,
    lag_ms: int,
) -> Dropped:
    """The drop of an engagement event or an impression (named by its request id)."""
    if isinstance(value, Impression):
        event_id, event_type = value.request_id, "impression"
    else:
        event_id, event_type = value.event_id, value.event_type
    return Dropped(
        outcome=outcome, reason=reason, user_id=value.user_id, event_id=event_id,
        event_type=event_type, ts=value.ts, lag_ms=lag_ms,
    )  # fmt: skip


UserEmission = ViewStart | Segment | Feedback | Dropped
