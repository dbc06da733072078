"""One week of engagement events → every user's :class:`WeekTally` and the cohort tally.

Views are rebuilt with the engagement flow's own :class:`~operators.playback.Sessionizer`,
so a week's "engagement" means what it means everywhere else (seconds actually played, the
duration-debiased watch score, completion, skips); explicit feedback counts once per (user,
item, signal). A client's retry of an event (its `event_id` again, among the user's last
:data:`DEDUP_IDS` within the flow's dedup window) counts once, as in the engagement flow, so
the week reads the same from the topic (retries as the broker got them) and from the lake.
Events outside the week are not applied; a view still open at the end of the input is closed
as it stands. A user's sessionizer is dropped whenever it has no open view,
so memory holds one small tally per active user plus the views open at that moment.

Example:
    >>> from operators.contracts import EngagementEvent
    >>> from operators.item_info import ItemInfo, lookup_from
    >>> from kernel.settings import Settings
    >>> from operators.weekly_weights import week_span
    >>> items = lookup_from({"m1": ItemInfo("m1", duration_s=60.0, category="news",
    ...                                     content_type="VIDEO")})
    >>> start, end = week_span("2023-W46")
    >>> week = WeekAggregator(Settings(), items, start, end)
    >>> for n, (kind, pos) in enumerate([("media_started", 0), ("media_completed", 60)]):
    ...     week.add(EngagementEvent(event_id=f"e{n}", event_type=kind, user_id="u1",
    ...                              media_id="m1", ts=start + pos * 1000, position_s=pos,
    ...                              device="tv", language="en"))
    >>> tally = week.finish()["u1"]
    >>> tally.categories, tally.video, sorted(week.cohorts.cells)
    ({'news': 1.6}, 1.6, [('en|VIDEO|tv', 'm1')])
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from kernel.settings import Settings
from operators.cold_start import CohortTally, cohort_key
from operators.contracts import FEEDBACK_TYPES, EngagementEvent
from operators.dedup import EventDedup, id_hash32
from operators.emissions import Dropped, Segment
from operators.item_info import ItemInfo, ItemLookup
from operators.playback import Sessionizer
from operators.signals import EVENT_SIGNAL, SignalWeights
from operators.weekly_weights import FRESH_MS, WeekTally

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Ids a user's dedup keeps: retries come within seconds of the original, and a week's users
# are millions (8 bytes an id each; the flow keeps 128 against a retry storm).
DEDUP_IDS: Final = 16


def _epoch() -> datetime:
    # A batch never waits on timers: views close on the users' own event time or at the end.
    return _EPOCH


class _User:
    __slots__ = ("dedup", "device", "feedback", "language", "session", "tally")

    def __init__(self, window_s: int) -> None:
        self.dedup = EventDedup(DEDUP_IDS, window_s)
        self.tally = WeekTally()
        self.session: Sessionizer | None = None
        self.feedback: set[int] = set()
        self.language: str | None = None
        self.device: str | None = None


class WeekAggregator:
    """Tallies of every user active in `[start_ms, end_ms)` (see module doc).

    Args:
        settings: lateness, view inactivity and the signal weights.
        items: item metadata (category, type, duration, publication time).
        start_ms: the week's first millisecond.
        end_ms: the first millisecond after the week.
        cohorts: where cohort × item mass goes (a new tally by default).
    """

    def __init__(
        self,
        settings: Settings,
        items: ItemLookup,
        start_ms: int,
        end_ms: int,
        cohorts: CohortTally | None = None,
    ) -> None:
        self._settings, self._items = settings, items
        self._weights = SignalWeights.from_settings(settings)
        self.start_ms, self.end_ms = start_ms, end_ms
        self.cohorts = cohorts if cohorts is not None else CohortTally()
        self._users: dict[str, _User] = {}
        self.events = self.outside = self.late = self.duplicates = 0

    def add(self, ev: EngagementEvent) -> None:
        """Apply one event (ignored, and counted, outside the week)."""
        if not self.start_ms <= ev.ts < self.end_ms:
            self.outside += 1
            return
        user = self._users.get(ev.user_id)
        if user is None:
            user = self._users[ev.user_id] = _User(self._settings.dedup_window_s)
        if user.dedup.seen(ev.event_id, ev.ts):
            self.duplicates += 1
            return
        self.events += 1
        if ev.language:
            user.language = ev.language
        if ev.device:
            user.device = ev.device
        if ev.event_type in FEEDBACK_TYPES:
            self._feedback(user, ev)
            return
        session = user.session
        if session is None:
            session = user.session = Sessionizer(self._settings, self._items, clock=_epoch)
        for out in session.on_event(ev, arrival_ms=0):
            if isinstance(out, Segment):
                self._segment(user, out)
            elif isinstance(out, Dropped):
                self.late += 1
        if session.open_views == 0:
            user.session = None

    def finish(self) -> dict[str, WeekTally]:
        """Close the views still open and return every user's tally."""
        for user in self._users.values():
            if user.session is not None:
                for seg in user.session.flush():
                    if isinstance(seg, Segment):
                        self._segment(user, seg)
                user.session = None
        return {user_id: user.tally for user_id, user in self._users.items()}

    def _feedback(self, user: _User, ev: EngagementEvent) -> None:
        name = EVENT_SIGNAL.get(ev.event_type)
        if name is None or ev.media_id is None:
            return  # a subscription names a creator, not an item of a category
        key = id_hash32(f"{name}\x00{ev.media_id}")
        if key in user.feedback:
            return
        user.feedback.add(key)
        item = self._items(ev.media_id)
        kind = ev.content_type or (item.content_type if item is not None else None)
        self._credit(user, ev.media_id, item, kind, self._weights.of(name), ev.ts)

    def _segment(self, user: _User, seg: Segment) -> None:
        item = self._items(seg.media_id)
        kind = seg.content_type or (item.content_type if item is not None else None)
        mass = self._weights.view_weight(seg.signals, seg.watch_score)
        self._credit(user, seg.media_id, item, kind, mass, seg.start_ts)

    def _credit(
        self,
        user: _User,
        media_id: str,
        item: ItemInfo | None,
        kind: str | None,
        mass: float,
        ts: int,
    ) -> None:
        if not mass > 0.0:
            return
        category = item.category if item is not None else None
        published = item.published_at if item is not None else None
        fresh = published is not None and 0 <= ts - published < FRESH_MS
        user.tally.add(category, kind, mass, fresh)
        language = user.language or (item.language if item is not None else None)
        self.cohorts.add(cohort_key(language, kind, user.device), media_id, mass)
