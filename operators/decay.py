"""Exponentially decayed scores on event time, independent of the order of updates.

Forward decay (Cormode, Shkapenyuk, Srivastava, Xu, ICDE 2009): an update of `x` at event
time `t` adds `x · exp((t − ref) / τ)` to an accumulator; its value at time `now` is the
accumulator times `exp((ref − now) / τ)`. A sum does not care in which order its terms were
added, so a replay in another order, a snapshot and resume, or a segment applied late all
give the same value at the same `now` (up to float rounding), and no decay step ever has to
run on a timer. `ref` moves forward (and the accumulators shrink with it) once
`now − ref` exceeds :data:`REBASE_AFTER` time constants, before the exponent can overflow.

Float sums are order-independent only up to rounding, which is enough for one user's state
(a partition delivers it in order) but not for an item's, fed by many users interleaved
differently on every run: :class:`DecayedCount` keeps integer sums for that.

Example:
    >>> day = 86_400_000
    >>> s = DecayedScores(tau_ms=7 * day, cap=8)
    >>> s.add("news", 10.0, ts_ms=0); s.add("music", 10.0, ts_ms=7 * day)
    >>> [(k, round(v, 2)) for k, v in s.top(2, now_ms=7 * day)]
    [('music', 10.0), ('news', 3.68)]
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Final

import numpy as np
import numpy.typing as npt

REBASE_AFTER: Final = 30.0  # time constants; exp(30) ~ 1e13, far below float64 overflow

COUNT_PERIOD: Final = 32  # half-lives between the landmarks of a DecayedCount
COUNT_SCALE: Final = 1 << 20  # fixed-point unit of a DecayedCount's sums

ScoresSnapshot = tuple[int, tuple[tuple[str, float], ...]]
VectorSnapshot = tuple[int, bytes]
CountSnapshot = tuple[tuple[int, int], ...]


class DecayedScores:
    """A bounded map key → exponentially decayed score.

    When more than `cap` keys are held, the one with the smallest magnitude (ties: the
    smallest key) is dropped, so memory stays bounded for unbounded key spaces (creators,
    categories).

    Args:
        tau_ms: decay time constant (a score falls to 1/e after `tau_ms` of event time).
        cap: most keys kept.
        resume: a value returned by :meth:`snapshot`, or None.
    """

    __slots__ = ("_ref", "_scores", "cap", "tau_ms")

    def __init__(self, tau_ms: float, cap: int, resume: ScoresSnapshot | None = None):
        self.tau_ms = float(tau_ms)
        self.cap = cap
        self._ref = 0 if resume is None else resume[0]
        self._scores: dict[str, float] = {} if resume is None else dict(resume[1])

    def __len__(self) -> int:
        return len(self._scores)

    def add(self, key: str, amount: float, ts_ms: int) -> None:
        """Add `amount` at event time `ts_ms`."""
        if ts_ms - self._ref > REBASE_AFTER * self.tau_ms:
            self._rebase(ts_ms)
        scores = self._scores
        scores[key] = scores.get(key, 0.0) + amount * math.exp((ts_ms - self._ref) / self.tau_ms)
        if len(scores) > self.cap:
            del scores[min(scores, key=lambda k: (abs(scores[k]), k))]

    def value(self, key: str, now_ms: int) -> float:
        """The decayed score of `key` at event time `now_ms` (0.0 when absent)."""
        return self._scores.get(key, 0.0) * math.exp((self._ref - now_ms) / self.tau_ms)

    def items(self, now_ms: int) -> dict[str, float]:
        """Every held key with its decayed score at `now_ms`."""
        scale = math.exp((self._ref - now_ms) / self.tau_ms)
        return {k: v * scale for k, v in self._scores.items()}

    def top(self, n: int, now_ms: int, positive: bool = True) -> list[tuple[str, float]]:
        """The `n` highest scores at `now_ms`, best first (ties by key); positive only."""
        scale = math.exp((self._ref - now_ms) / self.tau_ms)
        return [(k, v * scale) for k, v in self.ranked(n, positive)]

    def ranked(self, n: int, positive: bool = True) -> list[tuple[str, float]]:
        """The `n` best keys with their raw accumulators: the order at any `now`.

        Decay multiplies every score by the same factor, so rankings and shares never need
        the exponential.
        """
        # by key, then stably by score descending: ties stay in key order, no Python key fn
        items = sorted(sorted(self._scores.items()), key=itemgetter(1), reverse=True)
        return [kv for kv in items if kv[1] > 0.0 or not positive][:n]

    def snapshot(self) -> ScoresSnapshot:
        """Plain immutable state: (reference time, (key, raw accumulator) pairs)."""
        return (self._ref, tuple(self._scores.items()))

    def _rebase(self, now_ms: int) -> None:
        scale = math.exp((self._ref - now_ms) / self.tau_ms)
        self._scores = {k: v * scale for k, v in self._scores.items()}
        self._ref = now_ms


class DecayedVector:
    """A fixed-length vector of exponentially decayed sums (user vectors, hour patterns).

    Held in float32: half the state of float64 and plenty for directions and shares (the
    accumulators stay below exp(REBASE_AFTER) times the weights, far from float32 limits).

    Args:
        dim: vector length.
        tau_ms: decay time constant.
        resume: a value returned by :meth:`snapshot`, or None.
    """

    __slots__ = ("_acc", "_ref", "dim", "tau_ms")

    def __init__(self, dim: int, tau_ms: float, resume: VectorSnapshot | None = None):
        self.dim = dim
        self.tau_ms = float(tau_ms)
        if resume is None:
            self._ref = 0
            self._acc: npt.NDArray[np.float32] = np.zeros(dim, dtype=np.float32)
        else:
            self._ref = resume[0]
            self._acc = np.frombuffer(resume[1], dtype=np.float32).copy()
            if self._acc.shape != (dim,):
                raise ValueError(f"DecayedVector: snapshot has {self._acc.size} dims, not {dim}")

    def add(self, vector: npt.NDArray[np.floating] | None, weight: float, ts_ms: int) -> None:
        """Add `weight × vector` at `ts_ms` (a None vector adds `weight` to every slot)."""
        if ts_ms - self._ref > REBASE_AFTER * self.tau_ms:
            self._acc *= math.exp((self._ref - ts_ms) / self.tau_ms)
            self._ref = ts_ms
        scale = weight * math.exp((ts_ms - self._ref) / self.tau_ms)
        if vector is None:
            self._acc += scale
        else:
            self._acc += scale * vector

    def add_at(self, index: int, amount: float, ts_ms: int) -> None:
        """Add `amount` to one slot at `ts_ms`."""
        if ts_ms - self._ref > REBASE_AFTER * self.tau_ms:
            self._acc *= math.exp((self._ref - ts_ms) / self.tau_ms)
            self._ref = ts_ms
        self._acc[index] += amount * math.exp((ts_ms - self._ref) / self.tau_ms)

    def value(self, now_ms: int) -> npt.NDArray[np.float32]:
        """The decayed vector at event time `now_ms` (a new array)."""
        return self._acc * math.exp((self._ref - now_ms) / self.tau_ms)

    def direction(self) -> npt.NDArray[np.float32]:
        """The vector up to a positive factor (the same at every `now`); do not modify."""
        return self._acc

    def snapshot(self) -> VectorSnapshot:
        """Plain immutable state: (reference time, float32 bytes)."""
        return (self._ref, self._acc.tobytes())


class DecayedCount:
    """An exponentially decayed count, bit-identical whatever order the events arrive in.

    Forward decay in integer fixed point: event time is cut into landmark periods of
    :data:`COUNT_PERIOD` half-lives, and an event at `t` adds
    `round(2 ** ((t − landmark) / half_life) × COUNT_SCALE)` to its period's integer sum.
    Integer sums do not depend on the order of their terms, and each term depends on its
    event alone, so a replay in another order or a snapshot and resume ends in the same
    state and value. Only the newest two periods are kept: anything older weighs less than
    2 ** −32 of a new event, and an event arriving for a dropped period is ignored, so what
    is kept is a function of the newest event time, not of arrival order.

    Example:
        >>> week = 7 * 86_400_000
        >>> c = DecayedCount(half_life_ms=week)
        >>> c.add(0), c.add(week)
        (True, True)
        >>> round(c.value(now_ms=week), 3), round(c.value(now_ms=2 * week), 3)
        (1.5, 0.75)
    """

    __slots__ = ("_sums", "half_life_ms", "period_ms")

    def __init__(self, half_life_ms: float, resume: CountSnapshot | None = None):
        if half_life_ms <= 0:
            raise ValueError(f"DecayedCount: half_life_ms must be > 0, got {half_life_ms}")
        self.half_life_ms = float(half_life_ms)
        self.period_ms = max(round(COUNT_PERIOD * self.half_life_ms), 1)
        self._sums: dict[int, int] = dict(resume or ())

    def add(self, ts_ms: int, amount: int = 1) -> bool:
        """Count `amount` events at `ts_ms`; False when older than the kept periods."""
        period = ts_ms // self.period_ms
        sums = self._sums
        newest = max(sums, default=period)
        if period < newest - 1:
            return False
        offset = (ts_ms - period * self.period_ms) / self.half_life_ms
        sums[period] = sums.get(period, 0) + amount * round(2.0**offset * COUNT_SCALE)
        if period > newest:
            for old in [p for p in sums if p < period - 1]:
                del sums[old]
        return True

    def value(self, now_ms: int) -> float:
        """The decayed count at event time `now_ms` (events after it count > 1)."""
        total = 0.0
        for period, acc in sorted(self._sums.items()):
            age = (now_ms - period * self.period_ms) / self.half_life_ms
            total += acc * 2.0**-age
        return total / COUNT_SCALE

    def snapshot(self) -> CountSnapshot:
        """Plain immutable state: (period, integer sum) pairs, oldest first."""
        return tuple(sorted(self._sums.items()))
