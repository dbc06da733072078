"""Weekly weights in serving: the active version, the cold-start lists, per-request adjustments.

The refresher re-reads the active pointer every round (one GET) and, when it moved, the new
version's cohort lists (one HGETALL); a `feedflow weights publish|rollback` therefore reaches
every replica within one refresh interval, without a restart. A request reads the user's
weights of that version in the same pipelined round trip as the user's features
(:class:`state.request_reads.RedisUserSource`) and turns them into a :class:`WeeklyAdjust`:

- ranking blends the category-affinity feature with the user's weekly category shares, and
  the content-type feature with the user's weekly video/audio lean (half each: the flows'
  features are fresher, the week is steadier);
- rules scale the exploration share and the new-release boost by the user's weekly
  appetite for them (each bounded to half or double the configured value);
- a cold-start user (fewer than five engagements) gets the cohort model's list for their
  (language, content type, device) as candidates, its order standing in for the similarity
  to a user vector they do not have yet.

Example:
    >>> from operators.weekly_weights import UserWeights
    >>> adj = WeeklyAdjust.of(UserWeights(categories=(("news", 0.5), ("talk", 0.25)),
    ...                                   video=0.8, explore=3.0, fresh=0.9, mass=12.0))
    >>> adj.categories, round(adj.type_lean, 2), adj.explore, adj.fresh
    ({'news': 1.0, 'talk': 0.5}, 0.6, 2.0, 0.9)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from kernel.metrics import WEIGHTS_COMPLETED
from operators.cold_start import lookup_order
from operators.weekly_weights import UserWeights
from state.redis_client import RedisClient
from state.weights_registry import read_active, read_cohort_lists, read_completed_ms

log = logging.getLogger(__name__)
BLEND: Final = 0.5  # the flows' feature's share when weekly weights are present
SCALE_BOUNDS: Final = (0.5, 2.0)
COHORT_SIMILARITY: Final = 0.6  # stand-in similarity of a cohort list's first item


def _bounded(x: float) -> float:
    low, high = SCALE_BOUNDS
    return min(max(x, low), high)


@dataclass(frozen=True, slots=True)
class WeeklyAdjust:
    """What one user's weekly weights change in one request (see module doc)."""

    categories: dict[str, float]  # affinity in (0, 1]: share / the user's top share
    type_lean: float  # +1 all video … −1 all audio
    explore: float  # multiplier of the exploration share
    fresh: float  # multiplier of the new-release boost

    @classmethod
    def of(cls, weights: UserWeights) -> WeeklyAdjust:
        """The adjustments of a stored weights record."""
        top = max((p for _, p in weights.categories), default=0.0)
        categories = {c: p / top for c, p in weights.categories} if top > 0 else {}
        return cls(
            categories=categories,
            type_lean=2.0 * min(max(weights.video, 0.0), 1.0) - 1.0,
            explore=_bounded(weights.explore),
            fresh=_bounded(weights.fresh),
        )


def cohort_similarity(ids: Sequence[str], cohort: Sequence[str]) -> npt.NDArray[np.float32]:
    """Per id: a stand-in similarity from its place in a cohort list (0 when absent).

    Example:
        >>> [round(x, 2) for x in cohort_similarity(["b", "x", "a"], ["a", "b"]).tolist()]
        [0.3, 0.0, 0.6]
    """
    if not cohort:
        return np.zeros(len(ids), dtype=np.float32)
    n = len(cohort)
    place = {m: COHORT_SIMILARITY * (1.0 - r / n) for r, m in enumerate(cohort)}
    return np.fromiter((place.get(m, 0.0) for m in ids), np.float32, len(ids))


class WeeklyState:
    """The active weights version and its cohort lists, as this process last read them.

    Requests read it without locks: the refresher replaces the whole value at once.
    """

    def __init__(self) -> None:
        self._state: tuple[str | None, dict[str, tuple[str, ...]]] = (None, {})

    @property
    def version(self) -> str | None:
        """The active version (None before the first publish, or before the first read)."""
        return self._state[0]

    def set(self, version: str | None, cohorts: dict[str, tuple[str, ...]]) -> None:
        """Replace the version and its lists."""
        self._state = (version, cohorts)

    def cohort_items(
        self, language: str | None, content_type: str | None, device: str | None
    ) -> tuple[str, ...]:
        """The most specific cohort list there is for a context (empty when none)."""
        lists = self._state[1]
        for key in lookup_order(language, content_type, device):
            found = lists.get(key)
            if found:
                return found
        return ()

    def refresh(self, client: RedisClient) -> bool:
        """Follow the active pointer; True when the version changed.

        Raises:
            redis.RedisError: when Redis cannot be read (the caller keeps what it has).
        """
        version = read_active(client)
        if version == self.version:
            return False
        lists: dict[str, tuple[str, ...]] = {}
        completed_ms = 0
        if version is not None:
            lists, unreadable = read_cohort_lists(client, version)
            for key in unreadable:
                log.warning("weights %s: unreadable cohort list %s", version, key)
            completed_ms = read_completed_ms(client, version)
        self.set(version, lists)
        WEIGHTS_COMPLETED.set(completed_ms / 1000)
        log.info("weekly weights %s active (%d cohort lists)", version, len(lists))
        return True
