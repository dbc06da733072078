"""The behaviour space: positives as the flow defines them, the factorisation, the serving side."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.settings import Settings
from operators import behaviour
from operators.behaviour import MIN_USERS, Positives, factorise
from operators.dedup import id_hash64
from operators.item_info import no_items
from serving.behaviour import BehaviourSpace
from tests.unit.playback_events import ev
from tests.unit.serving_fixtures import build_world, request, service_for


def planted(users_per_group: int = 30, items_per_group: int = 12, seed: int = 1) -> dict:
    """Two audiences, each engaging with a random half of its own group's items."""
    rng = random.Random(seed)
    baskets = {}
    for group in ("news", "comedy"):
        items = [f"{group}-{n}" for n in range(items_per_group)]
        for u in range(users_per_group):
            baskets[f"{group}-fan{u}"] = rng.sample(items, items_per_group // 2)
    return baskets


def test_items_of_one_audience_are_closer_than_items_of_another() -> None:
    space = factorise(planted(), dim=4)
    v = dict(zip(space.ids, space.vectors, strict=True))
    same = [v[f"news-{a}"] @ v[f"news-{b}"] for a in range(12) for b in range(12) if a != b]
    other = [v[f"news-{a}"] @ v[f"comedy-{b}"] for a in range(12) for b in range(12)]
    assert min(same) > max(other)
    assert space.users == 60 and space.dim == 4


def test_a_blockbuster_is_damped_by_its_own_engagement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two audiences of their own items, and one item nearly everyone engaged with: for a
    seed of the small audience, the blockbuster scores lower against that audience's own
    items than it would without the normalisation (a = 1: candidates undamped)."""
    rng = random.Random(1)
    baskets = {}
    for group, users in (("A", 20), ("B", 60)):
        items = [f"{group}{n}" for n in range(8)]
        for u in range(users):
            basket = rng.sample(items, 4)
            baskets[f"{group}-u{u}"] = [*basket, "hit"] if rng.random() < 0.9 else basket

    def hit_share(exponent: float) -> float:
        monkeypatch.setattr(behaviour, "ANCHOR_EXPONENT", exponent)
        space = factorise(baskets, dim=4)
        held = BehaviourSpace.of("v", space.ids, space.vectors, space.counts.tolist())
        match = held.match([id_hash64("A0")])
        assert match is not None
        scores = dict(zip(space.ids, match.features(space.ids).tolist(), strict=True))
        return scores["hit"] / max(scores[f"A{n}"] for n in range(1, 8))

    damped, undamped = hit_share(0.7), hit_share(1.0)
    assert damped < 0.8 * undamped


def test_items_one_user_engaged_with_and_single_item_users_are_left_out() -> None:
    baskets = {"u1": ["a", "b", "solo"], "u2": ["a", "b"], "u3": ["a"], "u4": ["b", "c"]}
    space = factorise(baskets, dim=8)
    assert space.ids == ["a", "b"]  # "solo" and "c": one user each (MIN_USERS)
    assert MIN_USERS == 2 and space.users == 2  # u3 has one kept item, u4 too
    assert space.vectors.shape == (2, 8)  # rank 1, padded to the configured length
    assert factorise({"u1": ["a"]}, dim=8).ids == []


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_same_baskets_in_any_order_give_the_same_vectors(rng: random.Random) -> None:
    baskets = planted(users_per_group=10, items_per_group=8)
    users = list(baskets)
    rng.shuffle(users)
    shuffled = {u: rng.sample(baskets[u], len(baskets[u])) for u in users}
    a, b = factorise(baskets, dim=6), factorise(shuffled, dim=6)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_positives_are_the_flows_positive_engagements() -> None:
    positives = Positives(Settings(), no_items)
    events = [
        ev("media_started", 0, 0.0, media="watched"),
        ev("media_completed", 300, 300.0, media="watched"),
        ev("media_started", 400, 0.0, media="disliked"),
        ev("media_stopped", 700, 300.0, media="disliked"),
        ev("media_disliked", 701, None, media="disliked"),
        ev("media_liked", 800, None, media="liked"),
        ev("media_started", 900, 0.0, media="open"),
        ev("media_progress", 910, 10.0, media="open"),
        ev("media_progress", 920, 20.0, media="open"),
    ]
    for e in events:
        positives.add(e)
    baskets = positives.finish()  # the open view is closed as it stands
    assert baskets == {"u1": ["watched", "liked", "open"]}
    assert positives.events == len(events)


def space_of(ids: list[str], vectors: list[list[float]]) -> BehaviourSpace:
    return BehaviourSpace.of("beh.1", ids, np.asarray(vectors, dtype=np.float32))


def test_the_users_point_weighs_recent_seeds_more_and_anchors_on_the_strongest() -> None:
    space = space_of(["s1", "s2", "x", "y"], [[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]])
    match = space.match([id_hash64("s1"), id_hash64("unknown"), id_hash64("s2")])
    assert match is not None
    scores = dict(zip(["x", "y", "none"], match.features(["x", "y", "none"]).tolist(), strict=True))
    assert scores["x"] == 1.0 and 0 < scores["y"] < 1 and scores["none"] == 0.0
    assert match.anchor("x") == "s1" and match.anchor("y") == "s2"
    assert match.anchor("none") is None
    assert space.match([id_hash64("unknown")]) is None


def test_the_feed_serves_behaviour_neighbours_anchored_on_a_watched_item() -> None:
    world = build_world()
    seeds = ("news-V0", "news-V1")
    world.user("u1", "news", "VIDEO", recent=seeds, co_recent=b"".join(map(id_hash64, seeds)))
    # In the behaviour space a comedy item sits next to news-V0 (same audience), far
    # from it in content; every other item is far from both seeds.
    ids = ["news-V0", "news-V1", "comedy-V2"] + [f"science-V{n}" for n in range(8)]
    vectors = [[1, 0, 0], [0, 1, 0], [0.95, 0.05, 0]] + [[0, 0, 1]] * 8
    service, _ = service_for(world)
    service.behaviour.space = space_of(ids, vectors)
    body = service.feed(request("u1", limit=20))
    items = {i["media_id"]: i for i in body["items"]}
    assert items["comedy-V2"]["source"] == "behaviour"
    assert items["comedy-V2"]["reason"] == {
        "type": "because_you_watched", "anchor_media_id": "news-V0"
    }  # fmt: skip
    assert all(i["reason"].get("anchor_media_id") != i["media_id"] for i in body["items"])
    # The seeds themselves are never behaviour hits (this user's record does not list them
    # as consumed, so content retrieval may still offer them).
    assert all(items[s]["source"] != "behaviour" for s in seeds if s in items)
    service.behaviour.space = None  # no version loaded: the source is off, the feed answers
    without = service.feed(request("u1", limit=20))
    assert len(without["items"]) == 20
    assert all(i["source"] != "behaviour" for i in without["items"])
