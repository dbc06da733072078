"""Per-user playback sessionizer: telemetry in, one :class:`Segment` per closed view out.

Keyed by user (Kafka key of `user.engagement.events`). All decisions run on the user's own
event time `W` (the newest event `ts` seen), never on the wall clock, so replaying a
historical file gives the same segments as the live run.

Semantics, in the order they apply to an event:

- **Late**: an event older than `W − allowed_lateness_s` is not applied; it comes back as a
  :class:`Dropped` (`outcome="late"`) for the caller to count and report.
- **Closing**: a view closes once `W` reaches its deadline: `view_close_grace_s` after its
  `media_stopped` / `media_completed`, or `view_inactivity_s` after its newest event. The
  grace absorbs telemetry that arrives slightly out of order around the end. A
  `media_started` or `media_replay` after a view's end closes it at once and opens a new
  view. At most :data:`MAX_OPEN_VIEWS` views are open per user; a new one closes the view
  with the earliest deadline.
- **Too late for a closed view**: an event for an item whose view already closed, falling in
  that view's span (from `view_inactivity_s` before its first event to its deadline), is
  dropped as late, not turned into a second view of a few seconds.
- **Explicit feedback** (liked, shared, …) for an item with an open view sets the signal on
  that view; it never opens a view (the caller applies feedback to profiles directly).
- **Plays**: a :class:`ViewStart` is emitted when a view opens, except when it opens with
  `media_skipped` (an auto-play skip is a negative signal, not a play).

Within those rules a segment is a function of the *set* of the view's events: any order and
any duplication of them within the allowed lateness gives the same segment, and
snapshot → resume → continue gives what an uninterrupted run gives.

**Idle users** send no event that could move `W` past their views' deadlines, so timers close
those views. A timer extrapolates the user's event time by the processing time elapsed since
the user's last event, read from the injected clock: `W + (now − last arrival)`. Live, that
is the wall clock; in a backfill, where a user's events arrive milliseconds apart, it stays at
`W`, so a historical file is not closed early by today's date (the pitfall of an event
clock tied to the wall clock). The arrival time is not snapshotted: after a restart the idle
time starts over, so events queued during the downtime are applied before any timer fires. Timers
never move `W` and never change what a segment contains; they only decide when it is emitted.

Example:
    >>> from operators.contracts import EngagementEvent
    >>> from operators.item_info import ItemInfo, lookup_from
    >>> from kernel.settings import Settings
    >>> s = Sessionizer(Settings(), lookup_from({"m1": ItemInfo("m1", duration_s=30.0)}))
    >>> def ev(i, kind, pos):
    ...     return EngagementEvent(event_id=f"e{i}", event_type=kind, user_id="u1",
    ...                            media_id="m1", ts=1_000 * pos, position_s=float(pos))
    >>> _ = s.on_event(ev(0, "media_started", 0)); _ = s.on_event(ev(1, "media_progress", 10))
    >>> _ = s.on_event(ev(2, "media_completed", 30))
    >>> [seg] = s.flush()
    >>> seg.consumed_s, seg.completed, seg.signal_names
    (30.0, True, ('started', 'completed'))
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from kernel.settings import Settings
from operators import signals
from operators.consumption import (
    ENDS_VIEW,
    KIND,
    KIND_SIGNAL,
    OPENS_VIEW,
    View,
    observation,
)
from operators.contracts import EngagementEvent
from operators.dedup import id_hash32
from operators.emissions import Dropped, Segment, UserEmission, ViewStart
from operators.eventtime import Clock, from_ms, to_ms, utc_now
from operators.item_info import ItemLookup
from operators.watch_score import watch_score

MAX_OPEN_VIEWS: Final = 4
MAX_CLOSED_SPANS: Final = 8
COMPLETED_FRACTION: Final = 0.9
ABANDON_FRACTION: Final = 0.3
_SNAPSHOT_VERSION: Final = 2  # 2: a view's observations as steps (1: packed records)
_NEVER: Final = 2**63
_encode = msgspec.msgpack.Encoder().encode
_COMPLETED: Final = signals.bit("completed")
_ABANDONED: Final = signals.bit("abandoned")
_EARLY_NEGATIVE: Final = signals.bit("paused_early") | signals.bit("skipped")

ClosedSpan = tuple[int, int, int, int]  # (media hash, span start, end_ts or -1, deadline)
# Snapshots are msgpack bytes: Bytewax pickles every touched key's snapshot each epoch, and
# pickling one bytes object costs a fraction of pickling the same data as nested tuples.
SessionizerSnapshot = bytes


class Sessionizer:
    """Rebuilds views of one user from playback telemetry and closes them on event time.

    Args:
        settings: lateness, inactivity and grace (`allowed_lateness_s`,
            `view_inactivity_s`, `view_close_grace_s`).
        items: item metadata lookup (durations for watch fractions).
        resume: a value returned by :meth:`snapshot`, or None for a new user.
        clock: processing-time clock (UTC-aware), for idle timers only.
    """

    def __init__(
        self,
        settings: Settings,
        items: ItemLookup,
        resume: SessionizerSnapshot | None = None,
        clock: Clock = utc_now,
    ):
        self._clock = clock
        self._arrival_ms = to_ms(clock())
        self._lateness_ms = settings.allowed_lateness_s * 1000
        self._inactivity_ms = settings.view_inactivity_s * 1000
        self._grace_ms = settings.view_close_grace_s * 1000
        self._items = items
        self._views: dict[str, View] = {}
        self._closed: list[ClosedSpan] = []
        self._due_floor = _NEVER  # no open view's deadline is earlier than this
        if resume is None:
            self.user_id = ""
            self._wm = -1
        else:
            version, self.user_id, self._wm, views, closed = msgspec.msgpack.decode(resume)
            if version > _SNAPSHOT_VERSION:
                raise ValueError(
                    f"Sessionizer: snapshot version {version} is newer than this code "
                    f"({_SNAPSHOT_VERSION}); run the release that wrote it, or rebuild"
                )
            resumed = (View.resume(snap, steps=version >= 2) for snap in views)
            self._views = {view.media_id: view for view in resumed}
            self._closed = [(h, start, end, deadline) for h, start, end, deadline in closed]
            self._due_floor = self._next_deadline() or _NEVER

    @property
    def watermark_ms(self) -> int:
        """The user's event time: the newest `ts` seen (-1 before any event)."""
        return self._wm

    @property
    def open_views(self) -> int:
        """Number of views currently open."""
        return len(self._views)

    def is_late(self, ts_ms: int) -> bool:
        """True if an event at `ts_ms` is older than the allowed lateness."""
        return self._wm >= 0 and ts_ms < self._wm - self._lateness_ms

    def on_event(self, ev: EngagementEvent, arrival_ms: int | None = None) -> list[UserEmission]:
        """Apply one event of this user.

        Args:
            ev: the event.
            arrival_ms: processing time it arrived at, if the caller already read the clock.

        Returns:
            Segments of views it closed, a :class:`ViewStart` if it opened one, or a
            :class:`Dropped` if it was late.
        """
        if not self.user_id:
            self.user_id = ev.user_id
        self._arrival_ms = to_ms(self._clock()) if arrival_ms is None else arrival_ms
        if self._wm >= 0 and ev.ts < self._wm - self._lateness_ms:
            return [self._dropped(ev, "older than allowed lateness")]
        out: list[UserEmission] = []
        if ev.ts > self._wm:
            self._wm = ev.ts
            if ev.ts >= self._due_floor:
                out.extend(self._close_due(ev.ts))
        media = ev.media_id
        if media is None:
            return out
        kind = KIND.get(ev.event_type)
        if kind is None:
            view = self._views.get(media)
            if view is not None and ev.event_type in signals.EVENT_SIGNAL:
                view.flags |= signals.bit(signals.EVENT_SIGNAL[ev.event_type])
            return out
        return self._playback(ev, media, kind, out)

    def notify_at(self) -> datetime | None:
        """Processing time at which the earliest open view is due if the user stays idle."""
        deadline = self._next_deadline()
        if deadline is None:
            return None
        return from_ms(self._arrival_ms + max(deadline - self._wm, 0))

    def on_timer(self, now: datetime | None = None) -> list[UserEmission]:
        """Close the views due at the idle-extrapolated event time (`now`: the clock's)."""
        now_ms = to_ms(now if now is not None else self._clock())
        return list(self._close_due(self._wm + max(now_ms - self._arrival_ms, 0)))

    def flush(self) -> list[UserEmission]:
        """Close every open view (end of input)."""
        views = sorted(self._views.values(), key=lambda v: (v.last_ts, v.media_id))
        return [self._close(v) for v in views]

    def provisional(self) -> list[Segment]:
        """Segments of the open views as they stand, newest activity first."""
        views = sorted(self._views.values(), key=lambda v: (-v.last_ts, v.media_id))
        return [self._segment(v, final=False) for v in views]

    def snapshot(self) -> SessionizerSnapshot:
        """Plain immutable state as msgpack bytes; a few hundred bytes per open view."""
        views = [v.snapshot() for v in self._views.values()]
        return _encode((_SNAPSHOT_VERSION, self.user_id, self._wm, views, self._closed))

    def _playback(
        self, ev: EngagementEvent, media: str, kind: int, out: list[UserEmission]
    ) -> list[UserEmission]:
        view = self._views.get(media)
        if view is not None and 0 <= view.end_ts < ev.ts and kind in OPENS_VIEW:
            out.append(self._close(view))
            view = None
        if view is None:
            if self._in_closed_span(media, ev.ts, kind):
                out.append(self._dropped(ev, "its view already closed"))
                return out
            view = self._open(ev, media, out)
        if view.content_type is None:
            view.content_type = ev.content_type
        if ev.position_s is None:  # media_skipped may come without a position
            view.flags |= KIND_SIGNAL.get(kind, 0)
            view.touch(ev.ts)
        else:
            obs = observation(ev.ts, kind, ev.position_s, ev.from_position_s)
            view.insert(obs, cutoff_ms=self._wm - self._lateness_ms)
            if kind in ENDS_VIEW:  # the only change that can bring a deadline forward
                self._due_floor = min(self._due_floor, self._deadline(view))
        return out

    def _open(self, ev: EngagementEvent, media: str, out: list[UserEmission]) -> View:
        if len(self._views) >= MAX_OPEN_VIEWS:
            oldest = min(self._views.values(), key=lambda v: (self._deadline(v), v.media_id))
            out.append(self._close(oldest))
        view = View(media, ev.ts)
        self._views[media] = view
        self._due_floor = min(self._due_floor, ev.ts + self._inactivity_ms)
        if ev.event_type != "media_skipped":  # an auto-play skip is not a play
            start = ViewStart(
                user_id=self.user_id, media_id=media, ts=ev.ts, content_type=ev.content_type
            )
            out.append(start)
        return view

    def _deadline(self, view: View) -> int:
        return view.deadline(self._inactivity_ms, self._grace_ms)

    def _next_deadline(self) -> int | None:
        return min((self._deadline(v) for v in self._views.values()), default=None)

    def _close_due(self, now_ms: int) -> list[UserEmission]:
        if now_ms < self._due_floor:
            return []
        due = sorted(
            (d, v.media_id) for v in self._views.values() if (d := self._deadline(v)) <= now_ms
        )
        closed: list[UserEmission] = [self._close(self._views[media]) for _, media in due]
        self._due_floor = self._next_deadline() or _NEVER
        return closed

    def _close(self, view: View) -> Segment:
        deadline = self._deadline(view)
        del self._views[view.media_id]
        view.fold()
        horizon = self._wm - self._lateness_ms
        self._closed = [c for c in self._closed if c[3] >= horizon][-(MAX_CLOSED_SPANS - 1) :]
        span_start = view.first_ts - self._inactivity_ms
        self._closed.append((id_hash32(view.media_id), span_start, view.end_ts, deadline))
        return self._segment(view, final=True)

    def _in_closed_span(self, media: str, ts: int, kind: int) -> bool:
        h = id_hash32(media)
        for mh, start, end_ts, deadline in self._closed:
            reopens = 0 <= end_ts < ts and kind in OPENS_VIEW
            if mh == h and start <= ts < deadline and not reopens:
                return True
        return False

    def _segment(self, view: View, final: bool) -> Segment:
        item = self._items(view.media_id)
        duration = item.duration_s if item is not None and item.duration_s else None
        consumed = view.consumed_ds() / 10
        fraction = None if duration is None else min(consumed / duration, 1.0)
        completed = (
            bool(view.client_completed) if fraction is None else fraction > COMPLETED_FRACTION
        )
        abandoned = final and fraction is not None and fraction < ABANDON_FRACTION
        flags = view.flags | (_COMPLETED if completed else 0)
        if abandoned and not completed and not flags & _EARLY_NEGATIVE:
            flags |= _ABANDONED
        return Segment(
            user_id=self.user_id,
            media_id=view.media_id,
            start_ts=view.first_ts,
            end_ts=view.last_ts,
            consumed_s=consumed,
            dwell_s=view.dwell_ds() / 10,
            max_position_s=view.max_pos / 10,
            last_position_s=view.last_position_ds() / 10,
            duration_s=duration,
            watch_fraction=fraction,
            completed=completed,
            early_abandon=abandoned and not completed,
            replays=view.replays,
            signals=flags,
            watch_score=watch_score(consumed, duration),
            content_type=view.content_type,
            final=final,
        )

    def _dropped(self, ev: EngagementEvent, reason: str) -> Dropped:
        return Dropped(
            outcome="late",
            reason=reason,
            user_id=ev.user_id,
            event_id=ev.event_id,
            event_type=ev.event_type,
            ts=ev.ts,
            lag_ms=max(self._wm - ev.ts, 0),
        )
