"""One adapter from Feedflow's keyed-state classes to Bytewax's `StatefulLogic`.

Every keyed class in `operators/` has the same small surface — `on_event`, `notify_at` and
`snapshot`, and when it has timers or ends, `on_timer(now)`, `is_expired(now)` and `flush()` —
so the flows wrap them all the same way and the classes never import Bytewax.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from bytewax.operators import StatefulLogic


class Keyed(Protocol):
    """What a keyed-state class offers."""

    def on_event(self, value: Any) -> Iterable[Any]: ...
    def notify_at(self) -> datetime | None: ...
    def snapshot(self) -> Any: ...


class KeyedLogic(StatefulLogic[Any, Any, Any]):
    """Runs a :class:`Keyed` object for one key; discards it once it says it expired.

    Args:
        inner: the keyed-state object (built from the resume snapshot by the caller).
        after_item: called with each input and its outputs (metrics hooks), optional.
    """

    def __init__(
        self, inner: Keyed, after_item: Callable[[Any, list[Any]], None] | None = None
    ) -> None:
        self.inner = inner
        self.after_item = after_item

    def on_item(self, value: Any) -> tuple[Iterable[Any], bool]:
        out = list(self.inner.on_event(value))
        if self.after_item is not None:
            self.after_item(value, out)
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        now = datetime.now(UTC)
        on_timer = getattr(self.inner, "on_timer", None)
        out = list(on_timer(now)) if on_timer is not None else []
        is_expired = getattr(self.inner, "is_expired", None)
        return out, bool(is_expired(now)) if is_expired is not None else StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        flush = getattr(self.inner, "flush", None)
        return (list(flush()) if flush is not None else []), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        return self.inner.snapshot()
