"""Co-engagement logic: per-user history, per-item sketch, against a batch oracle."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.co_engagement import (
    CoLink,
    CoNeighbours,
    CoRecord,
    CoVisit,
    RecentPositives,
    link_weight,
    links,
)
from operators.feature_codecs import decode_co_record, encode_co_record

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Message = CoVisit | CoLink


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def sketch(capacity: int = 1000, list_size: int = 1000, resume: object = None) -> CoNeighbours:
    return CoNeighbours(capacity, list_size, flush_ms=0, ttl_ms=10**9, resume=resume)


def messages_of(sequences: dict[str, list[str]], history: int = 8) -> dict[str, list[Message]]:
    """Each user's co-engagement messages, in the user's own order (one partition each)."""
    out: dict[str, list[Message]] = {}
    for user, items in sequences.items():
        recent = RecentPositives(history)
        msgs: list[Message] = []
        for ts, media in enumerate(items):
            visit = recent.positive(media, ts)
            if visit is not None:
                msgs += [visit, *links(visit)]
        out[user] = msgs
    return out


def apply(msgs: list[Message], capacity: int = 1000) -> dict[str, CoRecord]:
    """Run the per-item logic over messages (routed by their key, like the flow does)."""
    states: dict[str, CoNeighbours] = {}
    for m in msgs:
        states.setdefault(m.media_id, sketch(capacity)).on_event(m)
    return {k: v.record() for k, v in states.items()}


def interleave(streams: dict[str, list[Message]], rng: random.Random) -> list[Message]:
    """A random merge that keeps each user's order (what partitions do)."""
    queues = {u: list(reversed(m)) for u, m in streams.items() if m}
    out = []
    while queues:
        user = rng.choice(sorted(queues))
        out.append(queues[user].pop())
        if not queues[user]:
            del queues[user]
    return out


def oracle(sequences: dict[str, list[str]], history: int = 8) -> dict[str, Counter[str]]:
    """Batch recomputation: every ordered pair within `history` distinct positive items."""
    out: dict[str, Counter[str]] = {}
    for items in sequences.values():
        seen: list[str] = []
        for media in items:
            if media in seen:
                seen.remove(media)
                seen.insert(0, media)
                continue
            for d, prior in enumerate(seen[:history], 1):
                out.setdefault(prior, Counter())[media] += link_weight(d)
                out.setdefault(media, Counter())[prior] += link_weight(d, backward=True)
            seen.insert(0, media)
    return out


sequences_st = st.dictionaries(
    st.sampled_from([f"u{n}" for n in range(6)]),
    st.lists(st.sampled_from([f"m{n}" for n in range(8)]), max_size=12),
    max_size=6,
)


def test_a_new_positive_links_to_the_recent_ones_nearest_strongest() -> None:
    user = RecentPositives(history=3)
    assert user.positive("a", 1) == CoVisit("a", 1, ())
    user.positive("b", 2)
    user.positive("c", 3)
    visit = user.positive("d", 4)
    assert visit == CoVisit("d", 4, ("c", "b", "a"))
    assert [(x.media_id, x.neighbour, link_weight(x.distance)) for x in links(visit)] == [
        ("c", "d", 1000), ("b", "d", 500), ("a", "d", 333)
    ]  # fmt: skip
    assert user.items == ("d", "c", "b")  # bounded by the history


def test_repeat_views_count_once_and_dislikes_stop_seeding() -> None:
    user = RecentPositives(history=4)
    user.positive("a", 1)
    user.positive("b", 2)
    assert user.positive("a", 3) is None  # watched again: moves to the front, no new pairs
    assert list(user.items) == ["a", "b"]
    user.negative("a")
    assert list(user.items) == ["b"]
    assert user.positive("c", 4) == CoVisit("c", 4, ("b",))


