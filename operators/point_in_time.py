"""Point-in-time training rows: each served item with the features as they were when served.

The offline half of the feature store's one property: training reads the same feature
definitions as serving. From the lake's events and impressions, every user's events are
replayed through the engagement flow's own per-user logic (:class:`UserEngagement`), and the
views, starts and feedback it emits through the item logic (:class:`ItemStats`), each on a
clock that follows event time. An impression at time `t` takes the user's and each item's
features as they stood after every event stamped before `t`, never one at or after it; its
outcome comes from the learning flow's own label join (:class:`LabelJoin`), so a row's
`features` and `label` are what the online ranker trained on for the same impression.

Features are named as the catalogue names them (`user.<name>`, `item.<name>`,
:mod:`operators.feature_catalogue`). What the replay cannot know: item metadata changes
after publication (the lookup is today's) and processing-time effects of the live run (a
view closed by an idle timer at a different moment). The parity monitor measures the gap.

Example:
    >>> from operators.item_info import lookup_from, ItemInfo
    >>> from operators.contracts import ImpressionItem
    >>> items = lookup_from({"m1": ItemInfo("m1", category="news", duration_s=60.0)})
    >>> play = EngagementEvent(event_id="e1", event_type="media_started", user_id="u1",
    ...                        media_id="m1", ts=1_000, position_s=0.0)
    >>> imp = Impression(request_id="r1", user_id="u1", ts=5_000, arm="a", model_version="v",
    ...                  index_version="i", items=[ImpressionItem(media_id="m1", position=0,
    ...                  score=1.0, source="ann", features=[0.5])])
    >>> [row] = training_rows(Settings(), items, [play], [imp])
    >>> row["item.play_count_total"], row["user.engagement_count"], row["features"]
    (1, 1, [0.5])
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from kernel.settings import Settings
from operators import feature_catalogue as catalogue
from operators.contracts import EngagementEvent, Impression
from operators.emissions import Feedback, Segment, ViewStart
from operators.eventtime import from_ms, to_ms
from operators.item_info import ItemLookup
from operators.item_stats import ItemStats, ItemStatsRecord
from operators.labels import LabelJoin, LabelledImpression, label_config
from operators.user_engagement import UserEngagement
from operators.user_features import UserFeatures

ItemInput = ViewStart | Segment | Feedback


class _EventClock:
    """Processing time that follows the replay's event time."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> datetime:
        return from_ms(self.ms)


def _catalogue_values(prefix: str, entity: str, record: Any) -> dict[str, Any]:
    """A record's features by catalogue name, as plain JSON values (tuples become lists)."""
    named = catalogue.values(entity, record)
    return {f"{prefix}.{k}": _json.decode(_json.encode(v)) for k, v in named.items()}


_json = msgspec.json


def _item_values(record: ItemStatsRecord | None) -> dict[str, Any]:
    return {} if record is None else _catalogue_values("item", catalogue.ITEM, record)


#: A window `(start, end)` of event time: the features as they stood at `start` (after every
#: event stamped before it), then after each change stamped in `[start, end)`. A training
#: row asks for `(t, t)`, the features as of `t` alone; the parity monitor asks for the
#: versions a store read at `t` may have held, `(t - staleness, t)`.
Window = tuple[int, int]


class _Windows:
    """The versions of one replay's state over open windows (see :data:`Window`)."""

    def __init__(self) -> None:
        self.open: dict[Window, list[Any]] = {}
        self.done: dict[Window, list[Any]] = {}

    def opens(self, window: Window, now: Any) -> None:
        self.open.setdefault(window, [now])

    def closes(self, window: Window) -> None:
        self.done[window] = self.open.pop(window)

    def changed(self, now: Callable[[], Any]) -> None:
        """The state changed: `now()` is a version of every open window."""
        if self.open:
            value = now()
            for versions in self.open.values():
                versions.append(value)


def _markers(windows: Iterable[Window]) -> list[tuple[int, int, int, Window]]:
    """Open and close marks; a window opens before, and closes after, nothing of its own
    millisecond but before any event of it (so "before t" is strict at both ends)."""
    out = []
    for n, w in enumerate(sorted(set(windows))):
        out += [(w[0], 0, n, w), (w[1], 1, n, w)]
    return sorted(out)


def user_versions(
    settings: Settings,
    items: ItemLookup,
    events: Sequence[EngagementEvent],
    windows: Iterable[Window],
    item_inputs: list[tuple[int, ItemInput]],
) -> dict[Window, list[UserFeatures]]:
    """One user's feature versions over each window; the item logic's inputs this user
    produced go to `item_inputs` as (time, input), at the event time the live flow would
    have emitted each: the event's that caused it, or an idle timer's due time."""
    clock = _EventClock()
    user = UserEngagement(settings, items, clock=clock, emit_features=False)
    seen = _Windows()

    def emitted(outs: Iterable[Any], known_ms: int) -> None:
        for x in outs:
            closed = isinstance(x, Segment) and x.final
            if closed or isinstance(x, ViewStart) or (isinstance(x, Feedback) and x.media_id):
                item_inputs.append((known_ms, x))

    def advance(ms: int) -> None:
        clock.ms = max(clock.ms, ms)
        due = user.notify_at()
        while due is not None and due <= from_ms(clock.ms):
            emitted(user.on_timer(due), to_ms(due))
            seen.changed(user.features)
            nxt = user.notify_at()
            if nxt == due:
                break
            due = nxt

    timeline: Iterable[tuple[int, int, int, Window | EngagementEvent]] = heapq.merge(
        _markers(windows), ((ev.ts, 2, n, ev) for n, ev in enumerate(events))
    )
    for ts, kind, _n, value in timeline:
        advance(ts)
        if isinstance(value, EngagementEvent):
            emitted(user.on_event(value), ts)
            seen.changed(user.features)
        elif kind == 0:
            seen.opens(value, user.features())
        else:
            seen.closes(value)
    # The views still open close as their idle timers would have, whatever comes later: an
    # item's inputs must not depend on when the replay last looked at this user.
    advance(clock.ms + settings.user_ttl_days * 86_400_000)
    return seen.done


