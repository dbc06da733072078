"""Point-in-time training rows: what was known when the feed was served, and nothing later."""

from __future__ import annotations

from typing import Any

from kernel.settings import Settings
from operators.contracts import EngagementEvent, Impression, ImpressionItem
from operators.item_info import ItemInfo, lookup_from
from operators.point_in_time import training_rows

T0 = 1_700_000_000_000
MIN = 60_000
SETTINGS = Settings()
ITEMS = lookup_from({
    "n1": ItemInfo("n1", category="news", duration_s=120.0),
    "n2": ItemInfo("n2", category="news", duration_s=120.0),
    "s1": ItemInfo("s1", category="sports", duration_s=120.0),
})  # fmt: skip


def watch(user: str, media: str, start: int, n: int) -> list[EngagementEvent]:
    """A whole view: started, heartbeats, completed."""
    evs = [EngagementEvent(event_id=f"{user}-{media}-{start}-0", event_type="media_started",
                           user_id=user, media_id=media, ts=start, position_s=0.0)]  # fmt: skip
    for k in range(1, 12):
        evs.append(EngagementEvent(
            event_id=f"{user}-{media}-{start}-{k}", event_type="media_progress", user_id=user,
            media_id=media, ts=start + k * 10_000, position_s=k * 10.0,
        ))  # fmt: skip
    evs.append(EngagementEvent(
        event_id=f"{user}-{media}-{start}-end", event_type="media_completed", user_id=user,
        media_id=media, ts=start + 120_000, position_s=120.0,
    ))  # fmt: skip
    return evs


def feed(request: str, user: str, ts: int, media: list[str]) -> Impression:
    items = [
        ImpressionItem(media_id=m, position=n, score=1.0 - n, source="ann",
                       features=[float(n), 0.25])
        for n, m in enumerate(media)
    ]  # fmt: skip
    return Impression(request_id=request, user_id=user, ts=ts, arm="default",
                      model_version="v1", index_version="i1", items=items)  # fmt: skip


def row(rows: list[dict[str, Any]], request: str, media: str) -> dict[str, Any]:
    [found] = [r for r in rows if r["request_id"] == request and r["media_id"] == media]
    return found


def test_a_value_planted_after_the_impression_is_not_used() -> None:
    events = [
        *watch("u1", "n1", T0, 12),  # news, before both feeds
        *watch("u1", "s1", T0 + 10 * MIN, 12),  # sports, after the first feed: planted
        *watch("u2", "s1", T0 + 5 * MIN, 12),  # another user plays s1 before the first feed
    ]
    first = feed("r1", "u1", T0 + 8 * MIN, ["s1", "n2"])
    second = feed("r2", "u1", T0 + 20 * MIN, ["s1", "n2"])
    rows = training_rows(SETTINGS, ITEMS, events, [first, second])
    before, after = row(rows, "r1", "s1"), row(rows, "r2", "s1")
    assert before["user.top_categories_7d"] == ["news"]
    assert "sports" in after["user.top_categories_7d"]
    assert before["user.engagement_count"] < after["user.engagement_count"]
    # Item side: s1's own play by u1 came after the first feed.
    assert before["item.play_count_total"] == 1 and after["item.play_count_total"] == 2
    # The outcome looks forward, as the learning flow's does: u1 watched s1 after feed r1.
    assert before["label"] is True and row(rows, "r1", "n2")["label"] is False
    assert before["features"] == [0.0, 0.25]  # the served row, as impressions carry it


def test_an_event_in_the_same_millisecond_as_the_impression_is_later() -> None:
    events = watch("u1", "n1", T0, 12)
    at = T0 + 120_000  # the completion's millisecond
    rows = training_rows(SETTINGS, ITEMS, events, [feed("r1", "u1", at, ["n2"])])
    only = rows[0]
    rows_after = training_rows(SETTINGS, ITEMS, events, [feed("r1", "u1", at + 1, ["n2"])])
    assert only["user.completion_rate_7d"] is None  # the view had not closed yet
    assert rows_after[0]["user.engagement_count"] >= only["user.engagement_count"]


def test_an_item_nobody_played_before_the_feed_has_no_item_features() -> None:
    rows = training_rows(SETTINGS, ITEMS, watch("u1", "n1", T0, 12), [feed("r1", "u1", T0, ["n2"])])
    assert not any(k.startswith("item.") for k in rows[0])
    assert rows[0]["user.cold_start"] is True


def test_an_event_the_flow_dropped_as_late_is_dropped_again() -> None:
    # In the order the flow read them: news at T0 + 30 min, then sports stamped T0, half an
    # hour behind the user's newest when it arrived (the lateness allowed is 10 minutes).
    arrived = watch("u1", "n1", T0 + 30 * MIN, 12) + watch("u1", "s1", T0, 12)
    served = [feed("r1", "u1", T0 + 60 * MIN, ["n2"])]
    [replayed] = training_rows(SETTINGS, ITEMS, arrived, served)
    assert replayed["user.top_categories_7d"] == ["news"]
    # In event-time order the sports view would have counted, as the live flow never did.
    [in_time] = training_rows(SETTINGS, ITEMS, sorted(arrived, key=lambda e: e.ts), served)
    assert "sports" in in_time["user.top_categories_7d"]
