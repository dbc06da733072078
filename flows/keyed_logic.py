"""One adapter from Feedflow's keyed-state classes to Bytewax's `StatefulLogic`.

Every keyed class in `operators/` is a :class:`~operators.keyed.KeyedState` — `on_event`,
`snapshot`, and the hooks `notify_at`, `on_timer(now)`, `is_expired(now)` and `flush()` that
default to nothing — so the flows wrap them all the same way and the classes never import
Bytewax.

A per-user step also forgets users (:mod:`operators.erasure`) with :class:`ErasableLogic`:
given the process's tombstones, an erasure request discards the key's state and answers
`Erased`, and an event of an erased history is dropped without being applied (and without
keeping state for a key that had none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from bytewax.operators import StatefulLogic

from operators.contracts import ErasureRequest
from operators.erasure import Tombstones, erased_drop
from operators.eventtime import now_ms
from operators.keyed import KeyedState


class KeyedLogic(StatefulLogic[Any, Any, Any]):
    """Runs a :class:`~operators.keyed.KeyedState` for one key; discards it once it says it expired.

    Args:
        inner: the keyed-state object (built from the resume snapshot by the caller).
        after_item: called with each input and its outputs (metrics hooks), optional.
    """

    def __init__(
        self,
        inner: KeyedState[Any, Any],
        after_item: Callable[[Any, list[Any]], None] | None = None,
    ) -> None:
        self.inner = inner
        self.after_item = after_item

    def on_item(self, value: Any) -> tuple[Iterable[Any], bool]:
        """Bytewax: apply one input of this key."""
        return self._apply(value), StatefulLogic.RETAIN

    def _apply(self, value: Any) -> list[Any]:
        out = list(self.inner.on_event(value))
        if self.after_item is not None:
            self.after_item(value, out)
        return out

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        """Bytewax: a timer fired; what is due, and whether the key's state can go."""
        now = datetime.now(UTC)
        out = list(self.inner.on_timer(now))
        return out, self.inner.is_expired(now)

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        """Bytewax: end of input; what the state still had to say."""
        return list(self.inner.flush()), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Bytewax: when to call :meth:`on_notify` next (None: no timer)."""
        return self.inner.notify_at()

    def snapshot(self) -> Any:
        """Bytewax: the state to store in the recovery snapshot."""
        return self.inner.snapshot()


class ErasableLogic(KeyedLogic):
    """A per-user step's :class:`KeyedLogic` that forgets users (see module doc).

    Args:
        inner: the keyed-state object (built from the resume snapshot by the caller).
        after_item: called with each input and its outputs (metrics hooks), optional.
        tombstones: the erased users; inputs carry `user_id` and `ts`, or are erasure
            requests.
        resumed: the state was restored from a snapshot (not built for this input).
    """

    def __init__(
        self,
        inner: KeyedState[Any, Any],
        after_item: Callable[[Any, list[Any]], None] | None,
        tombstones: Tombstones,
        resumed: bool,
    ) -> None:
        super().__init__(inner, after_item)
        self.tombstones = tombstones
        self.resumed = self.held = resumed

    def on_item(self, value: Any) -> tuple[Iterable[Any], bool]:
        """Bytewax: apply one input of this user, or an erasure request."""
        if isinstance(value, ErasureRequest):
            return self._erase(value)
        if self.tombstones.covers(value.user_id, value.ts):
            out = [erased_drop(value, now_ms())]
            if self.after_item is not None:
                self.after_item(value, out)
            return out, StatefulLogic.RETAIN if self.held else StatefulLogic.DISCARD
        self.held = True
        return self._apply(value), StatefulLogic.RETAIN

    def _erase(self, request: ErasureRequest) -> tuple[Iterable[Any], bool]:
        """Drop the state, unless the request is met again (a replay, a rebuild) and this
        state was built here after it was known: then it holds only events stamped after
        the erasure (earlier ones were dropped), a new history that stays. A state restored
        from a snapshot may predate the erasure, so it always goes."""
        known = self.tombstones.covers(request.user_id, request.ts)
        if known and self.held and not self.resumed:
            return [self.tombstones.erase(request, kept=True)], StatefulLogic.RETAIN
        return [self.tombstones.erase(request)], StatefulLogic.DISCARD