def item_versions(
    settings: Settings,
    items: ItemLookup,
    inputs: list[tuple[int, ItemInput]],
    wanted: dict[str, list[Window]],
) -> dict[tuple[str, Window], list[ItemStatsRecord | None]]:
    """Each wanted item's feature versions over each of its windows (None: no input yet)."""
    by_item: dict[str, list[tuple[int, ItemInput]]] = defaultdict(list)
    for ts, x in inputs:
        if x.media_id in wanted:
            by_item[x.media_id].append((ts, x))
    out: dict[tuple[str, Window], list[ItemStatsRecord | None]] = {}
    for media_id, windows in wanted.items():
        stream = sorted(by_item.get(media_id, []), key=lambda p: p[0])
        clock = _EventClock()
        versions = _item_replay(ItemStats(settings, items, clock=clock), clock, stream, windows)
        out |= {(media_id, w): v for w, v in versions.items()}
    return out


def _item_replay(
    stats: ItemStats,
    clock: _EventClock,
    stream: list[tuple[int, ItemInput]],
    windows: list[Window],
) -> dict[Window, list[ItemStatsRecord | None]]:
    """One item's versions over its windows (its clock follows the stream's times)."""
    record: ItemStatsRecord | None = None
    seen = _Windows()
    timeline: Iterable[tuple[int, int, int, Any]] = heapq.merge(
        _markers(windows), ((ts, 2, n, x) for n, (ts, x) in enumerate(stream))
    )
    for ts, kind, _n, value in timeline:
        clock.ms = max(clock.ms, ts)
        if kind == 2:
            stats.on_event(value)
            record = stats.features()
            seen.changed(stats.features)
        elif kind == 0:
            seen.opens(value, record)
        else:
            seen.closes(value)
    return seen.done


def training_rows(
    settings: Settings,
    items: ItemLookup,
    events: Iterable[EngagementEvent],
    impressions: Iterable[Impression],
) -> list[dict[str, Any]]:
    """One row per served item of `impressions`: the served row, the point-in-time user and
    item features, the label; `events` are every event that may precede or follow them
    (one per event id; a user's in the order the flow read them, so an event it dropped as
    late is dropped again: :func:`state.lake.in_arrival_order`)."""
    by_user: dict[str, list[EngagementEvent]] = defaultdict(list)
    for ev in events:
        by_user[ev.user_id].append(ev)
    served: dict[str, list[Impression]] = defaultdict(list)
    for imp in sorted(impressions, key=lambda i: (i.ts, i.request_id)):
        served[imp.user_id].append(imp)
    item_inputs: list[tuple[int, ItemInput]] = []
    user_at: dict[tuple[str, int], UserFeatures] = {}
    for user_id in sorted(set(by_user) | set(served)):
        at = user_versions(
            settings, items, by_user.get(user_id, []),
            [(i.ts, i.ts) for i in served.get(user_id, [])], item_inputs,
        )  # fmt: skip
        user_at |= {(user_id, w[0]): v[0] for w, v in at.items()}
    wanted: dict[str, list[Window]] = defaultdict(list)
    for imps in served.values():
        for imp in imps:
            for item in imp.items:
                wanted[item.media_id].append((imp.ts, imp.ts))
    item_at = item_versions(settings, items, item_inputs, wanted)
    labels = _labels(settings, by_user, served)
    rows: list[dict[str, Any]] = []
    for user_id in sorted(served):
        for imp in served[user_id]:
            labelled = labels.get(imp.request_id, {})
            for item in imp.items:
                label = labelled.get((item.media_id, item.position))
                rows.append({
                    "request_id": imp.request_id, "user_id": user_id, "ts": imp.ts,
                    "arm": imp.arm, "model_version": imp.model_version,
                    "media_id": item.media_id, "position": item.position,
                    "source": item.source, "score": item.score,
                    "features": list(item.features),
                    "label": None if label is None else label[0],
                    "label_reason": None if label is None else label[1],
                    **_catalogue_values("user", catalogue.USER, user_at[user_id, imp.ts]),
                    **_item_values(item_at[item.media_id, (imp.ts, imp.ts)][0]),
                })  # fmt: skip
    return rows


def _labels(
    settings: Settings,
    by_user: dict[str, list[EngagementEvent]],
    served: dict[str, list[Impression]],
) -> dict[str, dict[tuple[str, int], tuple[bool, str]]]:
    """The learning flow's labels: (media id, position) → (label, reason), per request."""
    out: dict[str, dict[tuple[str, int], tuple[bool, str]]] = {}
    config = label_config(settings)
    for user_id, imps in served.items():
        clock = _EventClock()
        join = LabelJoin(config, clock=clock)
        timeline: Iterable[tuple[int, int, int, Impression | EngagementEvent]] = heapq.merge(
            ((imp.ts, 0, n, imp) for n, imp in enumerate(imps)),
            ((ev.ts, 1, n, ev) for n, ev in enumerate(by_user.get(user_id, []))),
        )
        closed: list[Any] = []
        for ts, _kind, _n, value in timeline:
            clock.ms = max(clock.ms, ts)
            closed += join.on_event(value)
        closed += join.flush()
        for x in closed:
            if isinstance(x, LabelledImpression):
                out[x.request_id] = {
                    (e.media_id, e.position): (e.label, e.reason) for e in x.examples
                }
    return out
