"""Seconds actually played in one view, rebuilt from playback telemetry.

A view is a set of observations `(ts_ms, kind, position_ds, from_ds)` (positions in tenths of
a second, `from_ds` only for seeks). Sorted by that tuple, each consecutive pair `a → b` says
the content between `a`'s position and `b`'s starting position (`from_position_s` for a seek,
else `position_s`) was played if it moved forward no faster than playback can:
`Δposition ≤ Δt × MAX_RATE + JITTER`. A pause in between only makes Δt larger, a seek forward
is excluded because a seek's own start and end are separate, and a jump the clock cannot
explain (a scrub without a seek event) counts nothing. `consumed` is the measure of the union
of played intervals (each second once); `dwell` is the sum of their lengths (a seek back
re-plays seconds: once for coverage, again for dwell).

Both are functions of the *set* of observations. To keep state small (one view of a 2-hour
film is 720 heartbeats) a view keeps only observations newer than a horizon (the allowed
lateness) in a sorted buffer of packed 17-byte records, and folds older ones into merged
intervals; the caller guarantees no accepted event is older than that horizon, so the result
never depends on arrival order or duplicates. Snapshots hold the buffer as steps from one
observation to the next (:func:`pack_steps`): a heartbeat is 5 bytes there.

Example:
    >>> v = View("m1", opened_ts=0)
    >>> for ts, pos in [(10_000, 10.0), (0, 0.0), (20_000, 20.0), (10_000, 10.0)]:
    ...     _ = v.insert(observation(ts, PROGRESS, pos), cutoff_ms=0)
    >>> v.consumed_ds(), v.dwell_ds()
    (200, 200)
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from operators import signals

STARTED, REPLAY, PROGRESS, SEEKED, PAUSED, PAUSED_EARLY, SKIPPED, STOPPED, COMPLETED = range(1, 10)
# Order of kinds at equal timestamps follows a natural session: start, play, pause, end.
KIND: Final = {
    "media_started": STARTED,
    "media_replay": REPLAY,
    "media_progress": PROGRESS,
    "media_seeked": SEEKED,
    "media_paused": PAUSED,
    "media_paused_early": PAUSED_EARLY,
    "media_skipped": SKIPPED,
    "media_stopped": STOPPED,
    "media_completed": COMPLETED,
}
KIND_SIGNAL: Final = {
    STARTED: signals.bit("started"),
    REPLAY: signals.bit("replay"),
    PAUSED_EARLY: signals.bit("paused_early"),
    SKIPPED: signals.bit("skipped"),
}
ENDS_VIEW: Final = frozenset({STOPPED, COMPLETED})
OPENS_VIEW: Final = frozenset({STARTED, REPLAY})

MAX_RATE: Final = 2  # fastest playback speed a client offers
JITTER_MS: Final = 2_000  # heartbeat timing slack
FOLD_SLACK_MS: Final = 60_000  # fold in batches: at most this much past the cutoff
NO_POS: Final = 0xFFFF_FFFF
_NO_HEAD: Final = 2**63
# Big-endian, so comparing packed bytes orders records like comparing their tuples.
OBS: Final = struct.Struct(">QBII")
# A step from the previous observation: kind, Δt ms, Δposition ds (no seek origin), or with
# the top bit of the kind set, the same in full widths and the seek origin.
_STEP: Final = struct.Struct("<BHh")
_STEP_FULL: Final = struct.Struct("<BQqI")
_FULL: Final = 0x80
_ORIGIN: Final = (0, 0, 0, NO_POS)

Obs = tuple[int, int, int, int]


def step(prev: Obs, obs: Obs) -> bytes:
    """`obs` as a step from `prev` (an earlier observation in sort order, or the origin).

    Example:
        >>> len(step((0, PROGRESS, 100, NO_POS), (10_000, PROGRESS, 200, NO_POS)))
        5
    """
    dt, dpos = obs[0] - prev[0], obs[2] - prev[2]
    if 0 <= dt <= 0xFFFF and -0x8000 <= dpos <= 0x7FFF and obs[3] == NO_POS:
        return _STEP.pack(obs[1], dt, dpos)
    return _STEP_FULL.pack(obs[1] | _FULL, dt, dpos, obs[3])


def pack_steps(records: Sequence[bytes]) -> list[bytes]:
    """The :func:`step` of each packed record from the one before it (the first from the
    origin)."""
    prev, out = _ORIGIN, []
    for rec in records:
        obs: Obs = OBS.unpack(rec)
        out.append(step(prev, obs))
        prev = obs
    return out


def unpack_steps(raw: bytes) -> list[bytes]:
    """The packed records that joined :func:`pack_steps` output encodes, in order.

    Example:
        >>> recs = [OBS.pack(1_000, STARTED, 0, NO_POS), OBS.pack(9_000, SEEKED, 900, 20)]
        >>> unpack_steps(b"".join(pack_steps(recs))) == recs
        True
    """
    ts, _, pos, _ = _ORIGIN
    at, out = 0, []
    while at < len(raw):
        if raw[at] & _FULL:
            kind, dt, dpos, frm = _STEP_FULL.unpack_from(raw, at)
            kind &= ~_FULL
            at += _STEP_FULL.size
        else:
            kind, dt, dpos = _STEP.unpack_from(raw, at)
            frm = NO_POS
            at += _STEP.size
        ts, pos = ts + dt, pos + dpos
        out.append(OBS.pack(ts, kind, pos, frm))
    return out


class ViewState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A view as snapshotted, named in code and positional in msgpack (as compact as the
    tuple it replaced, which it reads). The field order is the recovery format, pinned by a
    test: a new field goes last, with a default; the version is the sessionizer's."""

    media_id: str
    opened_ts: int
    first_ts: int
    last_ts: int
    end_ts: int
    flags: int
    replays: int
    client_completed: int
    max_pos: int
    content_type: str | None
    observations: bytes  # the buffer as joined steps (`pack_steps`; version 1: OBS records)
    tail: bytes  # the last folded observation, packed (b"": none)
    intervals: bytes  # consumed intervals, array("I")
    dwell: int