@given(sequences_st, st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_any_partition_interleaving_gives_the_batch_counts(
    sequences: dict[str, list[str]], rng: random.Random
) -> None:
    streams = messages_of(sequences)
    records = apply(interleave(streams, rng))
    truth = oracle(sequences)
    for media, counts in truth.items():
        assert dict(records[media].neighbours) == dict(counts)
    engaged = Counter(m for items in sequences.values() for m in dict.fromkeys(items))
    for media, record in records.items():
        assert record.engagements <= engaged[media]
    again = apply(interleave(streams, random.Random(7)))
    assert again == records


@given(sequences_st, st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_over_capacity_guaranteed_counts_are_lower_bounds_and_heavy_hitters_stay(
    sequences: dict[str, list[str]], rng: random.Random
) -> None:
    capacity = 3
    msgs = interleave(messages_of(sequences), rng)
    states: dict[str, CoNeighbours] = {}
    for m in msgs:
        states.setdefault(m.media_id, sketch(capacity)).on_event(m)
    truth = oracle(sequences)
    for media, state in states.items():
        counters = state.guaranteed()
        assert len(counters) <= capacity
        total = sum(truth.get(media, Counter()).values())
        for neighbour, (low, high) in counters.items():
            assert low <= truth[media][neighbour] <= high
        for neighbour, weight in truth.get(media, Counter()).items():
            if weight > total / capacity:
                assert neighbour in counters  # Space-Saving's guarantee


def test_the_record_lists_neighbours_by_guaranteed_count() -> None:
    # Stored counts are raw; serving divides by both items' engagement (see serving tests).
    state = sketch()
    for n in range(5):
        state.on_event(CoLink("a", "b", 1, n))
    state.on_event(CoLink("a", "c", 2, 9))
    record = state.record()
    assert record.neighbours == (("b", 5000), ("c", 500)) and record.ts == 9


@given(sequences_st, st.integers(min_value=0, max_value=60))
@settings(max_examples=80, deadline=None)
def test_snapshot_and_resume_equals_an_uninterrupted_run(
    sequences: dict[str, list[str]], cut: int
) -> None:
    msgs = [m for stream in messages_of(sequences).values() for m in stream]
    whole = apply(msgs, capacity=4)
    states: dict[str, CoNeighbours] = {}
    for n, m in enumerate(msgs):
        if n == cut:  # a crash: every state rebuilt from its snapshot
            states = {k: CoNeighbours(4, 1000, 0, 10**9, v.snapshot()) for k, v in states.items()}
        states.setdefault(m.media_id, CoNeighbours(4, 1000, 0, 10**9)).on_event(m)
    assert {k: v.record() for k, v in states.items()} == whole


def test_records_are_written_after_the_flush_delay_and_state_expires_when_idle() -> None:
    clock = FakeClock()
    state = CoNeighbours(8, 4, flush_ms=250, ttl_ms=60_000, clock=clock)
    assert state.on_event(CoLink("a", "b", 1, 5)) == []
    assert state.notify_at() == NOW + timedelta(milliseconds=250)
    assert state.on_timer(NOW) == []
    clock.now = NOW + timedelta(milliseconds=300)
    [record] = state.on_timer(clock.now)
    assert record.neighbours == (("b", 1000),)
    assert state.on_timer(clock.now) == [] and state.flush() == []  # nothing new
    assert not state.is_expired(clock.now)
    assert state.is_expired(NOW + timedelta(minutes=2))


def test_the_record_is_bounded_and_packs_small() -> None:
    state = sketch(capacity=128, list_size=48)
    for n in range(300):
        state.on_event(CoLink("a", f"item-{n:06d}", 1 + n % 8, n))
    record = state.record()
    assert len(record.neighbours) == 48
    packed = encode_co_record(record)
    assert decode_co_record(packed) == record
    assert len(packed) < 48 * 20  # ~15 bytes a neighbour with 11-character ids


def test_an_older_snapshot_version_is_refused_loudly() -> None:
    try:
        CoNeighbours(4, 4, 0, 1, resume=(99, "", 0, 0, (), None, -1))
    except ValueError as exc:
        assert "version 99" in str(exc)
    else:
        raise AssertionError("a snapshot of an unknown version was accepted")
