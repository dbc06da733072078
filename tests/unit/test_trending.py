"""Trending and popularity boards: a bounded top-K fed by item score updates."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.settings import Settings
from operators.decay import DecayedCount
from operators.emissions import Segment, ViewStart
from operators.item_info import ItemInfo, lookup_from
from operators.item_stats import ItemInput, ItemStats, ScoreUpdate, ranking_keys
from operators.trending import STALE_MS, TrendingBoard, TrendingList

T0 = 1_700_000_000_000


def up(media: str, score: float, ts: int = T0) -> ScoreUpdate:
    return ScoreUpdate(media_id=media, score=score, ts=ts)


def feed(board: TrendingBoard, updates: list[ScoreUpdate]) -> list[TrendingList]:
    out: list[TrendingList] = []
    for u in updates:
        out.extend(board.on_event(u))
    return out


def test_emits_only_when_the_top_changes():
    board = TrendingBoard(top_k=2)
    assert len(feed(board, [up("a", 1.0), up("b", 2.0)])) == 2
    assert feed(board, [up("c", 0.5)]) == []  # below the top two
    [rescored] = feed(board, [up("b", 2.5)])  # same order, new score: stored boards stay exact
    assert rescored.items == (("b", 2.5), ("a", 1.0))
    [changed] = feed(board, [up("c", 3.0)])
    assert [m for m, _ in changed.items] == ["c", "b"]


def test_a_zero_score_removes_the_item():
    board = TrendingBoard(top_k=3)
    feed(board, [up("a", 1.0), up("b", 2.0)])
    feed(board, [up("b", 0.0)])
    assert board.top() == [("a", 1.0)]


def test_an_older_score_never_overwrites_a_newer_one():
    board = TrendingBoard(top_k=3)
    feed(board, [up("a", 5.0, T0 + 10), up("a", 1.0, T0)])
    assert board.top() == [("a", 5.0)]


def test_stale_scores_leave_the_board():
    board = TrendingBoard(top_k=3)
    feed(board, [up("a", 9.0, T0), up("b", 1.0, T0 + STALE_MS - 1)])
    assert [m for m, _ in board.top()] == ["a", "b"]
    [changed] = feed(board, [up("c", 0.5, T0 + STALE_MS + 60_000)])
    assert [m for m, _ in changed.items] == ["b", "c"]


def test_capacity_bounds_the_candidates():
    board = TrendingBoard(top_k=2, capacity=4)
    feed(board, [up(f"m{i}", float(i)) for i in range(20)])
    assert len(board.snapshot()[2]) == 4
    assert board.top() == [("m19", 19.0), ("m18", 18.0)]


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k"):
        TrendingBoard(top_k=0)


updates = st.lists(
    st.builds(
        up,
        st.sampled_from([f"m{i}" for i in range(12)]),
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 7.0]),
        st.integers(T0, T0 + 3 * STALE_MS),
    ),
    max_size=80,
)


def exact_top(updates: list[ScoreUpdate], k: int) -> list[tuple[str, float]]:
    """Oracle: each item's newest score, fresh ones only, sorted."""
    newest: dict[str, ScoreUpdate] = {}
    for u in updates:
        if u.media_id not in newest or u.ts >= newest[u.media_id].ts:
            newest[u.media_id] = u
    board_time = max((u.ts for u in updates), default=T0)
    fresh = [u for u in newest.values() if u.score > 0 and u.ts >= board_time - STALE_MS]
    ranked = sorted(fresh, key=lambda u: (-u.score, u.media_id))
    return [(u.media_id, u.score) for u in ranked[:k]]


@given(updates)
def test_the_board_equals_an_exact_ranking_when_every_item_fits(xs):
    ordered = sorted(xs, key=lambda u: u.ts)  # scores arrive in event-time order per item
    board = TrendingBoard(top_k=5, capacity=64)
    feed(board, ordered)
    board._prune()  # the board prunes at most once a minute; settle it for the oracle
    assert board.top() == exact_top(ordered, 5)


@given(updates, st.data())
def test_snapshot_resume_continue_equals_an_uninterrupted_run(xs, data):
    cut = data.draw(st.integers(0, len(xs)))
    whole, part = TrendingBoard(top_k=3, capacity=6), TrendingBoard(top_k=3, capacity=6)
    expected = feed(whole, xs)
    out = feed(part, xs[:cut])
    snap = pickle.loads(pickle.dumps(part.snapshot()))
    out += feed(TrendingBoard(top_k=3, capacity=6, resume=snap), xs[cut:])
    assert out == expected


def test_boards_need_no_timer():
    assert TrendingBoard(top_k=1).notify_at() is None


# -- popularity boards ---------------------------------------------------------------------

DAY = 86_400_000
HOUR = 3_600_000
SETTINGS = Settings()
HALF_LIFE = SETTINGS.popular_half_life_h * HOUR
POPULAR_ITEMS = lookup_from(
    {m: ItemInfo(m, published_at=T0, content_type="VIDEO", category="drama")
     for m in ("steady", "flash")}
)  # fmt: skip


def watched(media: str, ts: int) -> list[ItemInput]:
    """One completed view: the play and its closed segment."""
    segment = Segment(
        user_id="u", media_id=media, start_ts=ts, end_ts=ts + 60_000, consumed_s=60.0,
        dwell_s=60.0, max_position_s=60.0, last_position_s=60.0, duration_s=60.0,
        watch_fraction=1.0, completed=True, early_abandon=False, replays=0, signals=1,
        watch_score=0.9,
    )  # fmt: skip
    return [ViewStart(user_id="u", media_id=media, ts=ts), segment]


