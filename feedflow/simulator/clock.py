"""Simulated time: which span of event time a run covers, and how fast it is played out.

Each user has one active view at a time and watches maybe an hour a day, so a few thousand
users produce only a few events per second of *event* time. To reach `--rate` events per wall
second, the simulated clock runs `speedup` times faster than the wall clock: a run of
`--duration S` seconds covers `S × speedup` seconds of event time. By default (`--speedup`
auto) the speedup is solved from the users' planted activity and the hour-of-day pattern so
that the expected number of events is `rate × duration`.

The span ends at "now" unless `--start-ms` is given: `start = now − duration × speedup`, so no
timestamp is ever in the future and the newest events are fresh. With `--start-ms` the span is
`[start, start + duration × speedup)` and the run is byte-for-byte reproducible; without it,
"now" is read once, at the edge, and passed in. `--start-ms now --speedup 1`, paced, is a live
feed: every event is sent the moment its timestamp comes round.

Pacing only decides *when* a message is sent (event time / speedup after the run starts, or
as fast as possible without pacing), never *what* is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from feedflow.simulator.playback import MIN_SESSION_GAP_S
from feedflow.simulator.tastes import DAY_S, Taste

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
# Events per second of planned session playback, measured on the behaviour model
# (heartbeats every 10 s plus starts, ends, pauses, seeks, skips and feedback).
EVENTS_PER_PLAYBACK_S: Final = 0.162
# Session wall time per second of playback budget (pauses, gaps, the overshoot of the last view).
SESSION_WALL_FACTOR: Final = 1.6


class Plan(NamedTuple):
    """The event-time span of a run and its compression."""

    start_ms: int
    end_ms: int
    speedup: float
    expected_events: float


def user_rate(t: Taste) -> float:
    """Expected events per second of event time for one user, averaged over a day."""
    cycle_s = DAY_S / t.sessions_per_day + t.session_s * SESSION_WALL_FACTOR + MIN_SESSION_GAP_S
    return EVENTS_PER_PLAYBACK_S * t.session_s / cycle_s


def in_session_probability(t: Taste, ts_ms: int) -> float:
    """Chance that a user is mid-session at `ts_ms`, for a warm start of the run."""
    busy = t.session_s * SESSION_WALL_FACTOR
    cycle_s = DAY_S / t.sessions_per_day + busy + MIN_SESSION_GAP_S
    return min(busy / cycle_s * t.profile[(ts_ms // HOUR_MS) % 24], 0.9)


class RateCurve:
    """Expected events per second of all users by UTC hour, and its integral over time."""

    def __init__(self, users: Sequence[Taste]) -> None:
        hourly = [0.0] * 24
        for t in users:
            r = user_rate(t)
            for h, p in enumerate(t.profile):
                hourly[h] += r * p
        self.hourly = hourly
        self._before = [sum(hourly[:h]) * 3600 for h in range(25)]

    def total(self, t_ms: int) -> float:
        """Expected events between the epoch and `t_ms`."""
        days, rem = divmod(t_ms, DAY_MS)
        hour, ms = divmod(rem, HOUR_MS)
        return days * self._before[24] + self._before[hour] + self.hourly[hour] * ms / 1000

    def expected(self, start_ms: int, end_ms: int) -> float:
        """Expected events in `[start_ms, end_ms)`."""
        return self.total(end_ms) - self.total(start_ms)


def plan_span(
    curve: RateCurve,
    rate: float,
    duration_s: float,
    now_ms: int,
    speedup: float | None = None,
    start_ms: int | None = None,
) -> Plan:
    """Choose the span: solve the speedup for `rate × duration` events unless one is given.

    Example:
        >>> from feedflow.simulator.tastes import Taste
        >>> curve = RateCurve([Taste(0, "u")])
        >>> p = plan_span(curve, rate=10.0, duration_s=60, now_ms=10**12)
        >>> p.end_ms, round(p.expected_events)
        (1000000000000, 600)
    """

    def span(s: float) -> tuple[int, int]:
        length = round(duration_s * s * 1000)
        if start_ms is None:
            return now_ms - length, now_ms
        return start_ms, start_ms + length

    if speedup is None:
        target = rate * duration_s
        lo, hi = 1e-6, 1e12
        for _ in range(200):  # bisection on a log scale: the expectation grows with the span
            mid = (lo * hi) ** 0.5
            if curve.expected(*span(mid)) < target:
                lo = mid
            else:
                hi = mid
        speedup = hi
    start, end = span(speedup)
    return Plan(start, end, speedup, curve.expected(start, end))


class Pacer:
    """Maps event time to wall time: event `ts` is due `(ts − start) / speedup` after start."""

    def __init__(
        self, start_ms: int, speedup: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.start_ms, self.speedup, self.clock = start_ms, speedup, clock
        self.t0 = clock()

    def wait_s(self, ts_ms: int) -> float:
        """Seconds until an event at `ts_ms` is due (≤ 0 when it is already late)."""
        due = self.t0 + (ts_ms - self.start_ms) / 1000 / self.speedup
        return due - self.clock()

    def due_ms(self) -> int:
        """The latest event time that is due now."""
        return self.start_ms + int((self.clock() - self.t0) * self.speedup * 1000)
