"""Per-user profile: long- and short-horizon features from closed views and feedback.

Keyed by user, fed by the sessionizer's output and the user's accepted events. Everything
runs on the user's event time `W` (the newest `ts` observed), so a replay of a years-old file
gives the features the live run gave.

- **Decays**, not wall-clock windows: categories, creators, content types and the user vector
  decay with a 7-day time constant, languages and the hour-of-day pattern with 28 days, all
  as forward-decayed sums (:mod:`operators.decay`), so the order in which segments arrive
  does not matter. Counts that are read as rates (`completion_rate_7d`) use day buckets.
- **User vector**: each closed view adds `w × item_vector`, `w` from the view's playback
  signals and its duration-debiased watch score
  (:meth:`~operators.signals.SignalWeights.view_weight`); explicit feedback adds its own
  weight once per item. Negative weights push the vector away from the item.
- **Idempotence**: a segment is applied once per view key (media id + open time), explicit
  feedback once per (item, signal) while the item is among the last
  :data:`MAX_ITEMS` items, a subscription once per creator among the last
  :data:`MAX_SUBSCRIPTIONS` (the count of subscriptions counts each of those once; a creator
  subscribed to again after 32 others counts twice). Applying the same thing again changes
  nothing.
- **Late events** are decided upstream (:class:`~operators.playback.Sessionizer`): they are
  counted here (`late_events`) and reported, never applied.
- **Open views** are not applied; :meth:`UserProfile.features` blends their provisional
  segments into the short-horizon fields (recent, continue watching, 30-minute genres,
  engagement count) so live features move with every heartbeat without double counting.

Example:
    >>> from operators.item_info import ItemInfo, lookup_from
    >>> from kernel.settings import Settings
    >>> p = UserProfile(Settings(), lookup_from({"m1": ItemInfo("m1", category="news")}))
    >>> p.observe(0)
    >>> seg = Segment(user_id="u1", media_id="m1", start_ts=0, end_ts=60_000,
    ...               consumed_s=60.0, dwell_s=60.0, max_position_s=60.0,
    ...               last_position_s=60.0, duration_s=None, watch_fraction=None,
    ...               completed=True, early_abandon=False, replays=0, signals=3,
    ...               watch_score=0.4)
    >>> p.apply_segment(seg), p.apply_segment(seg)
    (True, False)
    >>> f = p.features()
    >>> f.engagements, f.top_categories, f.recent, f.completion_rate_7d
    (1, ('news',), ('m1',), 1.0)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np

from kernel.settings import Settings
from operators import signals
from operators.buckets import BucketRing
from operators.contracts import FEEDBACK_TYPES, EngagementEvent
from operators.decay import DecayedScores, DecayedVector
from operators.dedup import EventDedup, RecentIds, hashes
from operators.emissions import Feedback, Segment, ViewStart
from operators.item_info import ItemInfo, ItemLookup
from operators.signals import SignalWeights
from operators.user_features import FEATURES_VERSION, UserFeatures, vector_bytes

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
TAU_7D_MS: Final = 7 * DAY_MS
TAU_28D_MS: Final = 28 * DAY_MS
GENRE_WINDOW_MS: Final = 30 * 60_000
MAX_ITEMS: Final = 32
MAX_CONSUMED: Final = 64
MAX_DISLIKED: Final = 16
MAX_SUBSCRIPTIONS: Final = 32
MAX_SESSION_ITEMS: Final = 64
MAX_RECENT_SEGMENTS: Final = 16
MIXED_SHARE: Final = 0.7
CONTINUE_MIN_S: Final = 30.0
RECORD_TOP: Final = 3
RECORD_RECENT: Final = 3
RECORD_CONTINUE: Final = 2
RECORD_CONSUMED: Final = 16
RECORD_DISLIKED: Final = 8

# Item table: media id -> [touched_ts, applied feedback bits, state, resume position ds,
# state_ts]; states are ordered so a later one wins between views closing at the same time.
NONE, SEEN, IN_PROGRESS, FINISHED = range(4)
TOUCHED, BITS, STATE, POSITION, STATE_TS = range(5)
_BLOCKS_CONTINUE: Final = signals.bit("disliked") | signals.bit("skipped")
_SNAPSHOT_VERSION: Final = 2  # 2: the cold part deflated (1: plain msgpack)
_encode = msgspec.msgpack.Encoder().encode
# The cold part changes only when a view closes, feedback lands or a session starts, and is
# cached in between: deflating it then (~15 µs) saves ~40 % of its bytes in every snapshot.
_DEFLATE_LEVEL: Final = 1  # level 6 saves 2 % more bytes for 30 % more time


class ProfileCold(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The slow-changing part of a profile as snapshotted, named in code and positional in
    msgpack (as compact as a tuple: it is written for every user at every snapshot). The
    field order is the recovery format, pinned by a test: a new field goes last, with a
    default; the version is the snapshot's (:class:`operators.user_engagement.UserState`)."""

    engagements: int = 0
    vector: Any = None
    categories: Any = None
    creators: Any = None
    languages: Any = None
    content_types: Any = None
    hours: Any = None
    sessions: Any = None
    days: Any = None
    recent_segments: tuple[tuple[int, str, float], ...] = ()
    table: tuple[tuple[Any, ...], ...] = ()
    consumed: bytes = b""
    disliked: bytes = b""
    subscriptions: bytes = b""
    applied: Any = None
    subscription_count: int = 0  # creators subscribed to (appended: older snapshots have 0)


