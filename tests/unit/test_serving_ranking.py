"""Ranking features, the linear model and its published format, the page rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from operators.content import ItemRecord, Stamp
from operators.ranking_contract import (
    FEATURES,
    ModelFormatError,
    RankerModel,
    default_model,
    encode_model,
    parse_model,
)
from operators.user_features import UserFeatures
from serving.item_table import Vocab
from serving.ranking import (
    ANN,
    CO_ENGAGED,
    CONTINUE,
    EXPLORE,
    FRESH,
    Pool,
    UserContext,
    feature_matrix,
)
from serving.rules import RuleParams, apply_rules, reason
from tests.unit.serving_fixtures import hashes

DAY = 86_400_000
COL = {name: n for n, name in enumerate(FEATURES)}


def record(media_id: str, category: str = "news", kind: str = "VIDEO", **kw: object) -> ItemRecord:
    fields: dict[str, object] = {
        "media_id": media_id, "stamp": Stamp(0, 0), "category": category,
        "content_type": kind, "creator_id": f"c-{media_id}", "language": "en",
    }  # fmt: skip
    fields.update(kw)
    return ItemRecord(**fields)


VOCAB = Vocab()


def pool_of(
    records: list[ItemRecord], sources: list[str] | None = None, sims: list[float] | None = None
) -> Pool:
    n = len(records)
    return Pool.of(records, sources or [ANN] * n, sims or [0.0] * n, VOCAB)


def test_feature_matrix_reads_user_and_item_features() -> None:
    features = UserFeatures(
        engagements=50, top_categories=("news", "music"), genre_affinity_30m=("music",),
        creators=hashes(["c-b", "c-a"]), language="en", content_type="AUDIO",
    )  # fmt: skip
    ctx = UserContext.of(features)
    recs = [
        record("a", "news", "AUDIO", published_at=10 * DAY),
        record("b", "music", "VIDEO", language="de", published_at=9 * DAY),
        record("c", "sports", "AUDIO"),
    ]
    pool = pool_of(recs, [ANN, FRESH, CONTINUE], [0.9, 0.1, 0.0])
    stats = np.asarray(
        [[0.8, 0.9, 1000.0, 0.7], [0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 1e9, 1.0]], np.float32
    )
    m = feature_matrix(ctx, pool, stats, 10 * DAY, DAY, VOCAB)
    assert m.shape == (3, len(FEATURES)) and m.dtype == np.float32
    assert m[:, COL["similarity"]].tolist() == pytest.approx([0.9, 0.1, 0.0])
    assert m[:, COL["category_affinity"]].tolist() == pytest.approx([1.0, 0.6, 0.0])
    assert m[:, COL["session_genre"]].tolist() == [0.0, 1.0, 0.0]
    assert m[:, COL["creator_affinity"]].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert m[:, COL["type_match"]].tolist() == [1.0, -1.0, 1.0]
    assert m[:, COL["language_match"]].tolist() == [1.0, 0.0, 1.0]
    assert m[:, COL["completion_rate"]].tolist() == pytest.approx([0.8, 0.5, 0.1])
    assert m[:, COL["trending"]].tolist() == pytest.approx([1.0, 0.0, 1.0])
    assert m[:, COL["freshness"]].tolist() == pytest.approx([1.0, math.exp(-1), 0.0])
    assert m[:, COL["continue_watching"]].tolist() == [0.0, 0.0, 1.0]
    assert m[:, COL["popularity"]].tolist() == pytest.approx([0.7, 0.0, 1.0])


def test_unknown_user_has_neutral_personal_features() -> None:
    pool = pool_of([record("a")])
    m = feature_matrix(UserContext.of(None), pool, np.zeros((1, 3), np.float32), 0, DAY, VOCAB)
    for name in ("similarity", "category_affinity", "creator_affinity", "type_match"):
        assert m[0, COL[name]] == 0.0


def test_published_weights_round_trip_and_score() -> None:
    model = parse_model(encode_model("v3", {"similarity": 2.0, "trending": -1.0}, bias=0.5))
    matrix = np.zeros((2, len(FEATURES)), np.float32)
    matrix[0, COL["similarity"]] = 1.0
    matrix[1, COL["trending"]] = 1.0
    assert model.version == "v3"
    assert model.score(matrix).tolist() == pytest.approx([2.5, -0.5])


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"version": "v1", "weights": {"no_such_feature": 1.0}}',
        b'{"version": "v1", "weights": {"similarity": NaN}}',
        b'{"version": "", "weights": {}}',
        b'{"version": "v1", "weights": {}, "extra": 1}',
    ],
)
def test_bad_weight_documents_are_rejected(raw: bytes) -> None:
    with pytest.raises(ModelFormatError):
        parse_model(raw)


def test_model_refuses_a_matrix_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        default_model().score(np.zeros((3, 2), np.float32))


def ranked(
    records: list[ItemRecord],
    params: RuleParams,
    ctx: UserContext | None = None,
    sources: list[str] | None = None,
    fresh: list[float] | None = None,
) -> list[str]:
    pool = pool_of(records, sources)
    scores = -np.arange(len(records), dtype=np.float64)  # input order is score order
    fresh_arr = np.asarray(fresh if fresh is not None else [0.0] * len(records))
    placed = apply_rules(ctx or UserContext(), pool, scores, fresh_arr, params, VOCAB)
    return [pool.ids[p.row] for p in placed]


def test_caps_per_category_and_creator_hold_when_candidates_allow() -> None:
    recs = [record(f"n{i}", "news", creator_id="c1") for i in range(6)]
    recs += [record(f"m{i}", "music") for i in range(6)]
    page = ranked(recs, RuleParams(limit=6, max_per_category=4, max_per_creator=2))
    assert page == ["n0", "n1", "m0", "m1", "m2", "m3"]


def test_caps_give_way_rather_than_leave_the_page_short() -> None:
    recs = [record(f"n{i}", "news", creator_id="c1") for i in range(5)]
    page = ranked(recs, RuleParams(limit=4, max_per_category=1, max_per_creator=1))
    assert page == ["n0", "n1", "n2", "n3"]


@pytest.mark.parametrize(("diversity", "expected_video"), [(0.0, 0), (0.2, 2), (1.0, 10)])
def test_diversity_sets_the_cross_type_share(diversity: float, expected_video: int) -> None:
    ctx = UserContext(content_type="AUDIO", categories={"news": 1.0})
    recs = [record(f"a{i}", "news", "AUDIO") for i in range(30)]
    recs += [record(f"v{i}", "news", "VIDEO") for i in range(30)]
    params = RuleParams(limit=20, max_per_category=20, diversity=diversity, explore_share=0)
    page = ranked(recs, params, ctx)
    assert len(page) == 20
    assert sum(m.startswith("v") for m in page) == expected_video


def test_explore_share_brings_in_other_categories() -> None:
    ctx = UserContext(categories={"news": 1.0})
    recs = [record(f"n{i}", "news") for i in range(20)] + [record("x0", "science")]
    params = RuleParams(limit=10, max_per_category=10, explore_share=0.1)
    assert "x0" in ranked(recs, params, ctx)
    assert "x0" not in ranked(recs, RuleParams(limit=10, max_per_category=10, explore_share=0))


def test_a_new_release_gets_a_place_even_when_it_ranks_low() -> None:
    recs = [record(f"n{i}", "news") for i in range(20)] + [record("new", "news")]
    fresh = [0.0] * 20 + [0.99]
    params = RuleParams(limit=5, max_per_category=10, new_boost=0.0, explore_share=0)
    assert "new" in ranked(recs, params, fresh=fresh)


def test_new_release_slots_judge_new_items_without_popularity() -> None:
    # Three new items that already drew an audience outscore one published a minute ago on
    # popularity alone; without it, the brand-new one is the best match and gets a new slot.
    recs = [record(f"old{i}", "news") for i in range(20)]
    recs += [record(f"hit{i}", "news") for i in range(3)] + [record("brand-new", "news")]
    fresh = np.asarray([0.0] * 20 + [0.9, 0.9, 0.9, 0.99])
    scores = np.concatenate([np.linspace(5.0, 3.0, 20), [2.0, 1.9, 1.8, 1.0]])
    popularity_term = np.asarray([1.5] * 23 + [0.0])
    params = RuleParams(limit=5, max_per_category=10, new_boost=0.0, explore_share=0)
    pool = pool_of(recs, None)

    def page(unproven: np.ndarray | None) -> list[str]:
        placed = apply_rules(UserContext(), pool, scores, fresh, params, VOCAB, unproven)
        return [pool.ids[p.row] for p in placed]

    assert "brand-new" not in page(None)
    assert "brand-new" in page(scores - popularity_term)


def test_requested_content_type_is_not_steered_by_diversity() -> None:
    ctx = UserContext(content_type="AUDIO")
    recs = [record(f"v{i}", "news", "VIDEO") for i in range(10)]
    params = RuleParams(limit=5, diversity=0.0, content_type="VIDEO")
    assert len(ranked(recs, params, ctx)) == 5


def test_reasons_name_the_anchor_or_the_source() -> None:
    assert reason(ANN, "m2", "m1") == {"type": "because_you_watched", "anchor_media_id": "m1"}
    assert reason(CONTINUE, "m2", None) == {"type": "continue_watching"}
    assert reason(CO_ENGAGED, "m2", "m1") == {
        "type": "because_you_watched",
        "anchor_media_id": "m1",
    }
    assert reason(ANN, "m2", "m2") == {"type": "popular"}  # never anchored on itself
    assert reason(FRESH, "m2", None) == {"type": "new"}
    assert reason(EXPLORE, "m2", None) == {"type": "explore"}
    assert reason(ANN, "m2", None) == {"type": "popular"}


def test_weights_of_the_default_model_cover_every_feature() -> None:
    assert isinstance(default_model(), RankerModel)
    assert np.count_nonzero(default_model().vector) == len(FEATURES)
