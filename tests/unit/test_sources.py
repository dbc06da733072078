"""The flows' source wrappers: idle partitions and ticks ask to be woken, not spun."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import StatefulSourcePartition

from flows.kafka_in import PacedSource, _PacedPartition
from flows.sources import Tick, Ticker


class Scripted(StatefulSourcePartition[Any, int]):
    """Batches from a script; its snapshot is how many it gave."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches, self.given, self.closed = batches, 0, False

    def next_batch(self) -> list[int]:
        self.given += 1
        return self.batches.pop(0)

    def snapshot(self) -> int:
        return self.given

    def close(self) -> None:
        self.closed = True


def test_an_empty_batch_sets_a_wake_up_and_data_clears_it() -> None:
    inner = Scripted([[1, 2], [], [3]])
    part = _PacedPartition(inner, timedelta(milliseconds=50))
    assert part.next_batch() == [1, 2] and part.next_awake() is None
    before = datetime.now(UTC)
    assert part.next_batch() == []
    awake = part.next_awake()
    assert awake is not None and before + timedelta(milliseconds=50) <= awake
    assert awake <= datetime.now(UTC) + timedelta(milliseconds=50)
    assert part.next_batch() == [3] and part.next_awake() is None
    assert part.snapshot() == 3
    part.close()
    assert inner.closed


def test_a_paced_source_keeps_the_inner_partitions_and_their_resume_state() -> None:
    class Inner:
        def list_parts(self) -> list[str]:
            return ["0-t", "1-t"]

        def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Scripted:
            return Scripted([[resume_state]])

    source = PacedSource(Inner(), timedelta(milliseconds=50))
    assert source.list_parts() == ["0-t", "1-t"]
    assert source.build_part("s", "1-t", 41).next_batch() == [41]


def test_a_tick_comes_when_due_and_never_in_a_burst() -> None:
    part = Ticker(timedelta(hours=1)).build_part("tick", "singleton", None)
    assert part.next_batch() == [Tick()]
    assert part.next_batch() == []  # not due for an hour
    due = part.next_awake()
    assert timedelta(minutes=59) < due - datetime.now(UTC) <= timedelta(hours=1)
    part._due = datetime.now(UTC) - timedelta(hours=5)  # as after a long stall
    assert part.next_batch() == [Tick()] and part.next_batch() == []
