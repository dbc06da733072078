"""The offline protocols and the baselines on small generated data with planted answers."""

from __future__ import annotations

import doctest
import math
import random
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedflow.evaluation import baselines, movielens, protocol
from feedflow.evaluation.command import source_shares, source_table
from feedflow.evaluation.movielens import Rating
from feedflow.evaluation.protocol import (
    Checkpoint,
    Interaction,
    Judge,
    checkpoints,
    hit_rate_at,
    leave_last_out,
    ndcg_at,
    popularity,
    top_unseen,
)

interactions = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, 9), st.integers(0, 4)), max_size=40
).map(lambda rows: [Interaction(f"u{u}", f"m{i}", ts, n) for n, (u, i, ts) in enumerate(rows)])


def test_the_last_interaction_is_held_out_and_a_timestamp_tie_goes_to_the_later_row() -> None:
    rows = [
        Interaction("u1", "m1", 100, 0),
        Interaction("u1", "m2", 300, 1),  # the tie at 300: row 3 is later in the file
        Interaction("u2", "m1", 50, 2),
        Interaction("u1", "m3", 300, 3),
        Interaction("u1", "m4", 200, 4),  # later in the file, earlier in time
        Interaction("u3", "m9", 10, 5),  # one interaction: not evaluated, stays in training
    ]
    split = leave_last_out(rows)
    assert {u: x.item for u, x in split.held_out.items()} == {"u1": "m3"}
    assert [x.row for x in split.train] == [0, 1, 2, 4, 5]
    assert split.history() == {"u1": {"m1", "m2", "m4"}, "u2": {"m1"}, "u3": {"m9"}}


@given(interactions, st.randoms(use_true_random=False))
def test_the_split_does_not_depend_on_the_order_rows_are_read_in(rows, rnd) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    split, again = leave_last_out(rows), leave_last_out(shuffled)
    assert split.held_out == again.held_out
    assert sorted(x.row for x in split.train) == sorted(x.row for x in again.train)
    for user, held in split.held_out.items():
        mine = [x for x in rows if x.user == user]
        assert len(mine) >= 2
        assert (held.ts, held.row) == max((x.ts, x.row) for x in mine)
        assert held not in split.train
    assert len(split.train) + len(split.held_out) == len(rows)


def test_hit_rate_and_ndcg_of_an_oracle_that_places_the_item_at_known_ranks() -> None:
    # Ranks 1, 3, 15 and a miss: 1/log2(2) = 1, 1/log2(4) = 1/2, 1/log2(16) = 1/4.
    held = {"u1": "t1", "u2": "t2", "u3": "t3", "u4": "t4"}
    filler = [f"x{n}" for n in range(20)]

    def placed(target: str, rank: int | None) -> list[str]:
        out = list(filler)
        if rank is not None:
            out[rank - 1] = target
        return out

    lists = {"u1": placed("t1", 1), "u2": placed("t2", 3), "u3": placed("t3", 15)}
    lists["u4"] = placed("t4", None)
    m = Judge(held, catalogue_size=100).score(lists)
    assert m.hit_rate == {10: 0.5, 20: 0.75}
    assert m.ndcg[10] == pytest.approx((1 + 0.5) / 4)
    assert m.ndcg[20] == pytest.approx((1 + 0.5 + 0.25) / 4)
    assert m.users == 4 and m.short_lists == 0


def test_a_list_longer_than_20_is_cut_and_a_missing_user_counts_as_a_miss() -> None:
    held = {"u1": "t", "u2": "t"}
    m = Judge(held, catalogue_size=50).score({"u1": [f"x{n}" for n in range(20)] + ["t"]})
    assert m.hit_rate[20] == 0.0 and m.short_lists == 1
    assert hit_rate_at([], 10) == 0.0 and ndcg_at([], 10) == 0.0
    assert ndcg_at([1, 2], 1) == pytest.approx(0.5)
    assert ndcg_at([2], 10) == pytest.approx(1 / math.log2(3))


def test_coverage_genre_diversity_and_popular_share_on_a_hand_made_case() -> None:
    judge = Judge(
        held_out={"u1": "z", "u2": "z"},
        catalogue_size=10,
        genres={"a": frozenset({"Drama"}), "b": frozenset({"Drama", "War"}), "c": frozenset()},
        popular=frozenset({"a", "d"}),
    )
    m = judge.score({"u1": ["a", "b", "c"], "u2": ["a", "d"]})
    assert m.coverage == pytest.approx(4 / 10)  # a, b, c, d
    assert m.genre_diversity == pytest.approx((2 + 1) / 2)  # {Drama, War}, {Drama}
    assert m.popular_share == pytest.approx(3 / 5)  # a, a, d of five slots