ViewSnapshot = ViewState | Sequence[Any]


def observation(ts_ms: int, kind: int, position_s: float, from_s: float | None = None) -> Obs:
    """One observation tuple, positions rounded to tenths of a second.

    Example:
        >>> observation(1_000, SEEKED, 42.04, from_s=3.0)
        (1000, 4, 420, 30)
    """
    return (ts_ms, kind, round(position_s * 10), NO_POS if from_s is None else round(from_s * 10))


def played(a: Obs, b: Obs) -> tuple[int, int] | None:
    """The interval (deciseconds) played between consecutive observations, if any.

    Example:
        >>> played((0, PROGRESS, 0, NO_POS), (10_000, PROGRESS, 100, NO_POS))
        (0, 100)
        >>> played((0, PROGRESS, 0, NO_POS), (10_000, PROGRESS, 900, NO_POS)) is None
        True
        >>> played((0, PROGRESS, 100, NO_POS), (5_000, SEEKED, 900, 150))
        (100, 150)
    """
    start = a[2]
    end = b[3] if b[1] == SEEKED else b[2]
    if end <= start or (end - start) * 100 > (b[0] - a[0]) * MAX_RATE + JITTER_MS:
        return None
    return start, end


def add_interval(iv: list[int], start: int, end: int) -> None:
    """Merge `[start, end)` into a flat sorted list `[s0, e0, s1, e1, …]` in place.

    Example:
        >>> iv = [0, 10, 20, 30]
        >>> add_interval(iv, 10, 20); iv
        [0, 30]
    """
    if iv and iv[-2] <= start <= iv[-1] <= end:  # continuous play extends the last interval
        iv[-1] = end
        return
    lo = bisect.bisect_left(iv, start)
    hi = bisect.bisect_right(iv, end)
    if lo % 2:
        lo -= 1
        start = iv[lo]
    if hi % 2:
        end = iv[hi]
        hi += 1
    iv[lo:hi] = (start, end)


def covered(iv: list[int]) -> int:
    """Total length of a flat interval list.

    Example:
        >>> covered([0, 10, 20, 25])
        15
    """
    return sum(iv[1::2]) - sum(iv[0::2])


