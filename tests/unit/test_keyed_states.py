"""One check for every keyed-state class the flows run (operators.keyed.KeyedState).

For inputs of one key drawn as each class's own tests draw them, cut anywhere:

- the snapshot survives pickling (Bytewax pickles it into the recovery store), and resuming
  from it gives back the same snapshot;
- snapshot → resume → continue emits what an uninterrupted run emits, end of input included;
- the inputs are left as they came (states keep their own copies).

A keyed class without a case here fails the suite: every new one gets the same checks.
"""

from __future__ import annotations

import copy
import pickle
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import operators
from operators.co_engagement import CoNeighbours
from operators.creator_stats import CreatorStats
from operators.item_stats import ItemStats
from operators.keyed import KeyedState
from operators.labels import LabelJoin
from operators.online_ranker import OnlineRanker
from operators.trending import TrendingBoard
from operators.user_engagement import UserEngagement
from tests.unit import test_co_engagement as co
from tests.unit import test_creator_stats as creators
from tests.unit import test_item_stats as items
from tests.unit import test_labels as labels
from tests.unit import test_online_ranker as ranker
from tests.unit import test_trending as trending
from tests.unit import test_user_engagement as users


@dataclass(frozen=True)
class Case:
    build: Callable[[Any], KeyedState[Any, Any]]  # from a resume snapshot, or None
    inputs: st.SearchStrategy[list[Any]]  # of one key


def _one_key(sequences: dict[str, list[str]]) -> list[Any]:
    msgs = [m for stream in co.messages_of(sequences).values() for m in stream]
    top = Counter(m.media_id for m in msgs).most_common(1)
    return [m for m in msgs if top and m.media_id == top[0][0]]


CLOCK = users.FakeClock()
CASES: dict[type[KeyedState[Any, Any]], Case] = {
    UserEngagement: Case(
        lambda resume: UserEngagement(users.SETTINGS, users.ITEMS, resume=resume, clock=CLOCK),
        users.user_streams(),
    ),
    ItemStats: Case(lambda resume: ItemStats(items.SETTINGS, items.ITEMS, resume), items.inputs),
    TrendingBoard: Case(lambda resume: TrendingBoard(3, 6, resume=resume), trending.updates),
    CoNeighbours: Case(
        lambda resume: CoNeighbours(4, 1000, 0, 10**9, resume), co.sequences_st.map(_one_key)
    ),
    LabelJoin: Case(
        lambda resume: LabelJoin(labels.CFG, resume),
        st.integers(0, 2**32 - 1).map(
            lambda seed: sorted(
                labels._traffic(random.Random(seed), 40, 5 * labels.W), key=lambda x: x.ts
            )
        ),
    ),
    CreatorStats: Case(CreatorStats, creators.inputs),
    OnlineRanker: Case(
        lambda resume: OnlineRanker(ranker.config(min_examples=20), resume),
        st.integers(0, 2**32 - 1).map(lambda seed: ranker.impressions(80, seed=seed % 1000)),
    ),
}


def keyed_classes() -> set[type]:
    """Every concrete KeyedState subclass in operators/."""
    for name in (
        "co_engagement",
        "creator_stats",
        "item_stats",
        "labels",
        "online_ranker",
        "trending",
    ):
        __import__(f"{operators.__name__}.{name}")
    found, todo = set(), list(KeyedState.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_keyed_class_has_a_case() -> None:
    assert keyed_classes() == set(CASES)


def emitted(state: KeyedState[Any, Any], xs: list[Any], end: bool) -> list[Any]:
    out = [y for x in xs for y in state.on_event(x)]
    return out + list(state.flush()) if end else out


@pytest.mark.parametrize("cls", sorted(CASES, key=str))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_snapshot_resume_continue_equals_an_uninterrupted_run(
    cls: type, data: st.DataObject
) -> None:
    case = CASES[cls]
    xs = data.draw(case.inputs)
    cut = data.draw(st.integers(0, len(xs)))
    pristine = copy.deepcopy(xs)
    expected = emitted(case.build(None), xs, end=True)
    first = case.build(None)
    out = emitted(first, xs[:cut], end=False)
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    assert case.build(snap).snapshot() == snap
    out += emitted(case.build(snap), xs[cut:], end=True)
    assert out == expected
    assert xs == pristine