def test_training_items_never_reach_a_list() -> None:
    assert top_unseen(["h1", "a", "h2", "b", "a", "c"], {"h1", "h2"}, k=2) == ["a", "b"]
    rng = random.Random(4)
    pairs = {(f"u{rng.randrange(30)}", f"m{rng.randrange(40)}") for _ in range(300)}
    m = baselines.TrainMatrix.of(pairs)
    seen: dict[str, set[str]] = {}
    for u, i in pairs:
        seen.setdefault(u, set()).add(i)
    for build in (baselines.most_pop, baselines.item_knn, baselines.ease):
        lists = baselines.recommend(m, build(m), sorted(seen), k=20)
        for user, top in lists.items():
            assert not set(top) & seen[user], (build.__name__, user)
            assert len(top) == min(20, len(m.items) - len(seen[user]))
            assert len(set(top)) == len(top)


def test_most_pop_follows_the_planted_popularity_ties_by_id() -> None:
    # Item m<k> is consumed by k users (m9: 9 users, …); m5 and m5b are tied.
    pairs = [(f"u{n}", f"m{k}") for k in range(1, 10) for n in range(k)]
    pairs += [(f"u{n}", "m5b") for n in range(5)]
    rows = [Interaction(u, i, 0, n) for n, (u, i) in enumerate(pairs)]
    planted = ["m9", "m8", "m7", "m6", "m5", "m5b", "m4", "m3", "m2", "m1"]
    assert popularity(rows) == planted
    m = baselines.TrainMatrix.of(pairs)
    lists = baselines.recommend(m, baselines.most_pop(m), ["u0", "u8", "new"], k=20)
    assert lists["new"] == planted  # no history: the whole popularity order
    assert lists["u8"] == planted[1:]  # u8 had only m9
    assert lists["u0"] == []  # u0 had everything


def _clustered(users: int, seed: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Two item clusters; each user consumes most of one; returns pairs and one held-out item."""
    rng = random.Random(seed)
    pairs, held = [], {}
    for n in range(users):
        cluster = n % 2
        items = [f"c{cluster}-{k}" for k in range(12)]
        rng.shuffle(items)
        pairs += [(f"u{n}", i) for i in items[:8]]
        held[f"u{n}"] = items[8]
        pairs += [(f"u{n}", f"pop-{k}") for k in range(3) if rng.random() < 0.9]
    return pairs, held


@pytest.mark.parametrize("build", [baselines.item_knn, baselines.ease])
def test_neighbourhood_models_recover_planted_clusters_where_most_pop_cannot(build) -> None:
    pairs, held = _clustered(60, seed=1)
    m = baselines.TrainMatrix.of(pairs)
    judge = Judge(held, catalogue_size=len(m.items))
    users = sorted(held)
    model = judge.score(baselines.recommend(m, build(m), users, k=20))
    pop = judge.score(baselines.recommend(m, baselines.most_pop(m), users, k=20))
    # A user has 4 unseen items of their cluster: a model that ranks them first hits @4.
    assert model.hit_rate[10] == 1.0
    assert pop.hit_rate[10] < 0.8


def test_ease_matches_its_closed_form_on_a_tiny_matrix() -> None:
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c")]
    m = baselines.TrainMatrix.of(pairs)
    x = m.x.astype(np.float64)
    lam = 2.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(3))
    b = np.eye(3) - p / np.diag(p)[None, :]
    got = baselines.ease(m, lam)(m.x)
    assert np.allclose(got, x @ b, atol=1e-5)


# -- temporal protocol ---------------------------------------------------------------------

# (user, time) events in time order, and a moment for some of the users; small ranges so that
# ties (between events, between moments, and between an event and a moment) are common.
timed_events = st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 30)), max_size=40).map(
    lambda rows: sorted(rows, key=lambda r: r[1])
)
moments_of = st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 35), max_size=6)


def _check_plan(events, moments, plan: list[Checkpoint], window: int) -> None:
    """The invariants of a temporal replay's plan (see protocol.checkpoints)."""
    assert sorted(u for cp in plan for u in cp.users) == sorted(moments)
    assert [cp.at for cp in plan] == sorted({cp.at for cp in plan})
    for cp in plan:
        applied, later = events[: cp.applied], events[cp.applied :]
        assert all(ts < cp.at for _, ts in applied)  # nothing at or after the pause
        assert all(ts >= cp.at for _, ts in later)  # and everything before it
        for user in cp.users:
            assert cp.at <= moments[user] <= cp.at + window
            # The user's own earlier events are all applied when they are asked.
            own_before = [ts for u, ts in events if u == user and ts < moments[user]]
            assert all(ts < cp.at for ts in own_before)


@settings(max_examples=200, deadline=None)
@given(timed_events, moments_of, st.sampled_from([0, 3, 10, 100]))
def test_no_event_at_or_after_a_moment_is_applied_and_every_earlier_own_event_is(
    events, moments, window
) -> None:
    _check_plan(events, moments, checkpoints(events, moments, window), window)


@settings(max_examples=100, deadline=None)
@given(timed_events, moments_of)
def test_without_a_window_a_checkpoint_is_exactly_one_moment_and_equal_moments_share_it(
    events, moments
) -> None:
    plan = checkpoints(events, moments, window=0)
    assert [cp.at for cp in plan] == sorted(set(moments.values()))
    assert all({moments[u] for u in cp.users} == {cp.at} for cp in plan)
    assert all(list(cp.users) == sorted(cp.users) for cp in plan)


def test_ties_an_event_at_the_moment_comes_after_the_question() -> None:
    events = [("a", 10), ("b", 20), ("a", 20), ("c", 20), ("b", 25)]
    plan = checkpoints(events, {"a": 20, "b": 20, "c": 30})
    # At 20: a's and b's moment; every event at 20, theirs included, waits until after it.
    assert plan == [Checkpoint(20, 1, ("a", "b")), Checkpoint(30, 5, ("c",))]


def test_a_window_groups_users_unless_their_own_events_fall_inside_it() -> None:
    events = [("a", 1), ("b", 2), ("c", 3), ("b", 12), ("x", 13), ("c", 30)]
    plan = checkpoints(events, {"a": 10, "b": 14, "c": 15, "d": 40}, window=10)
    # b's own event at 12 lies between the pause at 10 and b's moment: b gets its own pause,
    # and c (nothing of its own in 14..15) joins b's; d is too far from it.
    assert plan == [
        Checkpoint(10, 3, ("a",)),
        Checkpoint(14, 5, ("b", "c")),
        Checkpoint(40, 6, ("d",)),
    ]


def test_checkpoints_refuse_events_out_of_time_order() -> None:
    with pytest.raises(ValueError, match="time order"):
        checkpoints([("a", 5), ("b", 4)], {"a": 9})


def _laid_out_ratings(rows: list[tuple[str, int]]) -> list[Rating]:
    return [Rating(f"u{u}", f"m{n}", 4.0, ts, n) for n, (u, ts) in enumerate(rows)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1000, 1100)), max_size=20).map(
        _laid_out_ratings
    )
)
def test_a_movielens_moment_follows_every_training_event_of_its_user(ratings) -> None:
    # The temporal protocol asks a user at the start their held-out session would have had;
    # MovieLens users rate in bursts, so that is often seconds after the rating's own time.
    split = leave_last_out(ratings)
    events = movielens.sessions(split.train)
    starts = movielens.session_starts(ratings)
    moments = {u: starts[x.row] for u, x in split.held_out.items()}
    for user, moment in moments.items():
        own = [e.ts for e in events if e.user_id == user]
        assert own and max(own) < moment  # every training event of theirs is earlier
        assert moment >= split.held_out[user].ts * 1000
    # Laying the held-out ratings out too moves no training session.
    train_starts = movielens.session_starts(split.train)
    assert all(starts[row] == train_starts[row] for row in train_starts)
    assert set(starts) == {r.row for r in ratings}
    plan = checkpoints([(e.user_id, e.ts) for e in events], moments)
    _check_plan([(e.user_id, e.ts) for e in events], moments, plan, 0)


