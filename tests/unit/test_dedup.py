"""Dedup by event id with bounded memory, and the stable id hashes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from operators.dedup import EventDedup, RecentIds, id_hash32, id_hash64


def test_hashes_are_stable_across_processes():
    # Fixed values: serving and snapshots depend on them never changing.
    assert id_hash64("e1").hex() == "1b5d5e51f54f0f04"
    assert id_hash32("m1") == 3226732335


def test_a_repeated_id_is_a_duplicate_until_it_leaves_the_window():
    d = EventDedup(capacity=100, window_s=60)
    assert not d.seen("e1", 0)
    assert d.seen("e1", 30_000)
    assert not d.seen("e2", 120_000)  # moves the key's event time past e1's window
    assert not d.seen("e1", 120_000)
    assert d.seen("e1", 121_000)


def test_memory_is_bounded_by_capacity():
    d = EventDedup(capacity=8, window_s=3600)
    for i in range(100):
        d.seen(f"e{i}", i * 1000)
    assert len(d) == 8
    assert d.seen("e99", 99_000)
    assert not d.seen("e0", 99_000)
    hashes, secs, *_ = d.snapshot()
    assert len(hashes) == 8 * 6 and len(secs) == 8 * 2  # 8 bytes an id for a window < 18 h


def test_an_idle_window_drains():
    d = EventDedup(capacity=100, window_s=10)
    for i in range(20):
        d.seen(f"e{i}", 0)
    d.seen("late-comer", 60_000)
    assert len(d) == 1


def test_a_digest_straddling_two_entries_is_not_a_match():
    d = EventDedup(capacity=10, window_s=100)
    d._hashes += b"\x00" * 3 + id_hash64("x")[:6] + b"\x00" * 3  # forged misaligned bytes
    d._secs.extend([0, 0])
    assert not d.seen("x", 0)


ids = st.lists(st.sampled_from([f"e{i}" for i in range(30)]), max_size=200)


@given(ids, st.integers(0, 200))
def test_snapshot_then_resume_answers_like_the_uninterrupted_ring(events, cut):
    whole = EventDedup(capacity=16, window_s=50)
    first = EventDedup(capacity=16, window_s=50)
    answers = [whole.seen(e, i * 1000) for i, e in enumerate(events)]
    resumed_answers = [first.seen(e, i * 1000) for i, e in enumerate(events[:cut])]
    resumed = EventDedup(capacity=16, window_s=50, resume=first.snapshot())
    resumed_answers += [resumed.seen(e, i * 1000) for i, e in enumerate(events) if i >= cut]
    assert resumed_answers == answers
    assert resumed.snapshot() == whole.snapshot()


@given(ids)
def test_no_false_negatives_within_capacity_and_window(events):
    d = EventDedup(capacity=len(events) + 1, window_s=10**6)
    seen: set[str] = set()
    for i, e in enumerate(events):
        assert d.seen(e, i) == (e in seen)
        seen.add(e)


def _reference(events: list[tuple[str, int]], window_s: int) -> list[bool]:
    """The dedup rule with no bound on count, on plain (id, second) pairs."""
    kept: list[tuple[str, int]] = []
    newest, answers = 0, []
    for event_id, ms in events:
        sec = ms // 1000
        newest = max(newest, sec)
        found = [s for e, s in kept if e == event_id]
        duplicate = bool(found) and found[-1] >= newest - window_s
        if not duplicate and sec >= newest - window_s:
            kept.append((event_id, sec))
        answers.append(duplicate)
    return answers


steps = st.lists(
    st.tuples(
        st.sampled_from([f"e{i}" for i in range(12)]),
        st.sampled_from([0, 1_000, 30_000, -20_000, 3_600_000, 50_000_000, 90_000_000]),
    ),
    max_size=120,
)


@given(steps, st.sampled_from([60, 3600, 100_000]), st.integers(0, 120))
def test_days_of_event_time_and_a_resume_answer_as_the_rule_says(steps, window_s, cut):
    # Seconds are kept as offsets from a base that moves with the window; a key that lives
    # for days, jumps ahead or gets late events answers as the plain rule says.
    events, ms = [], 1_700_000_000_000
    for event_id, step in steps:
        ms += step
        events.append((event_id, ms))
    first = EventDedup(capacity=len(events) + 1, window_s=window_s)
    answers = [first.seen(e, t) for e, t in events[:cut]]
    resumed = EventDedup(capacity=len(events) + 1, window_s=window_s, resume=first.snapshot())
    answers += [resumed.seen(e, t) for e, t in events[cut:]]
    assert answers == _reference(events, window_s)


def test_a_snapshot_of_the_earlier_layout_resumes_with_the_same_answers():
    # Releases before this one kept 8-byte digests and absolute uint32 seconds.
    ids = [f"e{i}" for i in range(5)]
    digests = b"".join(id_hash64(e) for e in ids)
    secs = struct.pack("<5I", *(1_700_000_000 + i for i in range(5)))
    d = EventDedup(capacity=8, window_s=60, resume=(digests, secs, 1_700_000_004))
    assert [d.seen(e, 1_700_000_010_000) for e in [*ids, "new"]] == [True] * 5 + [False]
    assert not d.seen("e0", 1_700_000_070_000)  # e0 left the window


def test_recent_ids_keep_the_newest_first_and_bounded():
    r = RecentIds(capacity=3)
    for m in ("a", "b", "c", "a", "d"):
        r.push(m)
    assert len(r) == 3 and "b" not in r
    assert r.newest(2) == struct.pack("<2I", id_hash32("d"), id_hash32("a"))
    r.discard("a")
    assert "a" not in r and len(r) == 2
    assert RecentIds(3, resume=r.snapshot()).newest(3) == r.newest(3)
