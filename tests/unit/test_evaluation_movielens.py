"""MovieLens loading and its mapping to Feedflow's events, read back by the real logic."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedflow.evaluation import movielens
from feedflow.evaluation.command import sample_users
from feedflow.evaluation.movielens import DURATION_S, Rating
from kernel.settings import Settings
from operators.contracts import (
    EngagementEvent,
    MediaPublished,
    decode_engagement,
    decode_media,
    encode,
)
from operators.emissions import Dropped, Feedback, Segment
from operators.item_info import ItemInfo, lookup_from
from operators.user_engagement import UserEngagement

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def write_data_set(root: Path) -> Path:
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,1000\n1,20,2.0,1000\n2,10,3.5,900\n"
    )
    (root / "movies.csv").write_text(
        'movieId,title,genres\n10,"Heat, the (1995)",Action|Crime|Film-Noir\n'
        "20,Toy Story (1995),Action|Animation\n30,Untitled,(no genres listed)\n"
    )
    (root / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,10,heist,1\n2,10,heist,2\n2,10,Al Pacino,3\n1,20,pixar,4\n"
    )
    return root


def test_load_reads_ids_rows_and_genres(tmp_path: Path) -> None:
    data = movielens.load(write_data_set(tmp_path))
    assert data.ratings[1] == Rating("u1", "m20", 2.0, 1000, 1)
    assert list(data.movies) == ["m10", "m20", "m30"]
    assert data.movies["m10"].title == "Heat, the (1995)"
    assert data.genres()["m30"] == frozenset()
    assert len(data.tags) == 4


def test_a_missing_file_or_a_bad_row_is_named(tmp_path: Path) -> None:
    with pytest.raises(movielens.DataSetError, match=r"ratings\.csv not found"):
        movielens.load(tmp_path)
    write_data_set(tmp_path)
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,good,5\n")
    with pytest.raises(movielens.DataSetError, match="row 2"):
        movielens.load(tmp_path)


def test_catalogue_events_are_valid_and_hide_tags_of_held_out_interactions(tmp_path: Path) -> None:
    data = movielens.load(write_data_set(tmp_path))
    items = movielens.catalogue(data, published_at_ms=900_000, hidden={("u1", "m20")})
    decoded = [decode_media(encode(item)) for item in items]
    assert all(isinstance(d, MediaPublished) for d in decoded)
    heat, toy, untitled = items
    # Film-Noir is in one film, Crime in one, Action in two: the rarest first by name.
    assert heat.category == "Crime"
    assert heat.tags == ["Action", "Crime", "Film-Noir", "heist", "Al Pacino"]
    assert toy.category == "Animation" and "pixar" not in toy.tags  # u1's held-out film
    assert untitled.category == "unknown" and untitled.tags == []
    assert {i.creator_id for i in items} == {movielens.CREATOR}
    assert {(i.duration_s, i.published_at, i.content_type) for i in items} == {
        (DURATION_S, 900_000, "VIDEO")
    }


def replay_user(events: list[EngagementEvent]) -> list[object]:
    """Events of one user through the engagement logic the flow runs, then end of input."""
    catalogue = {e.media_id: ItemInfo(e.media_id or "", duration_s=DURATION_S) for e in events}
    user = UserEngagement(Settings(), lookup_from(catalogue), clock=lambda: FIXED_NOW)
    out: list[object] = []
    for ev in events:
        assert isinstance(decode_engagement(encode(ev)), EngagementEvent)
        out += user.on_event(ev)
    return out + user.flush()


@pytest.mark.parametrize(
    ("rating", "fraction", "completed", "abandoned", "feedback"),
    [
        (5.0, 1.0, True, False, "liked"),
        (4.0, 1.0, True, False, "liked"),
        (3.5, 0.7, False, False, None),
        (3.0, 0.5, False, False, None),
        (2.5, 0.2, False, True, "disliked"),
        (0.5, 0.2, False, True, "disliked"),
    ],
)
def test_the_flow_reads_each_rating_as_the_documented_play(
    rating: float, fraction: float, completed: bool, abandoned: bool, feedback: str | None
) -> None:
    out = replay_user(movielens.session(Rating("u1", "m1", rating, 1000, 0), 1_000_000))
    [segment] = [x for x in out if isinstance(x, Segment)]
    assert segment.watch_fraction == pytest.approx(fraction)
    assert (segment.completed, segment.early_abandon) == (completed, abandoned)
    assert [x.signal for x in out if isinstance(x, Feedback)] == ([feedback] if feedback else [])


def _ratings(rows: list[tuple[str, int, float, int]]) -> list[Rating]:
    return [Rating(f"u{u}", f"m{i}", r, ts, n) for n, (u, i, r, ts) in enumerate(rows)]


ratings_lists = st.lists(
    st.tuples(
        st.sampled_from("ab"),
        st.integers(0, 5),
        st.sampled_from([1.0, 3.0, 3.5, 5.0]),
        st.integers(1000, 1030),
    ),
    max_size=25,
).map(_ratings)


@settings(max_examples=60, deadline=None)
@given(ratings_lists)
def test_sessions_are_in_time_order_never_overlap_and_lose_no_event(ratings) -> None:
    # Ratings in the same second (MovieLens users rate in bursts) become consecutive views.
    events = movielens.sessions(ratings)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len({e.event_id for e in events}) == len(events)
    for user in {r.user for r in ratings}:
        mine = [e for e in events if e.user_id == user]
        spans: dict[str | None, list[int]] = {}
        for e in mine:
            spans.setdefault(e.session_id, []).append(e.ts)
        ordered = sorted((min(t), max(t)) for t in spans.values())
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ordered))
        out = replay_user(mine)
        assert not [x for x in out if isinstance(x, Dropped)]
        expected = sorted((r.ts, r.row) for r in ratings if r.user == user)
        starts = sorted(spans[f"ml-{row}"][0] for _, row in expected)
        assert all(s >= ts * 1000 for s, (ts, _) in zip(starts, expected, strict=True))
        assert len([x for x in out if isinstance(x, Segment)]) == len(expected)


def test_a_user_sample_is_seeded_and_keeps_only_the_sampled_users(tmp_path: Path) -> None:
    data = movielens.load(write_data_set(tmp_path))
    one = sample_users(data, 1, seed=5)
    assert sample_users(data, 1, seed=5) == one
    [user] = {r.user for r in one.ratings}
    assert all(t.user == user for t in one.tags)
    assert one.movies == data.movies
    assert sample_users(data, 10, seed=5).ratings == data.ratings