_cold_decoder = msgspec.msgpack.Decoder(ProfileCold)


class UserProfile:
    """Features of one user, updated by closed views, view starts and feedback.

    Args:
        settings: `view_inactivity_s` (session gap), `embedding_dim`, signal weights.
        items: item metadata lookup (vectors, categories, creators, languages).
        resume: a value returned by :meth:`snapshot`, or None for a new user.
    """

    def __init__(self, settings: Settings, items: ItemLookup, resume: Any = None):
        self._items = items
        self._weights = SignalWeights.from_settings(settings)
        self._gap_ms = settings.view_inactivity_s * 1000
        self._dim = settings.embedding_dim
        self._ttl_s = settings.user_ttl_days * 86_400
        self._wm = self._late = self._sess_start = self._sess_last = -1
        self._cold: dict[str, Any] | None = None
        self._cold_snap: bytes | None = None
        hot, cold = resume if resume is not None else (None, None)
        version = self._resume_hot(hot)
        self._resume_cold(cold, deflated=version >= 2)

    @property
    def watermark_ms(self) -> int:
        """The user's event time (-1 before any event)."""
        return self._wm

    def observe(self, ts_ms: int) -> None:
        """Note an accepted event of the user at `ts_ms` (event time and sessions)."""
        self._wm = max(self._wm, ts_ms)
        if self._sess_last < 0:
            self._sess_start = self._sess_last = ts_ms
        elif ts_ms > self._sess_last + self._gap_ms:
            duration_s = (self._sess_last - self._sess_start) / 1000
            self._sessions.add("seconds", duration_s, self._sess_last)
            self._sessions.add("count", 1.0, self._sess_last)
            self._sess_start = self._sess_last = ts_ms
            self._sess_items = RecentIds(MAX_SESSION_ITEMS)
            self._changed()
        elif ts_ms >= self._sess_start - self._gap_ms:
            self._sess_start = min(self._sess_start, ts_ms)
            self._sess_last = max(self._sess_last, ts_ms)

    def note_late(self) -> None:
        """Count one event that was not applied because it was late."""
        self._late += 1

    def on_view_start(self, start: ViewStart) -> None:
        """Count the item towards the current session's binge depth."""
        self._sess_items.push(start.media_id)

    def apply_segment(self, seg: Segment) -> bool:
        """Apply one closed view; False (and no change) if this view was already applied."""
        if not seg.final:
            raise ValueError(f"UserProfile.apply_segment: {seg.view_key} is provisional")
        if self._applied.seen(seg.view_key, seg.end_ts):
            return False
        self._changed()
        self._wm = max(self._wm, seg.end_ts)
        self._engagements += 1
        item = self._items(seg.media_id)
        weight = self._weights.view_weight(seg.signals, seg.watch_score)
        self._apply_item_taste(item, weight, seg.consumed_s, seg.end_ts)
        kind = (item.content_type if item is not None else None) or seg.content_type
        if kind is not None and seg.consumed_s > 0:
            self._content_types.add(kind, seg.consumed_s, seg.end_ts)
        hour = (seg.start_ts // HOUR_MS) % 24
        self._hours.add_at(hour, seg.consumed_s, seg.end_ts)
        self._days.add_row(seg.end_ts, (1.0, 1.0 if seg.completed else 0.0))
        category = item.category if item is not None else None
        self._recent_segments.append((seg.end_ts, category or "", seg.consumed_s))
        self._recent_segments.sort()
        del self._recent_segments[:-MAX_RECENT_SEGMENTS]
        if seg.consumed_s > 0:
            self._consumed.push(seg.media_id)
        self._update_item(seg)
        return True

    def apply_feedback(self, ev: EngagementEvent) -> Feedback | None:
        """Apply one explicit feedback event; None if it was already applied (or unknown)."""
        name = signals.EVENT_SIGNAL.get(ev.event_type)
        if name is None or ev.event_type not in FEEDBACK_TYPES:
            return None
        if name == "subscribed":
            return self._subscribe(ev)
        media = ev.media_id
        if media is None:
            return None
        entry = self._entry(media)
        bit = signals.bit(name)
        if entry[BITS] & bit:
            return None
        self._changed()
        self._wm = max(self._wm, ev.ts)
        entry[TOUCHED] = max(entry[TOUCHED], ev.ts)
        entry[BITS] |= bit
        self._engagements += 1
        item = self._items(media)
        self._apply_item_taste(item, self._weights.of(name), 0.0, ev.ts)
        if name == "disliked":
            self._disliked.push(media)
        creator = item.creator_id if item is not None else None
        return Feedback(
            user_id=ev.user_id, signal=name, ts=ev.ts, media_id=media, creator_id=creator
        )

    def features(self, provisional: Sequence[Segment] = (), co_recent: bytes = b"") -> UserFeatures:
        """The full feature record at the user's event time, open views blended in;
        `co_recent` is kept by the caller (:class:`operators.co_engagement.RecentPositives`)."""
        cold = self._cold_features()
        open_ids = [s.media_id for s in provisional]
        return UserFeatures(
            version=FEATURES_VERSION,
            ts=self._wm,
            engagements=self._engagements + len(provisional),
            late_events=self._late,
            vector=cold["vector"],
            top_categories=cold["top_categories"],
            genre_affinity_30m=self._genres_30m(provisional),
            creators=cold["creators"],
            language=cold["language"],
            content_type=cold["content_type"],
            completion_rate_7d=self._completion_rate(cold),
            avg_session_s=self._avg_session_s(),
            binge_depth=len(self._sess_items),
            hours=cold["hours"],
            recent=self._recent(open_ids, cold["recent"]),
            continue_watching=self._continue(provisional, cold["continue"]),
            consumed=cold["consumed"],
            disliked=cold["disliked"],
            co_recent=co_recent,
            subscriptions=self._subscription_count,
        )

    def snapshot(self) -> tuple[tuple[Any, ...], bytes]:
        """Plain immutable state: a small tuple, and msgpack bytes of the slow-changing part
        (cached between the changes that touch it)."""
        hot = (
            _SNAPSHOT_VERSION,
            self._wm,
            self._late,
            self._sess_start,
            self._sess_last,
            self._sess_items.snapshot(),
        )
        if self._cold_snap is None:
            self._cold_snap = zlib.compress(_encode(self._snapshot_cold()), _DEFLATE_LEVEL)
        return hot, self._cold_snap

    # -- updates ---------------------------------------------------------------------------

    def _apply_item_taste(
        self, item: ItemInfo | None, weight: float, seconds: float, ts: int
    ) -> None:
        if item is None:
            return
        if item.vector is not None and weight != 0.0:
            if item.vector.shape != (self._dim,):
                raise ValueError(
                    f"UserProfile: item {item.media_id} vector has shape {item.vector.shape},"
                    f" expected ({self._dim},) (settings.embedding_dim)"
                )
            self._vector.add(item.vector, weight, ts)
        if item.creator_id is not None and weight != 0.0:
            self._creators.add(item.creator_id, weight, ts)
        if seconds > 0:
            if item.category is not None:
                self._categories.add(item.category, seconds, ts)
            if item.language is not None:
                self._languages.add(item.language, seconds, ts)

    def _subscribe(self, ev: EngagementEvent) -> Feedback | None:
        creator = ev.creator_id
        if creator is None or creator in self._subscriptions:
            return None
        self._changed()
        self._wm = max(self._wm, ev.ts)
        self._subscriptions.push(creator)
        self._subscription_count += 1
        self._engagements += 1
        self._creators.add(creator, self._weights.subscribed, ev.ts)
        return Feedback(user_id=ev.user_id, signal="subscribed", ts=ev.ts, creator_id=creator)

    def _changed(self) -> None:
        self._cold = None
        self._cold_snap = None

    def _entry(self, media: str) -> list[int]:
        """The item-table row of `media`, created if needed (evicting the stalest row)."""
        entry = self._table.get(media)
        if entry is None:
            entry = self._table[media] = [-1, 0, NONE, 0, -1]
            if len(self._table) > MAX_ITEMS:
                oldest = min(self._table, key=lambda k: (self._table[k][TOUCHED], k))
                del self._table[oldest]
        return entry

    def _update_item(self, seg: Segment) -> None:
        entry = self._entry(seg.media_id)
        entry[TOUCHED] = max(entry[TOUCHED], seg.end_ts)
        if seg.completed:
            state = FINISHED
        elif seg.consumed_s >= CONTINUE_MIN_S and not seg.signals & _BLOCKS_CONTINUE:
            state = IN_PROGRESS
        else:
            state = SEEN if seg.consumed_s > 0 else NONE
        if (seg.end_ts, state) >= (entry[STATE_TS], entry[STATE]):
            entry[STATE_TS] = seg.end_ts
            entry[STATE] = state
            entry[POSITION] = round(seg.last_position_s * 10)

    # -- reads -----------------------------------------------------------------------------

    def _cold_features(self) -> dict[str, Any]:
        if self._cold is not None:
            return self._cold
        cold = self._cold = self._build_cold()
        return cold

    def _build_cold(self) -> dict[str, Any]:
        by_time = sorted(self._table.items(), key=lambda kv: (-kv[1][STATE_TS], kv[0]))
        recent: list[tuple[str, int]] = []
        blocked: set[str] = set()
        cont: list[tuple[str, int]] = []
        for media, row in by_time:
            if row[BITS] & _BLOCKS_CONTINUE:
                blocked.add(media)
            elif row[STATE] == IN_PROGRESS:
                cont.append((media, row[POSITION] // 10))
            if row[STATE] != NONE:
                recent.append((media, row[STATE_TS]))
        hours = self._hours.direction()  # shapes and rankings do not depend on the decay factor
        top = float(hours.max())
        return {
            "vector": vector_bytes(self._vector.direction()),
            "top_categories": tuple(k for k, _ in self._categories.ranked(RECORD_TOP)),
            "creators": hashes(k for k, _ in self._creators.ranked(RECORD_TOP)),
            "language": next((k for k, _ in self._languages.ranked(1)), None),
            "content_type": self._content_type(),
            "hours": bytes(np.round(hours * (255 / top)).astype(np.uint8)) if top > 0 else b"",
            "recent": tuple(recent),
            "continue": tuple(cont),
            "blocked": blocked,
            "consumed": self._consumed.newest(RECORD_CONSUMED),
            "disliked": self._disliked.newest(RECORD_DISLIKED),
        }

    def _content_type(self) -> str | None:
        shares = self._content_types.ranked(4)
        total = sum(v for _, v in shares)
        if total <= 0:
            return None
        kind, best = shares[0]
        return kind if best / total >= MIXED_SHARE else "MIXED"

    def _completion_rate(self, cold: dict[str, Any]) -> float | None:
        day = self._wm // DAY_MS
        if cold.get("completion_day") != day:  # the 7-day window only moves once a day
            views, completed = self._days.totals(self._wm, span=7)
            cold["completion_rate"] = round(completed / views, 4) if views > 0 else None
            cold["completion_day"] = day
        rate: float | None = cold["completion_rate"]
        return rate

    def _avg_session_s(self) -> int:
        """Decayed mean length of closed sessions; the current one's until one closes."""
        count = self._sessions.value("count", self._wm)
        if count > 0:
            return round(self._sessions.value("seconds", self._wm) / count)
        return (self._sess_last - self._sess_start) // 1000 if self._sess_last >= 0 else 0

    def _recent(self, open_ids: list[str], stored: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
        since = self._wm - TAU_7D_MS
        ids = list(open_ids)
        for media, ts in stored:  # newest first
            if ts < since or len(ids) >= RECORD_RECENT + len(open_ids):
                break
            ids.append(media)
        return tuple(dict.fromkeys(ids))[:RECORD_RECENT]

    def _genres_30m(self, provisional: Sequence[Segment]) -> tuple[str, ...]:
        since = self._wm - GENRE_WINDOW_MS
        seconds: dict[str, float] = {}
        for end_ts, category, secs in reversed(self._recent_segments):  # oldest last
            if end_ts < since:
                break
            if category:
                seconds[category] = seconds.get(category, 0.0) + secs
        for seg in provisional:
            item = self._items(seg.media_id)
            if item is not None and item.category and seg.end_ts >= since:
                seconds[item.category] = seconds.get(item.category, 0.0) + seg.consumed_s
        ranked = sorted(seconds.items(), key=lambda kv: (-kv[1], kv[0]))
        return tuple(k for k, v in ranked if v > 0)[:2]

    def _continue(
        self, provisional: Sequence[Segment], stored: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, int], ...]:
        blocked = self._cold_features()["blocked"]
        live = [
            (s.media_id, int(s.last_position_s))
            for s in provisional
            if s.consumed_s >= CONTINUE_MIN_S
            and not s.completed
            and not s.signals & _BLOCKS_CONTINUE
            and s.media_id not in blocked
        ]
        open_ids = {s.media_id for s in provisional}
        rest = [c for c in stored if c[0] not in open_ids]
        return tuple(live + rest)[:RECORD_CONTINUE]

    # -- state -----------------------------------------------------------------------------

    def _resume_hot(self, hot: tuple[Any, ...] | None) -> int:
        """Resume the hot part; return the snapshot's version."""
        if hot is None:
            hot = (_SNAPSHOT_VERSION, -1, 0, -1, -1, b"")
        if hot[0] not in (1, _SNAPSHOT_VERSION):
            raise ValueError(f"UserProfile: snapshot version {hot[0]} is not supported")
        version, self._wm, self._late, self._sess_start, self._sess_last, items = hot
        self._sess_items = RecentIds(MAX_SESSION_ITEMS, items)
        return int(version)

    def _resume_cold(self, cold: bytes | None, deflated: bool) -> None:
        if cold is None:
            c = ProfileCold()
        else:
            c = _cold_decoder.decode(zlib.decompress(cold) if deflated else cold)
        self._engagements = c.engagements
        self._vector = DecayedVector(self._dim, TAU_7D_MS, c.vector)
        self._categories = DecayedScores(TAU_7D_MS, 16, c.categories)
        self._creators = DecayedScores(TAU_7D_MS, 16, c.creators)
        self._languages = DecayedScores(TAU_28D_MS, 6, c.languages)
        self._content_types = DecayedScores(TAU_7D_MS, 4, c.content_types)
        self._hours = DecayedVector(24, TAU_28D_MS, c.hours)
        self._sessions = DecayedScores(TAU_7D_MS, 2, c.sessions)
        self._days = BucketRing(DAY_MS, 8, 2, c.days)
        self._recent_segments: list[tuple[int, str, float]] = list(c.recent_segments)
        self._table: dict[str, list[int]] = {m: list(row) for m, *row in c.table}
        self._consumed = RecentIds(MAX_CONSUMED, c.consumed)
        self._disliked = RecentIds(MAX_DISLIKED, c.disliked)
        self._subscriptions = RecentIds(MAX_SUBSCRIPTIONS, c.subscriptions)
        self._subscription_count = c.subscription_count
        self._applied = EventDedup(MAX_ITEMS, self._ttl_s, c.applied)
        self._cold = None
        self._cold_snap = cold if deflated else None

    def _snapshot_cold(self) -> ProfileCold:
        return ProfileCold(
            engagements=self._engagements,
            vector=self._vector.snapshot(),
            categories=self._categories.snapshot(),
            creators=self._creators.snapshot(),
            languages=self._languages.snapshot(),
            content_types=self._content_types.snapshot(),
            hours=self._hours.snapshot(),
            sessions=self._sessions.snapshot(),
            days=self._days.snapshot(),
            recent_segments=tuple(self._recent_segments),
            table=tuple((m, *row) for m, row in self._table.items()),
            consumed=self._consumed.snapshot(),
            disliked=self._disliked.snapshot(),
            subscriptions=self._subscriptions.snapshot(),
            applied=self._applied.snapshot(),
            subscription_count=self._subscription_count,
        )
