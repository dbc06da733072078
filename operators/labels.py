"""Training labels: a served feed joined with the engagement that followed it, per user.

An impression (`feed.impressions`) opens an attribution window of `window_ms` of event time.
Each of its items is labelled from the user's engagement with that item inside the window:

- positive: completed, liked, shared, added to a playlist, replayed, or watched ≥
  `long_watch_s` (the furthest position reported);
- negative: disliked (beats every positive), skipped, played but abandoned before
  `long_watch_s` (paused early, stopped), or shown and never played.

An engagement event counts for the most recent impression of this user that showed the item
at or before the event (last touch), so re-showing an item does not label both feeds.

Time is event time only. The user's watermark is the newest timestamp seen on either topic
minus `lateness_ms`; an input older than the watermark is late (dropped and counted), and an
impression closes once the watermark has passed the end of its window. So the labels depend
on the set of inputs, not on their arrival order, as long as no input trails the newest one
by more than the lateness: a replayed epoch, a reordering between the two topics, or a
duplicate (engagement is folded with idempotent max/or; impressions by `request_id`) gives
the same labels. A user who goes quiet has their open impressions closed by a processing-time
idle timer (`idle_s` without any input for the key); the timer is re-armed on restore, so
downtime never counts towards it, and a replay that runs at full speed does not trip it.

Example:
    >>> from operators.contracts import ImpressionItem
    >>> cfg = LabelConfig(window_ms=60_000, lateness_ms=0, long_watch_s=30.0, idle_s=600)
    >>> join = LabelJoin(cfg)
    >>> imp = Impression(request_id="r1", user_id="u1", ts=0, arm="a", model_version="v",
    ...     index_version="i", items=[ImpressionItem(media_id="m1", position=0, score=1.0,
    ...     source="ann"), ImpressionItem(media_id="m2", position=1, score=0.5, source="ann")])
    >>> join.on_event(imp)
    []
    >>> join.on_event(EngagementEvent(event_id="e1", event_type="media_liked", user_id="u1",
    ...     media_id="m1", ts=5_000))
    []
    >>> [(x.media_id, x.label, x.reason) for x in join.flush()[0].examples]
    [('m1', True, 'liked'), ('m2', False, 'not_played')]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from kernel.settings import Settings
from operators.contracts import EngagementEvent, Impression
from operators.emissions import Dropped, dropped
from operators.eventtime import Clock, utc_now
from operators.keyed import KeyedState

# Engagement codes, folded per (item, event) as a bit mask.
PLAYED: Final = 1 << 0
COMPLETED: Final = 1 << 1
REPLAY: Final = 1 << 2
LIKED: Final = 1 << 3
SHARED: Final = 1 << 4
PLAYLIST: Final = 1 << 5
SKIPPED: Final = 1 << 6
PAUSED_EARLY: Final = 1 << 7
DISLIKED: Final = 1 << 8

CODES: Final = {
    "media_started": PLAYED,
    "media_progress": PLAYED,
    "media_paused": PLAYED,
    "media_seeked": PLAYED,
    "media_stopped": PLAYED,
    "media_completed": PLAYED | COMPLETED,
    "media_replay": PLAYED | REPLAY,
    "media_skipped": SKIPPED,
    "media_paused_early": PLAYED | PAUSED_EARLY,
    "media_liked": LIKED,
    "media_disliked": DISLIKED,
    "media_shared": SHARED,
    "media_added_to_playlist": PLAYLIST,
}
# Strongest first: the reason a positive is recorded under.
POSITIVE_REASONS: Final = (
    (COMPLETED, "completed"),
    (LIKED, "liked"),
    (SHARED, "shared"),
    (PLAYLIST, "playlist"),
    (REPLAY, "replay"),
)
REASONS: Final = frozenset(
    {r for _, r in POSITIVE_REASONS}
    | {"long_watch", "disliked", "skipped", "abandoned", "not_played"}
)
# One media's entries per user; beyond it the oldest go (a client flooding one item).
MAX_ENTRIES_PER_ITEM: Final = 256
NO_POSITION: Final = -1

Outcome = Literal["late", "duplicate"]
Entry = tuple[int, int, int]  # (ts ms, code bits, position in whole seconds or -1)


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """How impressions are labelled (see module doc)."""

    window_ms: int = 30 * 60_000
    lateness_ms: int = 10 * 60_000
    long_watch_s: float = 60.0
    idle_s: float = 3600.0


def label_config(s: Settings) -> LabelConfig:
    """Label windows from settings (the learning flow's, and the training export's)."""
    return LabelConfig(
        window_ms=s.label_window_s * 1000, lateness_ms=s.label_lateness_s * 1000,
        long_watch_s=s.label_long_watch_s, idle_s=s.label_idle_s,
    )  # fmt: skip


def label_of(codes: int, max_position_s: int, long_watch_s: float) -> tuple[bool, str]:
    """The label and its reason from an item's folded engagement inside its window.

    Example:
        >>> label_of(PLAYED | DISLIKED | COMPLETED, 100, 60.0), label_of(PLAYED, 61, 60.0)
        ((False, 'disliked'), (True, 'long_watch'))
    """
    if codes & DISLIKED:
        return False, "disliked"
    for bit, reason in POSITIVE_REASONS:
        if codes & bit:
            return True, reason
    if max_position_s >= long_watch_s:
        return True, "long_watch"
    if codes & SKIPPED:
        return False, "skipped"
    if codes & PLAYED:
        return False, "abandoned"
    return False, "not_played"


class Example(msgspec.Struct, frozen=True, array_like=True):
    """One labelled slot: the features serving scored the item with, and what followed."""

    media_id: str
    position: int
    features: tuple[float, ...]
    label: bool
    reason: str


class LabelledImpression(msgspec.Struct, frozen=True, kw_only=True):
    """A closed impression with one example per served item."""

    request_id: str
    user_id: str
    ts: int
    arm: str
    model_version: str
    examples: tuple[Example, ...]


class _Open(msgspec.Struct, frozen=True, array_like=True):
    """An impression waiting for its window to pass (the snapshot form, too)."""

    request_id: str
    ts: int
    arm: str
    model_version: str
    items: tuple[tuple[str, int, tuple[float, ...]], ...]  # (media id, position, features)

    @property
    def order(self) -> tuple[int, str]:
        return self.ts, self.request_id


_LABEL_STATE_VERSION: Final = 2
_Entries = tuple[tuple[str, tuple[Entry, ...]], ...]


class LabelState(msgspec.Struct, frozen=True):
    """What :class:`LabelJoin` keeps for a user. Bytewax pickles it as the plain tuple of
    these fields in this order (a struct pickles several times slower); the order is the
    recovery format, pinned by a test: a new field goes last, with a default."""

    version: int = _LABEL_STATE_VERSION
    user_id: str = ""
    max_ts: int | None = None
    open: tuple[_Open, ...] = ()
    entries: _Entries = ()


# Version 1 was the tuple (max_ts, open, entries), without a version or the user: resumed
# with the user unknown until their next input.
LabelSnapshot = LabelState | tuple[Any, ...]


def label_state(resume: LabelSnapshot) -> LabelState:
    """A snapshot of any version as the current :class:`LabelState`.

    Raises:
        ValueError: a version this code does not know (written by a newer release).
    """
    if isinstance(resume, LabelState):
        state = resume
    elif len(resume) == 3:
        max_ts, opened, entries = resume
        state = LabelState(version=1, max_ts=max_ts, open=opened, entries=entries)
    else:
        state = LabelState(*resume)
    if state.version > _LABEL_STATE_VERSION:
        raise ValueError(
            f"LabelJoin: snapshot version {state.version} is newer than this code "
            f"({_LABEL_STATE_VERSION}); run the release that wrote it, or rebuild"
        )
    return state


class LabelJoin(KeyedState["Impression | EngagementEvent", Any]):
    """One user's open impressions and recent engagement (keyed state; see module doc).

    Args:
        config: windows and thresholds.
        resume: a :meth:`snapshot`, or None for a new user.
        clock: processing time, read only for the idle timer.
    """

    def __init__(
        self, config: LabelConfig, resume: LabelSnapshot | None = None, clock: Clock = utc_now
    ) -> None:
        self.config, self._clock = config, clock
        self.user_id = ""
        self.max_ts: int | None = None
        self.open: dict[str, _Open] = {}
        self.entries: dict[str, list[Entry]] = {}
        if resume is not None:
            state = label_state(resume)
            self.user_id, self.max_ts = state.user_id, state.max_ts
            self.open = {o.request_id: o for o in state.open}
            self.entries = {m: list(es) for m, es in state.entries}
        self._idle_at = self._clock() + timedelta(seconds=config.idle_s)

    # -- input ---------------------------------------------------------------------------

    def on_event(self, value: Impression | EngagementEvent) -> list[Any]:
        """Take one impression or engagement event; return closed impressions and drops."""
        self.user_id = value.user_id
        self._idle_at = self._clock() + timedelta(seconds=self.config.idle_s)
        wm = self.watermark
        if wm is not None and value.ts < wm:
            return [self._dropped(value, "late", f"older than the watermark by {wm - value.ts} ms")]
        if isinstance(value, Impression):
            if value.request_id in self.open:
                return [self._dropped(value, "duplicate", "impression already open")]
            self.open[value.request_id] = _Open(
                value.request_id, value.ts, value.arm, value.model_version,
                tuple((i.media_id, i.position, tuple(i.features)) for i in value.items),
            )  # fmt: skip
        else:
            self._add_entry(value)
        if self.max_ts is None or value.ts > self.max_ts:
            self.max_ts = value.ts
        return self._close_due()

    def _add_entry(self, ev: EngagementEvent) -> None:
        code = CODES.get(ev.event_type, 0)
        if not code or ev.media_id is None:
            return
        pos = NO_POSITION if ev.position_s is None else int(ev.position_s)
        entry = (ev.ts, code, pos)
        entries = self.entries.setdefault(ev.media_id, [])
        if entry in entries:
            return  # a duplicate folds to the same label anyway; keep state small
        entries.append(entry)
        if len(entries) > MAX_ENTRIES_PER_ITEM:
            entries.remove(min(entries))

    def _dropped(
        self, value: Impression | EngagementEvent, outcome: Outcome, reason: str
    ) -> Dropped:
        return dropped(value, outcome, reason, (self.max_ts or value.ts) - value.ts)

    # -- closing -------------------------------------------------------------------------

    @property
    def watermark(self) -> int | None:
        """Event time before which inputs are late (None before the first input)."""
        return None if self.max_ts is None else self.max_ts - self.config.lateness_ms

    def _close_due(self) -> list[Any]:
        wm = self.watermark
        assert wm is not None
        due = [o for o in self.open.values() if o.ts + self.config.window_ms < wm]
        out = self._close(due)
        self._prune(wm)
        return out

    def _close(self, closing: Iterable[_Open]) -> list[Any]:
        ordered = sorted(closing, key=lambda o: o.order)
        # Labels are computed against every impression still open, including the ones
        # closing now, so last-touch attribution sees each later showing of an item.
        out = [self._label(o) for o in ordered]
        for o in ordered:
            del self.open[o.request_id]
        return out

    def _prune(self, wm: int) -> None:
        """Forget engagement no open or future (non-late) impression can use."""
        keep_from = min([wm, *(o.ts for o in self.open.values())])
        for media_id in list(self.entries):
            kept = [e for e in self.entries[media_id] if e[0] >= keep_from]
            if kept:
                self.entries[media_id] = kept
            else:
                del self.entries[media_id]

    def _label(self, imp: _Open) -> LabelledImpression:
        end = imp.ts + self.config.window_ms
        examples = []
        for media_id, position, features in imp.items:
            # The event belongs to a later showing of the same item from that showing on.
            later = [
                o.ts for o in self.open.values()
                if o.order > imp.order and any(m == media_id for m, _, _ in o.items)
            ]  # fmt: skip
            until = min([end, *(ts - 1 for ts in later)]) if later else end
            codes, furthest = 0, NO_POSITION
            for ts, code, pos in self.entries.get(media_id, ()):
                if imp.ts <= ts <= until:
                    codes |= code
                    furthest = max(furthest, pos)
            label, reason = label_of(codes, furthest, self.config.long_watch_s)
            examples.append(Example(media_id, position, features, label, reason))
        return LabelledImpression(
            request_id=imp.request_id, user_id=self.user_id, ts=imp.ts, arm=imp.arm,
            model_version=imp.model_version, examples=tuple(examples),
        )  # fmt: skip

    # -- timers and end ------------------------------------------------------------------

    def notify_at(self) -> datetime | None:
        """When the idle timer fires (processing time)."""
        return self._idle_at

    def on_timer(self, now: datetime) -> list[Any]:
        """Close everything still open once the user has been idle for `idle_s`."""
        if now < self._idle_at or not self.open:
            return []
        out = self._close(list(self.open.values()))
        self.entries.clear()
        return out

    def is_expired(self, now: datetime) -> bool:
        """Nothing open and idle: the key's state can go."""
        return now >= self._idle_at and not self.open

    def flush(self) -> list[Any]:
        """Close every open impression (end of input)."""
        return self._close(list(self.open.values()))

    def snapshot(self) -> tuple[Any, ...]:
        """The fields of :class:`LabelState`, in order: the user, watermark input, open
        impressions and engagement entries."""
        return (
            _LABEL_STATE_VERSION,
            self.user_id,
            self.max_ts,
            tuple(self.open.values()),
            tuple((m, tuple(es)) for m, es in self.entries.items()),
        )
