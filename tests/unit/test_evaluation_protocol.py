"""The offline protocol and the baselines on small generated data with planted answers."""

from __future__ import annotations

import doctest
import math
import random
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedflow.evaluation import baselines, movielens, protocol
from feedflow.evaluation.protocol import (
    Interaction,
    Judge,
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


@pytest.mark.parametrize("module", [protocol, baselines, movielens])
def test_the_docstring_examples_hold(module: ModuleType) -> None:
    # The feedflow package is outside pytest's doctest paths; these are pure, so run them here.
    assert doctest.testmod(module).failed == 0