class View:
    """One (user, item) view: the observations, the folded intervals and the flags.

    `insert` returns True when the observation was new. `provisional` intervals and dwell
    always cover every observation seen; `committed` ones cover those folded out of the
    buffer. `flags` holds signal bits; `end_ts` is set by `media_stopped` or
    `media_completed`.
    """

    __slots__ = (
        "buf",
        "c_dwell",
        "c_iv",
        "client_completed",
        "content_type",
        "end_ts",
        "first_ts",
        "flags",
        "head_ts",
        "last_ts",
        "max_pos",
        "media_id",
        "newest",
        "opened_ts",
        "p_dwell",
        "p_iv",
        "replays",
        "steps",
        "tail",
    )

    def __init__(self, media_id: str, opened_ts: int):
        self.media_id = media_id
        self.opened_ts = opened_ts
        self.first_ts = opened_ts
        self.last_ts = opened_ts
        self.end_ts = -1
        self.flags = 0
        self.replays = 0
        self.client_completed = 0
        self.max_pos = 0
        self.newest: Obs | None = None  # the greatest observation in sort order
        self.content_type: str | None = None
        self.buf: list[bytes] = []
        self.steps: list[bytes] = []  # buf[i] as a step from buf[i - 1], kept for snapshots
        self.head_ts = _NO_HEAD  # event time of the oldest buffered observation
        self.tail: Obs | None = None
        self.c_iv: list[int] = []
        self.c_dwell = 0
        self.p_iv: list[int] = []
        self.p_dwell = 0

    def touch(self, ts_ms: int) -> None:
        """Widen the view's time span to include `ts_ms`."""
        self.first_ts = min(self.first_ts, ts_ms)
        self.last_ts = max(self.last_ts, ts_ms)

    def insert(self, obs: Obs, cutoff_ms: int) -> bool:
        """Add one observation; fold the ones older than `cutoff_ms` into the intervals.

        Folding waits until the oldest buffered observation is :data:`FOLD_SLACK_MS` past
        the cutoff, then folds everything older than the cutoff in one go.

        Returns:
            False for an exact duplicate, or for an observation at or before the folded
            tail (the caller's lateness rule should have stopped it).
        """
        if self.tail is not None and obs <= self.tail:
            return False
        rec = OBS.pack(*obs)
        buf = self.buf
        newest = self.newest
        if not buf or rec > buf[-1]:
            prev = newest  # the newest observation is the last buffered one, or the tail
            if not buf:
                self.head_ts = obs[0]
            self.steps.append(step(prev if buf and prev is not None else _ORIGIN, obs))
            buf.append(rec)
            if prev is not None:
                span = played(prev, obs)
                if span is not None:
                    add_interval(self.p_iv, span[0], span[1])
                    self.p_dwell += span[1] - span[0]
        else:
            at = bisect.bisect_left(buf, rec)
            if buf[at] == rec:
                return False
            buf.insert(at, rec)
            self.steps.insert(at, step(OBS.unpack(buf[at - 1]) if at else _ORIGIN, obs))
            self.steps[at + 1] = step(obs, OBS.unpack(buf[at + 1]))
            if at == 0:
                self.head_ts = obs[0]
            self._recompute_provisional()
        self._note(obs)
        if self.head_ts < cutoff_ms - FOLD_SLACK_MS:
            self.fold(cutoff_ms)
        return True

    def fold(self, cutoff_ms: int | None = None) -> None:
        """Move buffered observations older than `cutoff_ms` (all if None) into intervals."""
        buf = self.buf
        tail = self.tail
        n = 0
        for rec in buf:
            obs: Obs = OBS.unpack(rec)
            if cutoff_ms is not None and obs[0] >= cutoff_ms:
                break
            if tail is not None:
                span = played(tail, obs)
                if span is not None:
                    add_interval(self.c_iv, span[0], span[1])
                    self.c_dwell += span[1] - span[0]
            tail = obs
            n += 1
        self.tail = tail
        del buf[:n]
        del self.steps[:n]
        if buf and n:
            self.steps[0] = step(_ORIGIN, OBS.unpack(buf[0]))
        self.head_ts = OBS.unpack_from(buf[0])[0] if buf else _NO_HEAD

    def consumed_ds(self) -> int:
        """Distinct deciseconds played so far (every observation seen)."""
        return covered(self.p_iv)

    def last_position_ds(self) -> int:
        """Position of the newest observation (where playback was last seen)."""
        return self.newest[2] if self.newest is not None else 0

    def dwell_ds(self) -> int:
        """Deciseconds played so far, re-plays counted again."""
        return self.p_dwell

    def deadline(self, inactivity_ms: int, grace_ms: int) -> int:
        """Event time at which the view closes if nothing else arrives."""
        if self.end_ts >= 0:
            return min(self.end_ts + grace_ms, self.last_ts + inactivity_ms)
        return self.last_ts + inactivity_ms

    def snapshot(self) -> ViewSnapshot:
        """Plain immutable state (provisional intervals are rebuilt on resume)."""
        tail = OBS.pack(*self.tail) if self.tail is not None else b""
        return ViewState(
            media_id=self.media_id,
            opened_ts=self.opened_ts,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            end_ts=self.end_ts,
            flags=self.flags,
            replays=self.replays,
            client_completed=self.client_completed,
            max_pos=self.max_pos,
            content_type=self.content_type,
            observations=b"".join(self.steps),
            tail=tail,
            intervals=array("I", self.c_iv).tobytes(),
            dwell=self.c_dwell,
        )

    @classmethod
    def resume(cls, snap: ViewSnapshot, steps: bool = True) -> View:
        """Rebuild a view from :meth:`snapshot` (a :class:`ViewState`, or the same fields
        by position, as msgpack gives them back); `steps=False` reads the observations as
        packed records (sessionizer snapshots of version 1)."""
        if not isinstance(snap, ViewState):
            snap = msgspec.convert(list(snap), ViewState)
        view = cls(snap.media_id, snap.opened_ts)
        view.first_ts, view.last_ts, view.end_ts = snap.first_ts, snap.last_ts, snap.end_ts
        view.flags, view.replays = snap.flags, snap.replays
        view.client_completed, view.max_pos = snap.client_completed, snap.max_pos
        view.content_type = snap.content_type
        raw = snap.observations
        if steps:
            view.buf = unpack_steps(raw)
        else:
            view.buf = [raw[i : i + OBS.size] for i in range(0, len(raw), OBS.size)]
        view.steps = pack_steps(view.buf)
        view.head_ts = OBS.unpack_from(view.buf[0])[0] if view.buf else _NO_HEAD
        view.tail = OBS.unpack(snap.tail) if snap.tail else None
        view.c_iv = array("I", snap.intervals).tolist()
        view.c_dwell = snap.dwell
        view.newest = OBS.unpack(view.buf[-1]) if view.buf else view.tail
        view._recompute_provisional()
        return view

    def _note(self, obs: Obs) -> None:
        ts, kind, pos, frm = obs
        if ts > self.last_ts:
            self.last_ts = ts
        elif ts < self.first_ts:
            self.first_ts = ts
        top = frm if kind == SEEKED and frm > pos else pos
        self.max_pos = max(self.max_pos, top)
        if self.newest is None or obs > self.newest:
            self.newest = obs
        if kind != PROGRESS:
            self.flags |= KIND_SIGNAL.get(kind, 0)
            if kind == REPLAY:
                self.replays += 1
            elif kind in ENDS_VIEW:
                self.end_ts = max(self.end_ts, ts)
                if kind == COMPLETED:
                    self.client_completed = 1

    def _add_played(self, iv: list[int], a: Obs, b: Obs, provisional: bool) -> None:
        span = played(a, b)
        if span is not None:
            add_interval(iv, span[0], span[1])
            if provisional:
                self.p_dwell += span[1] - span[0]
            else:
                self.c_dwell += span[1] - span[0]

    def _recompute_provisional(self) -> None:
        self.p_iv = list(self.c_iv)
        self.p_dwell = self.c_dwell
        prev = self.tail
        for rec in self.buf:
            obs: Obs = OBS.unpack(rec)
            if prev is not None:
                self._add_played(self.p_iv, prev, obs, provisional=True)
            prev = obs
