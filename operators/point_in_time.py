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
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from kernel.settings import Settings
from operators import feature_catalogue as catalogue
from operators.contracts import EngagementEvent, Impression
from operators.emissions import Feedback, Segment, ViewStart
from operators.eventtime import from_ms
from operators.item_info import ItemLookup
from operators.item_stats import ItemStats
from operators.labels import LabelJoin, LabelledImpression, label_config
from operators.user_engagement import UserEngagement

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


def _replay_user(
    settings: Settings,
    items: ItemLookup,
    events: Sequence[EngagementEvent],
    impressions: Sequence[Impression],
    item_inputs: list[tuple[int, ItemInput]],
) -> dict[str, dict[str, Any]]:
    """One user's features at each impression (by request id); the item logic's inputs
    this user produced go to `item_inputs` as (event time, input)."""
    clock = _EventClock()
    user = UserEngagement(settings, items, clock=clock, emit_features=False)
    at: dict[str, dict[str, Any]] = {}

    def emitted(outs: Iterable[Any]) -> None:
        for x in outs:
            if isinstance(x, ViewStart) or (isinstance(x, Feedback) and x.media_id):
                item_inputs.append((x.ts, x))
            elif isinstance(x, Segment) and x.final:
                item_inputs.append((x.end_ts, x))

    def advance(ms: int) -> None:
        clock.ms = max(clock.ms, ms)
        due = user.notify_at()
        while due is not None and due <= from_ms(clock.ms):
            emitted(user.on_timer(from_ms(clock.ms)))
            nxt = user.notify_at()
            if nxt == due:
                break
            due = nxt

    # An impression sorts before an event of the same millisecond: "before t" is strict.
    timeline: Iterable[tuple[int, int, int, Impression | EngagementEvent]] = heapq.merge(
        ((imp.ts, 0, n, imp) for n, imp in enumerate(impressions)),
        ((ev.ts, 1, n, ev) for n, ev in enumerate(events)),
    )
    for ts, _kind, _n, value in timeline:
        advance(ts)
        if isinstance(value, Impression):
            at[value.request_id] = _catalogue_values("user", catalogue.USER, user.features())
        else:
            emitted(user.on_event(value))
    return at


def _replay_items(
    settings: Settings,
    items: ItemLookup,
    inputs: list[tuple[int, ItemInput]],
    wanted: dict[str, list[int]],
) -> dict[tuple[str, int], dict[str, Any]]:
    """Each (item, time) of `wanted`: the item's features after its inputs stamped before."""
    by_item: dict[str, list[tuple[int, ItemInput]]] = defaultdict(list)
    for ts, x in inputs:
        if x.media_id in wanted:
            by_item[x.media_id].append((ts, x))
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for media_id, times in wanted.items():
        clock = _EventClock()
        stats = ItemStats(settings, items, clock=clock)
        stream = sorted(by_item.get(media_id, []), key=lambda p: p[0])
        i, seen = 0, False
        for t in sorted(set(times)):
            while i < len(stream) and stream[i][0] < t:
                clock.ms = stream[i][0]
                stats.on_event(stream[i][1])
                seen, i = True, i + 1
            clock.ms = max(clock.ms, t)
            out[media_id, t] = (
                _catalogue_values("item", catalogue.ITEM, stats.features()) if seen else {}
            )
    return out


def training_rows(
    settings: Settings,
    items: ItemLookup,
    events: Iterable[EngagementEvent],
    impressions: Iterable[Impression],
) -> list[dict[str, Any]]:
    """One row per served item of `impressions`: the served row, the point-in-time user and
    item features, the label; `events` are every event that may precede or follow them
    (one per event id; a user's in event-time order)."""
    by_user: dict[str, list[EngagementEvent]] = defaultdict(list)
    for ev in sorted(events, key=lambda e: e.ts):
        by_user[ev.user_id].append(ev)
    served: dict[str, list[Impression]] = defaultdict(list)
    for imp in sorted(impressions, key=lambda i: (i.ts, i.request_id)):
        served[imp.user_id].append(imp)
    item_inputs: list[tuple[int, ItemInput]] = []
    user_at: dict[str, dict[str, Any]] = {}
    for user_id in sorted(set(by_user) | set(served)):
        user_at |= _replay_user(
            settings, items, by_user.get(user_id, []), served.get(user_id, []), item_inputs
        )
    wanted: dict[str, list[int]] = defaultdict(list)
    for imps in served.values():
        for imp in imps:
            for item in imp.items:
                wanted[item.media_id].append(imp.ts)
    item_at = _replay_items(settings, items, item_inputs, wanted)
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
                    **user_at.get(imp.request_id, {}),
                    **item_at.get((item.media_id, imp.ts), {}),
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
