"""The cold-start model: River matrix factorisation over cohorts, and its published lists."""

from __future__ import annotations

import pytest

from operators.cold_start import (
    CohortModel,
    CohortTally,
    cohort_key,
    generalisations,
    lookup_order,
)

SPANISH_AUDIO = [f"a{n}" for n in range(20)]
ENGLISH_VIDEO = [f"v{n}" for n in range(20)]


def planted_tally() -> CohortTally:
    """Spanish audio listeners love the `a` items, English video watchers the `v` items;
    Spanish listeners on a TV have barely started (two items)."""
    tally = CohortTally()
    for n, media in enumerate(SPANISH_AUDIO):
        tally.add("es|AUDIO|phone", media, 20.0 - 0.5 * n)
    for n, media in enumerate(ENGLISH_VIDEO):
        tally.add("en|VIDEO|tv", media, 20.0 - 0.5 * n)
        tally.add("en|VIDEO|phone", media, 10.0)
    tally.add("es|AUDIO|tv", "a0", 1.0)
    tally.add("es|AUDIO|tv", "a1", 1.0)
    return tally


def test_each_cohort_gets_the_items_its_cohort_engages_with() -> None:
    lists = CohortModel(seed=3).fit(planted_tally()).top_lists(k=10)
    assert set(lists["es|AUDIO|phone"]) <= set(SPANISH_AUDIO)
    assert set(lists["en|VIDEO|tv"]) <= set(ENGLISH_VIDEO)
    assert set(lists["en|*|*"]) <= set(ENGLISH_VIDEO)
    assert set(lists["*|AUDIO|*"]) <= set(SPANISH_AUDIO)


def test_a_sparse_cohort_borrows_from_cohorts_that_engage_alike() -> None:
    lists = CohortModel(seed=5).fit(planted_tally()).top_lists(k=10)
    sparse = lists["es|AUDIO|tv"]
    assert sum(m in SPANISH_AUDIO for m in sparse) >= 8, sparse
    assert len(set(sparse) - {"a0", "a1"}) >= 8  # more than the two it has seen


def test_published_scores_are_the_models_own_predictions() -> None:
    model = CohortModel(seed=1).fit(planted_tally())
    scores = model.scores("en|VIDEO|tv")
    for n, media in enumerate(model.items[:10]):
        assert scores[n] == pytest.approx(model.mf.predict_one("en|VIDEO|tv", media), abs=1e-9)


def test_a_context_is_looked_up_from_specific_to_general() -> None:
    assert lookup_order(None, "VIDEO", None) == ("*|VIDEO|*", "*|*|*")
    assert lookup_order("en", None, "tv")[0] == "en|*|tv"
    assert lookup_order("en", None, "tv")[-1] == "*|*|*"
    assert cohort_key("a|b", "VIDEO", "x" * 100) == "a/b|VIDEO|" + "x" * 32
    assert len(set(generalisations("en|VIDEO|tv"))) == 8


def test_the_tally_stays_bounded_and_keeps_the_heaviest_cells() -> None:
    tally = CohortTally(max_pairs=100)
    for n in range(1_000):
        tally.add("en|VIDEO|tv", f"m{n}", 1.0 + (n == 7) * 100)
    tally.add("en|VIDEO|tv", "m1", -5.0)  # negative outcomes carry no mass
    assert len(tally.cells) <= 100
    assert ("en|VIDEO|tv", "m7") in tally.cells


def test_an_empty_week_publishes_nothing() -> None:
    assert CohortModel().fit(CohortTally()).top_lists() == {}
