"""The creators step's state: one count per creator of its users' first subscriptions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.creator_stats import (
    CreatorStats,
    decode_creator,
    encode_creator,
    is_subscription,
)
from operators.emissions import Feedback


def subscription(user: str, ts: int, creator: str = "c1") -> Feedback:
    return Feedback(user_id=user, signal="subscribed", ts=ts, creator_id=creator)


#: One creator's input as its step sees it: first subscriptions, with other feedback mixed in
#: (a like on an item carries a media id and is not a subscription).
inputs = st.lists(
    st.one_of(
        st.builds(subscription, st.sampled_from(["u1", "u2", "u3", "u4"]), st.integers(0, 10**6)),
        st.builds(
            lambda u, ts: Feedback(user_id=u, signal="liked", ts=ts, media_id="m1"),
            st.sampled_from(["u1", "u2"]),
            st.integers(0, 10**6),
        ),
    ),
    max_size=30,
)


@given(inputs)
def test_the_count_is_the_number_of_subscriptions_stamped_with_the_newest(
    xs: list[Feedback],
) -> None:
    state = CreatorStats()
    records = [r for x in xs for r in state.on_event(x)]
    subs = [x for x in xs if x.signal == "subscribed"]
    assert [r.subscribers for r in records] == list(range(1, len(subs) + 1))
    if subs:
        assert records[-1].ts == max(x.ts for x in subs)
        assert decode_creator(encode_creator(records[-1])) == records[-1]


def test_only_a_first_subscription_to_a_creator_feeds_the_step() -> None:
    assert is_subscription(subscription("u1", 1))
    assert not is_subscription(Feedback(user_id="u1", signal="liked", ts=1, media_id="m1"))
    assert not is_subscription("not feedback")


def test_a_snapshot_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 99"):
        CreatorStats((99, "c1", 0, 1))
