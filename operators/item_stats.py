"""Per-item engagement stats and trending score, on the item's own event time.

Keyed by media id. Fed by the user logic's :class:`ViewStart` (a play, counted the moment a
view opens), :class:`Segment` (a closed view: completion, watch fraction) and
:class:`Feedback` (likes, dislikes, shares), re-keyed by media id. Windows are explicit
event-time buckets (:mod:`operators.buckets`): 60 one-minute buckets for `views_1h`, 24
one-hour buckets for the 24-hour counts; totals since the state was created (it lives
`item_ttl_days` after the item's last event) for the ratios.

`trending_score = views_1h × recency_weight × engagement_multiplier`, where

- `recency_weight = max(0.5 ** (age_h / trending_half_life_h), 0.05)` with the age taken
  from `published_at` to the item's event time (0.5 when the publication time is unknown);
- `engagement_multiplier = clamp(1 + completion_rate_24h + (likes + shares − dislikes) /
  plays over 24 h, 0.5, 3)`.

`popularity` is the long-horizon signal: qualified views (closed views that were not early
abandons) counted with exponential decay, half-life `popular_half_life_h` (a week by default),
in integer fixed point (:class:`operators.decay.DecayedCount`), so it is the same whatever
order an item's views arrive in. Unlike `trending_score` it grows with the audience an item
keeps over weeks.

Every update emits the full :class:`ItemStatsRecord` record (idempotent, guarded by `ts`) and a
:class:`ScoreUpdate` for the trending boards (:mod:`operators.trending`); a qualified view
also emits one for the popularity boards (`popular:all`, `popular:type:<T>`,
`popular:category:<c>`), which carries the half-life so the board ranks decayed scores.

Example:
    >>> from operators.item_info import ItemInfo, lookup_from
    >>> from kernel.settings import Settings
    >>> stats = ItemStats(Settings(), lookup_from({"m1": ItemInfo("m1", published_at=0)}))
    >>> _ = stats.on_event(ViewStart(user_id="u1", media_id="m1", ts=60_000))
    >>> out = stats.on_event(Feedback(user_id="u1", signal="liked", ts=61_000, media_id="m1"))
    >>> out[0].views_1h, out[0].plays_24h, out[0].like_ratio, round(out[1].score, 2)
    (1, 1, 0.6667, 2.0)
"""

from __future__ import annotations

from array import array
from datetime import datetime
from typing import Any, Final

import msgspec

from kernel.settings import Settings
from operators.buckets import BucketRing
from operators.decay import DecayedCount
from operators.emissions import Feedback, Segment, ViewStart
from operators.eventtime import Clock, from_ms, to_ms, utc_now
from operators.item_info import ItemLookup
from operators.keyed import KeyedState
from operators.keys import board_name

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
RECENCY_FLOOR: Final = 0.05
RECENCY_UNKNOWN: Final = 0.5
MULTIPLIER_RANGE: Final = (0.5, 3.0)
ITEM_STATS_VERSION: Final = 2  # 2: popularity
# 1: before popularity (resumed with none counted); 2: before the popularity stamp (resumed
# with the item's event time as its stamp)
_SNAPSHOT_VERSION: Final = 3

PLAYS, SEGMENTS, COMPLETIONS, WF_SUM, WF_N, LIKES, DISLIKES, SHARES = range(8)
_FIELDS: Final = 8
WF_SCALE: Final = 1_000_000
_FEEDBACK_FIELD: Final = {"liked": LIKES, "disliked": DISLIKES, "shared": SHARES}

ItemInput = ViewStart | Segment | Feedback


class ItemStatsRecord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """An item's engagement features as stored; `ts` is the item's event time (write guard).

    `like_ratio` is Laplace-smoothed `(likes + 1) / (likes + dislikes + 2)`;
    `completion_rate` and `mean_watch_fraction` are over closed views (None before any).
    """

    version: int
    media_id: str
    ts: int
    views_1h: int
    plays_24h: int
    plays_total: int
    like_ratio: float
    completion_rate: float | None
    mean_watch_fraction: float | None
    trending_score: float
    popularity: float = 0.0  # decayed qualified views at `ts` (absent before version 2)


class ScoreUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """An item's score at its event time `ts`, for its boards.

    `half_life_ms` 0: a trending score (comparable while fresh); > 0: a popularity that
    decays with that half-life, so boards compare it as of a common time.
    """

    media_id: str
    score: float
    ts: int
    content_type: str | None = None
    category: str | None = None
    half_life_ms: float = 0.0


