"""The behaviour-space run: retained engagement → a new version of item vectors, published.

Weekly, like the weights run: every engagement event the topic still holds (its retention is
the window: keep it at a few weeks) is replayed through the engagement flow's per-user logic
to find each user's positive items (:class:`operators.behaviour.Positives`), the user × item
matrix is factorised (:func:`operators.behaviour.factorise`), and the vectors are written as a
new version that becomes active only once complete (:class:`state.behaviour_store.BehaviourStore`).
Serving replicas pick it up within one refresh round, no restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from feedflow.week_events import Counts, apply_events
from kernel.settings import Settings
from operators.behaviour import Positives, Space, factorise
from operators.contracts import EngagementEvent
from operators.erasure import Tombstones
from operators.item_info import ItemLookup
from state.behaviour_store import BehaviourStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What one run did."""

    version: str | None
    events: int
    invalid: int
    erased: int
    users: int
    items: int
    dim: int
    published: bool
    took_s: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `feedflow.output.emit`."""
        return asdict(self)


def learn(
    settings: Settings,
    payloads: Iterator[bytes | EngagementEvent],
    items: ItemLookup,
    progress: Callable[[int], None] | None = None,
    erased: Tombstones | None = None,
) -> tuple[Space, Counts, int]:
    """The factorisation of the positives in `payloads` (without `erased` users' events),
    the reader's counts and the events."""
    counts, positives = Counts(), Positives(settings, items)
    n = apply_events(payloads, counts, positives.add, erased, progress)
    return factorise(positives.finish(), settings.behaviour_dim), counts, n


def run(
    store: BehaviourStore,
    settings: Settings,
    payloads: Iterator[bytes | EngagementEvent],
    items: ItemLookup,
    publish: bool = True,
    progress: Callable[[int], None] | None = None,
    erased: Tombstones | None = None,
) -> RunResult:
    """Learn, write and (optionally) activate a new behaviour version (see module doc);
    `erased`: users whose events must not count.

    A run that learned nothing (no two users share an item yet) writes no version: the
    active one, if any, stays.
    """
    started = time.monotonic()
    space, counts, events = learn(settings, payloads, items, progress, erased)
    version = None
    if space.ids:
        version = store.publish(space, activate=publish).version
    log.info(
        "behaviour %s: %d items from %d users (%d events), published=%s",
        version, len(space.ids), space.users, events, publish and version is not None,
    )  # fmt: skip
    return RunResult(
        version=version,
        events=events,
        invalid=counts.invalid,
        erased=counts.erased,
        users=space.users,
        items=len(space.ids),
        dim=space.dim,
        published=publish and version is not None,
        took_s=round(time.monotonic() - started, 2),
    )
