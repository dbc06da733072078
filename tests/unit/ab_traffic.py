"""Simulated A/B traffic with a planted effect: impressions and the engagement that follows.

Each user (assigned by the real :class:`operators.ab.Assigner`) sees a few feeds; a feed is
clicked with its arm's planted CTR: one served item is started, watched for a while in
10-second heartbeats and, with the arm's completion probability, completed. Noise a report
must ignore: plays of items the feed did not serve, plays after the attribution window,
skips, and likes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from operators.ab import Assigner
from operators.contracts import EngagementEvent, Impression, ImpressionItem

WINDOW_MS = 3_600_000
DURATION_S = 60


@dataclass
class Traffic:
    impressions: list[Impression] = field(default_factory=list)
    events: list[EngagementEvent] = field(default_factory=list)
    clicks: dict[str, int] = field(default_factory=dict)  # planted, per arm


def simulate(
    assigner: Assigner,
    ctr: Mapping[str, float],
    users: int = 4000,
    feeds: int = 2,
    seed: int = 1,
    start_ms: int = 1_700_000_000_000,
    completion: float = 0.5,
) -> Traffic:
    """`users` users × `feeds` feeds of 10 items; arms missing from `ctr` get its "*" entry."""
    rng = random.Random(seed)
    prefix = f"ab{seed}-{uuid.UUID(int=rng.getrandbits(128)).hex[:6]}"
    out = Traffic()
    for u in range(users):
        user = f"{prefix}-u{u}"
        arm = assigner.assign(user).name
        for f in range(feeds):
            ts = start_ms + f * 2 * WINDOW_MS + rng.randrange(60_000)
            media = [f"m{n}" for n in rng.sample(range(500), 10)]
            out.impressions.append(_impression(f"{user}-r{f}", user, ts, arm, media))
            if rng.random() < ctr.get(arm, ctr["*"]):
                out.clicks[arm] = out.clicks.get(arm, 0) + 1
                _play(out, rng, user, rng.choice(media), ts + 5_000, rng.random() < completion)
            elif rng.random() < 0.3:  # served but skipped: no click
                _event(out, rng, "media_skipped", user, media[0], ts + 2_000, None)
            if rng.random() < 0.2:  # organic play of something never served
                _play(out, rng, user, "m-organic", ts + 20_000, False)
            if rng.random() < 0.1:  # a served item played long after the window
                _play(out, rng, user, media[1], ts + WINDOW_MS + 60_000, False)
    return out


def _impression(request_id: str, user: str, ts: int, arm: str, media: list[str]) -> Impression:
    items = [
        ImpressionItem(media_id=m, position=n, score=1.0 - n / 10, source="ann")
        for n, m in enumerate(media)
    ]
    return Impression(request_id=request_id, user_id=user, ts=ts, arm=arm,
                      model_version="v1", index_version="i1", items=items)  # fmt: skip


def _play(out: Traffic, rng: random.Random, user: str, media: str, ts: int, done: bool) -> None:
    _event(out, rng, "media_started", user, media, ts, 0.0)
    watched = DURATION_S if done else rng.randrange(10, DURATION_S - 10, 10)
    for pos in range(10, watched + 1, 10):
        _event(out, rng, "media_progress", user, media, ts + pos * 1000, float(pos))
    if done:
        _event(out, rng, "media_completed", user, media, ts + watched * 1000 + 500, watched)
    if rng.random() < 0.2:
        _event(out, rng, "media_liked", user, media, ts + watched * 1000 + 900, None)


def _event(
    out: Traffic, rng: random.Random, kind: str, user: str, media: str, ts: int, pos: float | None
) -> None:
    event_id = uuid.UUID(int=rng.getrandbits(128)).hex
    out.events.append(
        EngagementEvent(
            event_id=event_id, event_type=kind, user_id=user, media_id=media, ts=ts, position_s=pos
        )
    )
