"""Everything the engagement flow keeps per user, behind one key and one snapshot.

Dedup, the playback sessionizer and the profile all key on `user_id`; running them as three
stateful steps would cost three routing hops and three snapshots per event, so this class
composes them and is what the flow's single per-user `StatefulLogic` wraps:

    on_item(ev)   -> logic.on_event(ev), logic.is_expired(now)
    notify_at()   -> logic.notify_at()
    on_notify()   -> logic.on_timer(), logic.is_expired(now)
    on_eof()      -> logic.flush(), False
    snapshot()    -> logic.snapshot()

For each event, in order: a late event (older than `allowed_lateness_s` behind the user's
event time) is counted and returned as :class:`Dropped`; a duplicate `event_id` (within
`dedup_window_s`, at most `dedup_max_ids` ids) likewise; otherwise the sessionizer applies
it, closed views go into the profile, explicit feedback is applied to the profile once per
(item, signal), and the outputs are returned: :class:`ViewStart`, :class:`Segment`,
:class:`Feedback` (for the item logic), :class:`Dropped` (for metrics and the late topic)
and, last, the user's full :class:`UserFeatures` record (for the feature store).

The record is emitted when something a reader would notice changed (a view opened or
closed, feedback applied), and otherwise at most every `user_features_refresh_s` of the
user's event time: a heartbeat only moves the open view's position, and writing 20,000
records a second for that would cost more than it serves. A user who then goes quiet for
:data:`IDLE_FLUSH_S` of processing time gets the record of what the skipped heartbeats
changed, so the stored record always ends as the state it reflects, however the events
arrived (live, replayed, resumed after a crash).

Example:
    >>> from operators.contracts import EngagementEvent
    >>> from operators.item_info import no_items
    >>> from kernel.settings import Settings
    >>> user = UserEngagement(Settings(), no_items)
    >>> ev = EngagementEvent(event_id="e1", event_type="media_started", user_id="u1",
    ...                      media_id="m1", ts=0, position_s=0.0)
    >>> [type(x).__name__ for x in user.on_event(ev)]
    ['ViewStart', 'UserFeatures']
    >>> [x.outcome for x in user.on_event(ev)]
    ['duplicate']
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

from kernel.settings import Settings
from operators import signals
from operators.co_engagement import CoVisit, RecentPositives
from operators.contracts import FEEDBACK_TYPES, EngagementEvent
from operators.dedup import EventDedup
from operators.emissions import Dropped, Feedback, Segment, UserEmission, ViewStart
from operators.eventtime import Clock, from_ms, to_ms, utc_now
from operators.item_info import ItemLookup
from operators.keyed import KeyedState
from operators.playback import Sessionizer
from operators.user_features import UserFeatures
from operators.user_profile import UserProfile

UserOutput = UserEmission | UserFeatures | CoVisit
_SNAPSHOT_VERSION: Final = 2  # 2 added the co-engagement history; 1 resumes without one


class UserState(msgspec.Struct, frozen=True):
    """What the engagement flow keeps for a user. Bytewax pickles it as the plain tuple of
    these fields in this order (:meth:`UserEngagement.snapshot`): a struct pickles four to
    eight times slower, and every touched user is snapshotted every epoch. The order is the
    recovery format, pinned by a test: a new field goes last, with a default (a tuple of an
    older version, shorter, takes the defaults: version 1 had no co-engagement history,
    early version 2 nothing pending).
    """

    version: int = _SNAPSHOT_VERSION
    dedup: Any = None
    sessions: Any = None
    profile: Any = None
    emitted_ts: int = -1
    positives: Any = None
    pending: bool = False


def user_state(resume: UserState | tuple[Any, ...] | None) -> UserState:
    """A snapshot of any version as the current :class:`UserState` (a new user's for None).

    Raises:
        ValueError: a version this code does not know (written by a newer release).
    """
    if resume is None:
        return UserState()
    state = resume if isinstance(resume, UserState) else UserState(*resume)
    if state.version > _SNAPSHOT_VERSION or state.version < 1:
        raise ValueError(
            f"UserEngagement: snapshot version {state.version} is not supported (this code "
            f"reads 1 to {_SNAPSHOT_VERSION}); run the release that wrote it, or rebuild"
        )
    return state


IDLE_FLUSH_S: Final = 30  # longer than a heartbeat interval: only a quiet user is written
_NOT_POSITIVE: Final = signals.NEGATIVE_PLAYBACK_MASK | signals.bit("disliked")
_POSITIVE_FEEDBACK: Final = frozenset({"liked", "shared", "playlist"})
_NEGATIVE_FEEDBACK: Final = frozenset({"disliked", "skipped"})


class UserEngagement(KeyedState[EngagementEvent, UserOutput]):
    """Dedup + sessionizer + profile of one user.

    Args:
        settings: engagement semantics, signal weights, dedup bounds.
        items: item metadata lookup.
        resume: a value returned by :meth:`snapshot`, or None for a new user.
        clock: processing-time clock, for idle timers and state expiry only.
        emit_features: append the feature record to every accepted event's outputs; turn
            off to build records elsewhere (e.g. once per epoch with :meth:`features`).
    """

    def __init__(
        self,
        settings: Settings,
        items: ItemLookup,
        resume: Any = None,
        clock: Clock = utc_now,
        emit_features: bool = True,
    ):
        snap = user_state(resume)
        self._clock = clock
        self._ttl_ms = settings.user_ttl_days * 86_400_000
        self._emit_features = emit_features
        self._dedup = EventDedup(settings.dedup_max_ids, settings.dedup_window_s, snap.dedup)
        self._sessions = Sessionizer(settings, items, snap.sessions, clock)
        self._profile = UserProfile(settings, items, snap.profile)
        self._arrival_ms = to_ms(clock())
        self._refresh_ms = settings.user_features_refresh_s * 1000
        self._emitted_ts: int = snap.emitted_ts
        self._positives = RecentPositives(settings.co_history, snap.positives)
        self._pending = bool(snap.pending)  # applied since the last record

    def on_event(self, ev: EngagementEvent) -> list[UserOutput]:
        """Apply one event of this user; see the module doc for what comes out."""
        arrival = self._arrival_ms = to_ms(self._clock())
        sessions = self._sessions
        if sessions.is_late(ev.ts):
            self._profile.note_late()
            return list(sessions.on_event(ev, arrival))  # the sessionizer reports it as Dropped
        if self._dedup.seen(ev.event_id, ev.ts):
            return [self._duplicate(ev)]
        self._profile.observe(ev.ts)
        out: list[UserOutput] = list(sessions.on_event(ev, arrival))
        if out:
            self._route(out)
        if ev.event_type in FEEDBACK_TYPES:
            feedback = self._profile.apply_feedback(ev)
            if feedback is not None:
                out.append(feedback)
                self._co_engagement(feedback, out)
        if self._emit_features and (out or ev.ts >= self._emitted_ts + self._refresh_ms):
            out.append(self._emit())
        else:
            self._pending = True
        return out

    def notify_at(self) -> datetime | None:
        """Processing time of the next idle view close, idle flush, or state expiry."""
        due = [from_ms(self._arrival_ms + self._ttl_ms)]
        if (views := self._sessions.notify_at()) is not None:
            due.append(views)
        if self._pending and self._emit_features:
            due.append(from_ms(self._arrival_ms + IDLE_FLUSH_S * 1000))
        return min(due)

    def on_timer(self, now: datetime | None = None) -> list[UserOutput]:
        """Close idle views (see :class:`Sessionizer`); emit their segments, and features when
        a view closed or the user has been quiet for `IDLE_FLUSH_S` with a record pending."""
        closed: list[UserOutput] = list(self._sessions.on_timer(now))
        self._route(closed)
        now_ms = to_ms(now if now is not None else self._clock())
        quiet = self._pending and now_ms >= self._arrival_ms + IDLE_FLUSH_S * 1000
        if (closed or quiet) and self._emit_features:
            closed.append(self._emit())
        return closed

    def flush(self) -> list[UserOutput]:
        """Close every open view (end of input) and emit the final features."""
        closed: list[UserOutput] = list(self._sessions.flush())
        self._route(closed)
        if (closed or self._pending) and self._emit_features:
            closed.append(self._emit())
        return closed

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when the state can be discarded: no open view, idle for `user_ttl_days`."""
        now_ms = to_ms(now if now is not None else self._clock())
        return self._sessions.open_views == 0 and now_ms - self._arrival_ms >= self._ttl_ms

    def features(self) -> UserFeatures:
        """The user's full feature record, open views blended in provisionally."""
        return self._profile.features(self._sessions.provisional(), self._positives.digests)

    def provisional(self) -> list[Segment]:
        """Segments of the user's open views as they stand."""
        return self._sessions.provisional()

    def snapshot(self) -> tuple[Any, ...]:
        """Plain immutable state of every part: the fields of :class:`UserState`, in order."""
        return (
            _SNAPSHOT_VERSION,
            self._dedup.snapshot(),
            self._sessions.snapshot(),
            self._profile.snapshot(),
            self._emitted_ts,
            self._positives.snapshot(),
            self._pending,
        )

    def _emit(self) -> UserFeatures:
        features = self.features()
        self._emitted_ts = features.ts
        self._pending = False
        return features

    def _route(self, emissions: list[UserOutput]) -> None:
        """Hand the sessionizer's emissions to the profile (and closed views to the
        co-engagement history, whose visits are appended)."""
        profile = self._profile
        for x in list(emissions):
            if isinstance(x, Segment):
                profile.apply_segment(x)
                if x.final:
                    self._co_engagement(x, emissions)
            elif isinstance(x, ViewStart):
                profile.on_view_start(x)
            elif isinstance(x, Dropped):
                profile.note_late()

    def _co_engagement(self, x: Segment | Feedback, out: list[UserOutput]) -> None:
        """Positive views and feedback extend the user's co-engagement history (a visit when
        the item is new to it); dislikes and skips take the item out."""
        if x.media_id is None:
            return
        if isinstance(x, Segment):
            positive = x.consumed_s > 0 and not x.early_abandon and not x.signals & _NOT_POSITIVE
            negative = bool(x.signals & _NOT_POSITIVE)
            ts = x.end_ts
        else:
            positive = x.signal in _POSITIVE_FEEDBACK
            negative = x.signal in _NEGATIVE_FEEDBACK
            ts = x.ts
        if positive:
            visit = self._positives.positive(x.media_id, ts)
            if visit is not None:
                out.append(visit)
        elif negative:
            self._positives.negative(x.media_id)

    def _duplicate(self, ev: EngagementEvent) -> Dropped:
        return Dropped(
            outcome="duplicate",
            reason="event_id already seen",
            user_id=ev.user_id,
            event_id=ev.event_id,
            event_type=ev.event_type,
            ts=ev.ts,
            lag_ms=max(self._sessions.watermark_ms - ev.ts, 0),
        )