def test_most_pop_at_counts_only_the_past_and_matches_a_recount() -> None:
    rng = random.Random(11)
    timed = [
        (f"u{rng.randrange(12)}", f"m{rng.randrange(15)}", rng.randrange(50)) for _ in range(200)
    ]
    m = baselines.TrainMatrix.of((u, i) for u, i, _ in timed)
    moments = {u: rng.randrange(60) for u in m.users}
    lists = baselines.most_pop_at(m, timed, moments, k=5)
    first: dict[tuple[str, str], int] = {}
    for u, i, ts in timed:
        first[u, i] = min(ts, first.get((u, i), ts))
    for user, top in lists.items():
        counts = {
            i: sum(1 for (_, i2), ts in first.items() if i2 == i and ts < moments[user])
            for i in m.items
        }
        seen = {i for (u, i) in first if u == user}
        ranked = sorted(
            (i for i in m.items if counts[i] > 0 and i not in seen), key=lambda i: (-counts[i], i)
        )
        assert top == ranked[:5], user


def test_most_pop_at_a_moment_before_everything_ranks_nothing() -> None:
    m = baselines.TrainMatrix.of([("u1", "a"), ("u2", "b")])
    assert baselines.most_pop_at(m, [("u1", "a", 5), ("u2", "b", 6)], {"u1": 5}, k=3) == {"u1": []}


def test_source_shares_and_their_table() -> None:
    sources = {"popular": 3, "ann": 15, "co_engagement": 2}
    assert source_shares(sources) == {"ann": 0.75, "popular": 0.15, "co_engagement": 0.1}
    assert source_shares({}) == {}
    lines = source_table(sources).splitlines()
    assert lines[1].split() == ["source", "slots", "share"]
    assert [line.split() for line in lines[2:]] == [
        ["ann", "15", "0.7500"],
        ["popular", "3", "0.1500"],
        ["co_engagement", "2", "0.1000"],
    ]


@pytest.mark.parametrize("module", [protocol, baselines, movielens])
def test_the_docstring_examples_hold(module: ModuleType) -> None:
    # The feedflow package is outside pytest's doctest paths; these are pure, so run them here.
    assert doctest.testmod(module).failed == 0
