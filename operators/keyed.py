"""The base of every keyed-state class the dataflows run.

A keyed-state class holds what a flow keeps for one key (a user, an item, a board) and
never imports Bytewax: :class:`flows.keyed_logic.KeyedLogic` adapts it to Bytewax's
`StatefulLogic`. It must say what an input does (:meth:`KeyedState.on_event`) and what it
keeps (:meth:`KeyedState.snapshot`, plain picklable data its constructor resumes from); the
other hooks default to "nothing": no timer, nothing due, never expired, nothing left at the
end of input.

Every subclass passes the same checks (tests/unit/test_keyed_states.py): its snapshot
survives pickling, snapshot → resume → continue gives what an uninterrupted run gives, and
its inputs are left as they came.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class KeyedState(ABC, Generic[In, Out]):
    """What a flow keeps for one key; see the module doc."""

    @abstractmethod
    def on_event(self, value: In) -> Sequence[Out]:
        """Apply one input of this key; what it emits."""

    @abstractmethod
    def snapshot(self) -> Any:
        """The state as plain picklable data, which the constructor resumes from."""

    def notify_at(self) -> datetime | None:
        """Processing time at which :meth:`on_timer` is due (None: no timer)."""
        return None

    def on_timer(self, now: datetime) -> Sequence[Out]:
        """What is due at processing time `now`."""
        return []

    def is_expired(self, now: datetime) -> bool:
        """True once the state can be discarded (checked after each timer)."""
        return False

    def flush(self) -> Sequence[Out]:
        """What the end of input emits."""
        return []
