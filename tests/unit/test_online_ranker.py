"""The online ranker: progressive validation, folding, cadence, state (operators/online_ranker)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.labels import Example, LabelledImpression
from operators.online_ranker import OnlineRanker, RankerConfig, roc_auc
from operators.ranking_contract import FEATURES, encode_model, parse_model

NAMES = FEATURES[:3]  # real serving names, so documents parse
A, B, C = NAMES
TRUE_W = np.asarray([2.0, -1.0, 0.0])


def labelled(examples: tuple[Example, ...], ts: int = 0, rid: str = "r") -> LabelledImpression:
    return LabelledImpression(
        request_id=rid, user_id="u", ts=ts, arm="a", model_version="v", examples=examples
    )


def impressions(n: int, seed: int, ts0: int = 0, step_ms: int = 1_000, width: int = 3):
    """Impressions of 5 slots over features of different scales; clicks follow a planted
    logistic model plus a position effect."""
    rng = np.random.default_rng(seed)
    scale = np.asarray([1.0, 10.0, 0.1])
    out = []
    for k in range(n):
        x = rng.normal(size=(5, 3)) * scale + np.asarray([0.5, 3.0, -1.0])
        logit = (x / scale) @ TRUE_W - 0.5 * np.log1p(np.arange(5))
        y = rng.random(5) < 1 / (1 + np.exp(-logit))
        examples = tuple(
            Example(f"m{k}-{p}", p, tuple(x[p].tolist())[:width], bool(y[p]), "r") for p in range(5)
        )
        out.append(labelled(examples, ts0 + k * step_ms, f"r{k}"))
    return out


def config(**kw) -> RankerConfig:
    base = {"features": NAMES, "min_examples": 50, "publish_every_ms": 60_000}
    return RankerConfig(**{**base, **kw})


@settings(max_examples=50, deadline=None)
@given(
    scores=st.lists(st.integers(0, 5), min_size=2, max_size=30),
    data=st.data(),
)
def test_auc_is_the_share_of_correctly_ordered_pairs(scores: list[int], data) -> None:
    labels = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    pairs = [
        (1.0 if s > t else 0.5 if s == t else 0.0)
        for s, y in zip(scores, labels, strict=True) if y
        for t, z in zip(scores, labels, strict=True) if not z
    ]  # fmt: skip
    got = roc_auc(scores, labels)
    assert got == (None if not pairs else pytest.approx(sum(pairs) / len(pairs)))


def test_it_learns_a_planted_model_and_validates_before_learning() -> None:
    ranker = OnlineRanker(config(min_examples=10**9))
    first = impressions(1, seed=1)[0]
    ranker.on_event(first)
    # The very first prediction is made by an untrained model: p = 0.5.
    assert ranker.progress.loss[0] == pytest.approx(math.log(2))
    for li in impressions(600, seed=2):
        ranker.on_event(li)
    assert ranker.progress.count == ranker.examples == 3005
    assert ranker.progress.auc is not None and ranker.progress.auc > 0.8
    assert ranker.progress.log_loss is not None and ranker.progress.log_loss < math.log(2)
    weights, _bias = ranker.serving_model()
    assert weights[A] > 0 > weights[B] and abs(weights[C]) < weights[A]
    assert ranker.snapshot()["weights"]["position"] < 0  # lower slots are seen less


def test_the_published_model_scores_raw_features_like_the_trained_one_at_the_top_slot() -> None:
    # Serving multiplies raw features; training standardises them: the fold must agree.
    ranker = OnlineRanker(config())
    for li in impressions(200, seed=3):
        ranker.on_event(li)
    weights, bias = ranker.serving_model()
    served = parse_model(encode_model("v1", weights, bias))
    rows = np.random.default_rng(4).normal(size=(20, 3)) * [1.0, 10.0, 0.1]
    matrix = np.zeros((len(rows), len(FEATURES)), dtype=np.float32)
    matrix[:, :3] = rows
    folded = served.score(matrix)
    for row, got in zip(rows, folded, strict=True):
        x = np.asarray([*row, 0.0])  # position 0 = log1p(0)
        z = ranker.scaler.transform(x)
        want = ranker.average[:-1] @ z + ranker.average[-1]  # the averaged model, standardised
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_versions_follow_the_event_time_cadence_and_flush_publishes_the_rest() -> None:
    ranker = OnlineRanker(config(min_examples=50, publish_every_ms=60_000))
    published = []
    for li in impressions(200, seed=5, step_ms=1_000):  # 200 s of event time, 1,000 examples
        published += [(v.seq, v.ts, v.examples) for v in ranker.on_event(li)]
    # First once 50 examples were seen (impression 9, ts 9 s), then every 60 s of event time.
    assert [(s, t) for s, t, _ in published] == [(1, 9_000), (2, 69_000), (3, 129_000),
                                                 (4, 189_000)]  # fmt: skip
    assert [v.seq for v in ranker.flush()] == [5]
    assert ranker.flush() == []  # nothing new since


def test_no_version_before_the_minimum_of_examples() -> None:
    ranker = OnlineRanker(config(min_examples=10_000))
    assert all(ranker.on_event(li) == [] for li in impressions(50, seed=6))
    assert ranker.flush() == []


def test_rows_without_features_are_counted_and_skipped() -> None:
    ranker = OnlineRanker(config())
    ranker.on_event(impressions(2, seed=7, width=2)[0])
    bad = impressions(1, seed=8)[0]
    nan = Example("m", 0, (math.nan, 0.0, 0.0), True, "liked")
    ranker.on_event(labelled((*bad.examples, nan)))
    assert (ranker.unusable, ranker.examples) == (6, 5)


def test_snapshot_restore_continue_gives_the_same_versions() -> None:
    stream = impressions(300, seed=9)
    whole = OnlineRanker(config())
    expected = [v for li in stream for v in whole.on_event(li)]
    first = OnlineRanker(config())
    got = [v for li in stream[:137] for v in first.on_event(li)]
    resumed = OnlineRanker(config(), resume=first.snapshot())
    got += [v for li in stream[137:] for v in resumed.on_event(li)]
    assert got == expected and len(expected) >= 3


def test_a_snapshot_of_another_feature_set_is_refused() -> None:
    snap = OnlineRanker(config()).snapshot()
    with pytest.raises(ValueError, match="differ"):
        OnlineRanker(config(features=NAMES[:2]), resume=snap)


def test_a_model_with_no_spread_publishes_zero_weights_not_nans() -> None:
    ranker = OnlineRanker(config(min_examples=1))
    flat = Example("m", 0, (1.0, 1.0, 1.0), True, "liked")
    (version,) = ranker.on_event(labelled((flat,)))
    assert version.weights == dict.fromkeys(NAMES, 0.0)
    assert math.isfinite(version.bias)
