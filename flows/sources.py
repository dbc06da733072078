"""Small sources for wiring flows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bytewax.inputs import SimplePollingSource


@dataclass(frozen=True)
class Tick:
    """A heartbeat item: lets a sink do periodic work when no data arrives."""


class Ticker(SimplePollingSource[Tick]):
    """Emits one :class:`Tick` every `interval`, forever."""

    def __init__(self, interval: timedelta) -> None:
        super().__init__(interval)

    def next_item(self) -> Tick:
        """The next heartbeat."""
        return Tick()