def ranking_keys(update: ScoreUpdate) -> tuple[str, ...]:
    """The boards an update belongs to: global, its content type, its category; popularity
    updates go to the `popular:` boards of the same.

    Example:
        >>> ranking_keys(ScoreUpdate(media_id="m1", score=1.0, ts=0, content_type="AUDIO"))
        ('all', 'type:AUDIO')
        >>> ranking_keys(ScoreUpdate(media_id="m1", score=1.0, ts=0, half_life_ms=1.0))
        ('popular:all',)
    """
    popular = update.half_life_ms > 0
    keys = [board_name(popular=popular)]
    if update.content_type:
        keys.append(board_name(content_type=update.content_type, popular=popular))
    if update.category:
        keys.append(board_name(category=update.category, popular=popular))
    return tuple(keys)


class ItemStats(KeyedState[ItemInput, "ItemStatsRecord | ScoreUpdate"]):
    """Counters of one item in event-time buckets, with its features and trending score.

    Args:
        settings: `trending_half_life_h`, `popular_half_life_h`, `item_ttl_days`.
        items: item metadata lookup (publication time, content type, category).
        resume: a value returned by :meth:`snapshot`, or None for a new item.
    """

    def __init__(
        self,
        settings: Settings,
        items: ItemLookup,
        resume: Any = None,
        clock: Clock = utc_now,
    ):
        self._items = items
        self._clock = clock
        # Processing time of the last input: expiry is about idleness of this process, never
        # event time against the wall clock (a replay years old would expire on every input).
        self._arrival_ms = to_ms(clock())
        self._half_life_h = settings.trending_half_life_h
        self._ttl_ms = settings.item_ttl_days * 86_400_000
        self._popular_half_life_ms = settings.popular_half_life_h * HOUR_MS
        snap = resume or (_SNAPSHOT_VERSION, "", -1, None, None, b"", (), -1)
        if snap[0] not in (1, 2, _SNAPSHOT_VERSION):
            raise ValueError(f"ItemStats: snapshot version {snap[0]} is not supported")
        self.media_id: str = snap[1]
        self._wm: int = snap[2]
        minutes, hours, totals = snap[3:6]
        self._popular = DecayedCount(self._popular_half_life_ms, snap[6] if snap[0] > 1 else None)
        # The newest qualified view: what a popularity update is stamped with. The item's own
        # event time would do for the value (the board ranks a decayed count as of any common
        # time) but not for the stamp: it moves with every play, so the stamp of the last
        # update a board sees would depend on which play and which view came first.
        self._popular_ts: int = snap[7] if snap[0] > 2 else self._wm
        self._minutes = BucketRing(MINUTE_MS, 60, 1, minutes)
        self._hours = BucketRing(HOUR_MS, 24, _FIELDS, hours)
        self._totals = array("d", [0.0] * _FIELDS)
        if totals:
            self._totals = array("d")
            self._totals.frombytes(totals)

    def on_event(self, x: ItemInput) -> list[ItemStatsRecord | ScoreUpdate]:
        """Count one play, closed view or feedback; emit the record and the score(s)."""
        if not self.media_id and x.media_id:
            self.media_id = x.media_id
        self._arrival_ms = to_ms(self._clock())
        self._wm = max(self._wm, x.end_ts if isinstance(x, Segment) else x.ts)
        qualified = False
        if isinstance(x, ViewStart):
            self._minutes.add(x.ts, 0)
            self._count(x.ts, PLAYS, 1.0)
        elif isinstance(x, Segment):
            if not x.final:
                raise ValueError(f"ItemStats.on_event: {x.view_key} is provisional")
            self._count(x.end_ts, SEGMENTS, 1.0)
            if x.completed:
                self._count(x.end_ts, COMPLETIONS, 1.0)
            if not x.early_abandon:  # completed views included
                qualified = self._popular.add(x.end_ts)
                if qualified:
                    self._popular_ts = max(self._popular_ts, x.end_ts)
            if x.watch_fraction is not None:
                # Fixed point: float sums depend on the order views arrive in, and views of
                # one item come from many users, interleaved differently on every run.
                self._count(x.end_ts, WF_SUM, round(x.watch_fraction * WF_SCALE))
                self._count(x.end_ts, WF_N, 1.0)
        elif x.signal in _FEEDBACK_FIELD:
            self._count(x.ts, _FEEDBACK_FIELD[x.signal], 1.0)
        features = self.features()
        item = self._items(self.media_id)
        update = ScoreUpdate(
            media_id=self.media_id,
            score=features.trending_score,
            ts=self._wm,
            content_type=item.content_type if item is not None else None,
            category=item.category if item is not None else None,
        )
        if not qualified:
            return [features, update]
        half_life, at = self._popular_half_life_ms, self._popular_ts
        score = round(self._popular.value(at), 6)
        popular = msgspec.structs.replace(update, score=score, ts=at, half_life_ms=half_life)
        return [features, update, popular]

    def notify_at(self) -> datetime | None:
        """When the item's state expires: `item_ttl_days` of processing time without input."""
        return from_ms(self._arrival_ms + self._ttl_ms)

    def on_timer(self, now: datetime) -> list[ItemStatsRecord | ScoreUpdate]:
        """Nothing to emit on a timer: the item's only timer is its expiry (:meth:`is_expired`)."""
        del now
        return []

    def is_expired(self, now: datetime) -> bool:
        """True once the state may be discarded (no input for `item_ttl_days`)."""
        return to_ms(now) >= self._arrival_ms + self._ttl_ms

    def features(self) -> ItemStatsRecord:
        """The item's full feature record at its event time."""
        wm = self._wm
        day = self._hours.totals(wm)
        views = self._minutes.total(0, wm)
        t = self._totals
        likes, dislikes = t[LIKES], t[DISLIKES]
        return ItemStatsRecord(
            version=ITEM_STATS_VERSION,
            media_id=self.media_id,
            ts=wm,
            views_1h=round(views),
            plays_24h=round(day[PLAYS]),
            plays_total=round(t[PLAYS]),
            like_ratio=round((likes + 1.0) / (likes + dislikes + 2.0), 4),
            completion_rate=_ratio(t[COMPLETIONS], t[SEGMENTS]),
            mean_watch_fraction=_ratio(t[WF_SUM] / WF_SCALE, t[WF_N]),
            trending_score=round(self.trending_score(day, views), 6),
            popularity=round(self._popular.value(wm), 6),
        )

    def trending_score(
        self, day: tuple[float, ...] | None = None, views: float | None = None
    ) -> float:
        """`views_1h × recency_weight × engagement_multiplier` at the item's event time."""
        wm = self._wm
        day = day if day is not None else self._hours.totals(wm)
        views = views if views is not None else self._minutes.total(0, wm)
        if views <= 0:
            return 0.0
        return views * self._recency(wm) * engagement_multiplier(day)

    def snapshot(self) -> tuple[Any, ...]:
        """Plain immutable state (about 2.5 KB: two bucket rings, the totals, popularity)."""
        minutes, hours = self._minutes.snapshot(), self._hours.snapshot()
        totals, popular = self._totals.tobytes(), self._popular.snapshot()
        return (
            _SNAPSHOT_VERSION, self.media_id, self._wm, minutes, hours, totals, popular,
            self._popular_ts,
        )  # fmt: skip

    def _count(self, ts: int, field: int, amount: float) -> None:
        self._hours.add(ts, field, amount)
        self._totals[field] += amount

    def _recency(self, wm: int) -> float:
        item = self._items(self.media_id)
        if item is None or item.published_at is None:
            return RECENCY_UNKNOWN
        age_h = max(wm - item.published_at, 0) / HOUR_MS
        return max(float(0.5 ** (age_h / self._half_life_h)), RECENCY_FLOOR)


def engagement_multiplier(day: tuple[float, ...]) -> float:
    """The engagement factor of the trending score from 24-hour bucket totals.

    Example:
        >>> day = (10.0, 8.0, 4.0, 0.0, 0.0, 2.0, 0.0, 1.0)  # plays, views, completed, …
        >>> engagement_multiplier(day)
        1.8
    """
    plays = max(day[PLAYS], 1.0)
    completion = day[COMPLETIONS] / day[SEGMENTS] if day[SEGMENTS] > 0 else 0.0
    social = (day[LIKES] + day[SHARES] - day[DISLIKES]) / plays
    low, high = MULTIPLIER_RANGE
    return min(max(1.0 + completion + social, low), high)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den > 0 else None
