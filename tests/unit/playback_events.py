"""Event factories, view scripts and a batch oracle for the engagement logic tests."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from operators.contracts import EngagementEvent

T0 = 1_700_000_000_000
MAX_RATE = 2  # the rule under test: forward at most this fast (plus jitter) was played
JITTER_MS = 2000


def ev(
    kind: str,
    t_s: float,
    pos: float | None = None,
    *,
    frm: float | None = None,
    media: str | None = "m1",
    user: str = "u1",
    eid: str | None = None,
    creator: str | None = None,
    content_type: str | None = None,
) -> EngagementEvent:
    """One event `t_s` seconds after T0; the id is derived from the content unless given."""
    ts = T0 + round(t_s * 1000)
    return EngagementEvent(
        event_id=eid or f"{user}:{media}:{kind}:{ts}:{pos}:{frm}",
        event_type=kind,
        user_id=user,
        media_id=media,
        creator_id=creator,
        ts=ts,
        position_s=pos,
        from_position_s=frm,
        content_type=content_type,
    )


def heartbeats(
    t0: float, p0: float, seconds: int, every: int = 10, media: str = "m1"
) -> list[EngagementEvent]:
    """`media_progress` every `every` seconds of continuous playback from (t0, p0)."""
    return [
        ev("media_progress", t0 + k, p0 + k, media=media) for k in range(every, seconds + 1, every)
    ]


@dataclass
class Script:
    """A generated view: its events in event-time order, and where it ends."""

    events: list[EngagementEvent]
    end_s: float


@st.composite
def view_scripts(
    draw: st.DrawFn, media: str = "m1", start_s: float = 0.0, user: str = "u1"
) -> Script:
    """A plausible single view: start, play, pauses, seeks, replays, and an optional end."""
    t, pos = start_s, 0.0
    first = draw(st.sampled_from(["media_started", "media_replay"]))
    events = [ev(first, t, pos, media=media, user=user)]
    for _ in range(draw(st.integers(1, 12))):
        action = draw(st.sampled_from(["play", "play", "play", "pause", "seek", "replay"]))
        if action == "play":
            n = draw(st.integers(1, 12))
            for _ in range(n):
                t, pos = t + 10, pos + 10
                events.append(ev("media_progress", t, pos, media=media, user=user))
        elif action == "pause":
            events.append(ev("media_paused", t + 1, pos + 1, media=media, user=user))
            t, pos = t + 1 + draw(st.integers(5, 300)), pos + 1
        elif action == "seek":
            target = float(draw(st.integers(0, 900)))
            t += 1
            events.append(ev("media_seeked", t, target, frm=pos, media=media, user=user))
            pos = target
        else:
            t += 1
            events.append(ev("media_replay", t, 0.0, media=media, user=user))
            pos = 0.0
    end = draw(st.sampled_from(["media_completed", "media_stopped", None]))
    if end is not None:
        t, pos = t + 5, pos + 5
        events.append(ev(end, t, pos, media=media, user=user))
    return Script(events, t)


def jittered(
    events: list[EngagementEvent], rnd: random.Random, max_delay_s: float
) -> list[EngagementEvent]:
    """Reorder: each event is delayed by up to `max_delay_s`; some are duplicated."""
    keyed: list[tuple[float, int, EngagementEvent]] = []
    for i, e in enumerate(events):
        keyed.append((e.ts + rnd.uniform(0, max_delay_s * 1000), i, e))
        if rnd.random() < 0.2:
            keyed.append((e.ts + rnd.uniform(0, max_delay_s * 1000), i, e))
    return [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def batch_consumption(events: list[EngagementEvent]) -> tuple[int, int, int]:
    """(distinct deciseconds, dwell deciseconds, max position ds) of one view, by brute force.

    Independent of the implementation: a set of every decisecond played, pairs taken over
    the distinct observations sorted by (time, event kind order, position).
    """
    order = {
        "media_started": 1,
        "media_replay": 2,
        "media_progress": 3,
        "media_seeked": 4,
        "media_paused": 5,
        "media_paused_early": 6,
        "media_skipped": 7,
        "media_stopped": 8,
        "media_completed": 9,
    }
    obs = sorted(
        {
            (
                e.ts,
                order[e.event_type],
                round(e.position_s * 10),
                -1 if e.from_position_s is None else round(e.from_position_s * 10),
            )
            for e in events
            if e.event_type in order and e.position_s is not None
        }
    )
    played: set[int] = set()
    dwell = 0
    top = 0
    for (ta, _, pa, _), (tb, kb, pb, fb) in itertools.pairwise(obs):
        end = fb if kb == 4 else pb
        if end > pa and (end - pa) * 100 <= (tb - ta) * MAX_RATE + JITTER_MS:
            played.update(range(pa, end))
            dwell += end - pa
    for _, _, p, f in obs:
        top = max(top, p, f)
    return len(played), dwell, top