class Catalogue:
    """Item stats and boards wired as the engagement flow wires them."""

    def __init__(self, resume: tuple[Any, Any] | None = None) -> None:
        items, boards = resume or ({}, {})
        self.items = {m: ItemStats(SETTINGS, POPULAR_ITEMS, s) for m, s in items.items()}
        self.boards = {k: TrendingBoard(top_k=5, resume=s) for k, s in boards.items()}

    def watch(self, media: str, ts: int) -> None:
        if media not in self.items:
            self.items[media] = ItemStats(SETTINGS, POPULAR_ITEMS)
        for x in watched(media, ts):
            for out in self.items[media].on_event(x):
                if isinstance(out, ScoreUpdate):
                    for key in ranking_keys(out):
                        self.boards.setdefault(key, TrendingBoard(top_k=5)).on_event(out)

    def top(self, board: str) -> list[str]:
        return [m for m, _ in self.boards[board].top()]

    def snapshot(self) -> tuple[Any, Any]:
        items = {m: s.snapshot() for m, s in self.items.items()}
        boards = {k: b.snapshot() for k, b in self.boards.items()}
        return pickle.loads(pickle.dumps((items, boards)))


STEADY = [T0 + d * DAY + k * 6 * HOUR for d in range(14) for k in range(4)]  # 4 a day, 2 weeks
HOT = T0 + 14 * DAY
FLASH = [HOT + k * 60_000 for k in range(20)]  # 20 in one hour


def test_a_broadly_watched_item_outranks_a_briefly_hot_one_once_its_hour_passed():
    world = Catalogue()
    for ts in STEADY:
        world.watch("steady", ts)
    for ts in FLASH:
        world.watch("flash", ts)
    assert world.top("all") == ["flash"]  # in its hour, only the flash item trends
    assert world.top("popular:all") == ["steady", "flash"]  # ~31 decayed views against 20
    world.watch("steady", HOT + 2 * HOUR)
    assert world.top("all") == ["steady"]  # the hour has passed: the flash item left
    assert world.top("popular:all") == ["steady", "flash"]
    assert world.top("popular:category:drama") == world.top("popular:type:VIDEO")
    scores = dict(world.boards["popular:all"].top())
    assert scores["flash"] == pytest.approx(20 * 2 ** (-2 * HOUR / HALF_LIFE), rel=2e-3)
    stats = world.items["steady"].features()
    assert stats.popularity == pytest.approx(scores["steady"], rel=2e-3)


def test_popularity_survives_snapshot_and_restore():
    whole, part = Catalogue(), Catalogue()
    events = sorted([(ts, "steady") for ts in STEADY] + [(ts, "flash") for ts in FLASH])
    for ts, media in events:
        whole.watch(media, ts)
    cut = len(events) // 2
    for ts, media in events[:cut]:
        part.watch(media, ts)
    resumed = Catalogue(part.snapshot())
    for ts, media in events[cut:]:
        resumed.watch(media, ts)
    assert resumed.snapshot() == whole.snapshot()
    assert resumed.boards["popular:all"].top() == whole.boards["popular:all"].top()


def test_a_trending_board_resumes_from_a_first_version_snapshot():
    old = (1, T0, (("a", 2.0, T0), ("b", 1.0, T0)), (("a", 2.0),), T0 + 60_000)
    board = TrendingBoard(top_k=2, resume=old)
    assert board.half_life_ms == 0.0 and board.top() == [("a", 2.0), ("b", 1.0)]


def popular_updates(draws: list[tuple[int, int]]) -> list[ScoreUpdate]:
    """Views (item, minute) → each item's popularity updates in its own event-time order."""
    counts: dict[str, DecayedCount] = {}
    out = []
    for n, minute in sorted(draws, key=lambda d: d[1]):
        media, ts = f"m{n}", T0 + minute * 60_000
        count = counts.setdefault(media, DecayedCount(HALF_LIFE))
        count.add(ts)
        out.append(ScoreUpdate(media_id=media, score=count.value(ts), ts=ts,
                               half_life_ms=HALF_LIFE))  # fmt: skip
    return out


def exact_popular(updates: list[ScoreUpdate], k: int) -> tuple[int, tuple[tuple[str, float], ...]]:
    """Oracle: each item's newest count, ranked as of the newest minute, as published."""
    newest = {u.media_id: u for u in sorted(updates, key=lambda u: u.ts)}
    wm = max(u.ts for u in updates)
    at = wm - wm % 60_000
    ranked = sorted(newest.values(), key=lambda u: (-(math.log2(u.score) + u.ts / HALF_LIFE),
                                                    u.media_id))  # fmt: skip
    scores = [(u.media_id, float(f"{u.score * 2.0 ** ((u.ts - at) / HALF_LIFE):.3g}"))
              for u in ranked[:k]]  # fmt: skip
    return at, tuple(scores)


views = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 60 * 24 * 30)), min_size=1,
                 max_size=60)  # fmt: skip


@given(views, st.randoms(use_true_random=False))
def test_a_popularity_board_is_exact_in_any_interleaving_even_at_capacity(draws, rnd):
    updates = popular_updates(draws)
    by_item: dict[str, list[ScoreUpdate]] = {}
    for u in updates:
        by_item.setdefault(u.media_id, []).append(u)
    interleaved: list[ScoreUpdate] = []
    while by_item:  # a random merge that keeps each item's own order, as the flow does
        media = rnd.choice(sorted(by_item))
        interleaved.append(by_item[media].pop(0))
        if not by_item[media]:
            del by_item[media]
    board = TrendingBoard(top_k=3, capacity=3)
    published = feed(board, interleaved)
    at, expected = exact_popular(updates, 3)
    assert (published[-1].ts, published[-1].items) == (at, expected)
