"""Small sources for wiring flows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition


@dataclass(frozen=True)
class Tick:
    """A heartbeat item: lets a sink do periodic work when no data arrives."""


class _TickPartition(StatefulSourcePartition[Tick, None]):
    """One tick when due, then the next due `interval` from now (never a catch-up burst)."""

    def __init__(self, interval: timedelta) -> None:
        self._interval = interval
        self._due = datetime.now(UTC)

    def next_batch(self) -> list[Tick]:
        """Bytewax: a tick if one is due, else nothing."""
        now = datetime.now(UTC)
        if now < self._due:
            return []
        self._due = now + self._interval
        return [Tick()]

    def next_awake(self) -> datetime:
        """Bytewax: when the next tick is due."""
        return self._due

    def snapshot(self) -> None:
        """Bytewax: nothing to keep (ticks carry no position)."""
        return None


class Ticker(FixedPartitionedSource[Tick, None]):
    """Emits one :class:`Tick` every `interval`, forever.

    Bytewax's `SimplePollingSource` kept an idle content flow at about a fifth of a core
    under `cli_main` (its wake-up time is advanced by whole intervals from the start); this
    one asks to be woken when the next tick is due and costs nothing in between.
    """

    def __init__(self, interval: timedelta) -> None:
        self._interval = interval

    def list_parts(self) -> list[str]:
        """Bytewax: one partition, named as `SimplePollingSource` named it (recovery stores
        written before keep resuming)."""
        return ["singleton"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TickPartition:
        """Bytewax: the ticking partition."""
        return _TickPartition(self._interval)
