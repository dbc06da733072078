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
    hashes, secs, _ = d.snapshot()
    assert len(hashes) == 8 * 8 and len(secs) == 8 * 4


def test_an_idle_window_drains():
    d = EventDedup(capacity=100, window_s=10)
    for i in range(20):
        d.seen(f"e{i}", 0)
    d.seen("late-comer", 60_000)
    assert len(d) == 1


def test_a_digest_straddling_two_entries_is_not_a_match():
    d = EventDedup(capacity=10, window_s=100)
    d._hashes += b"\x00" * 4 + id_hash64("x") + b"\x00" * 4  # forged misaligned bytes
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


def test_recent_ids_keep_the_newest_first_and_bounded():
    r = RecentIds(capacity=3)
    for m in ("a", "b", "c", "a", "d"):
        r.push(m)
    assert len(r) == 3 and "b" not in r
    assert r.newest(2) == struct.pack("<2I", id_hash32("d"), id_hash32("a"))
    r.discard("a")
    assert "a" not in r and len(r) == 2
    assert RecentIds(3, resume=r.snapshot()).newest(3) == r.newest(3)
