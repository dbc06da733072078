"""The simulation loop: a heap of viewers by pending event time, merged with catalogue changes.

The hot path pops the viewer whose pending event is earliest, formats the event from strings
precomputed per view (`head`, `tail`), optionally swaps it for a malformed payload, hands it to
the sink and pushes the viewer back with its next event time. Everything random comes from
`random.Random` streams seeded from the seed and a name, consumed in an order fixed by the heap
(ties broken by user index), so equal configurations give equal bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from feedflow.output import Progress
from feedflow.simulator.catalogue import (
    PUBLISH,
    Catalogue,
    Item,
    Pools,
    build_catalogue,
    build_creators,
    media_payload,
    removal_payload,
    schedule_media,
)
from feedflow.simulator.clock import Pacer, Plan, RateCurve, in_session_probability, plan_span
from feedflow.simulator.errors import SimulatorError
from feedflow.simulator.malformed import Malformer
from feedflow.simulator.playback import Viewer
from feedflow.simulator.tastes import Taste, build_users, ground_truth
from feedflow.simulator.vocabulary import CATEGORY_NAMES
from feedflow.simulator.writers import Sink
from operators.contracts import EVENT_TYPES, TOPIC_ENGAGEMENT, TOPIC_MEDIA

ARRIVALS_PER_30_DAYS: Final = 1.0  # new items per existing item per 30 days of event time
MIN_ARRIVAL_SHARE: Final = 0.02
REMOVAL_SHARE: Final = 0.01
_CHECK_EVERY: Final = 0xFF  # progress is updated every 256 events
_NEVER: Final = 2**62


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Equal configurations (with `start_ms` set) give equal output."""

    users: int
    items: int
    rate: float
    duration_s: float
    seed: int
    malformed: float = 0.0
    start_ms: int | None = None
    speedup: float | None = None
    catalogue_changes: bool = True  # items published and removed during the span

    def validate(self) -> None:
        """Raise SimulatorError naming the first impossible value."""
        checks = [
            (self.users >= 1, f"users must be ≥ 1, got {self.users}"),
            (self.items >= 1, f"items must be ≥ 1, got {self.items}"),
            (self.rate > 0, f"rate must be > 0, got {self.rate}"),
            (self.duration_s > 0, f"duration must be > 0, got {self.duration_s}"),
            (self.seed >= 0, f"seed must be ≥ 0, got {self.seed}"),
            (0.0 <= self.malformed <= 1.0, f"malformed must be in [0, 1], got {self.malformed}"),
            (self.speedup is None or self.speedup > 0, f"speedup must be > 0: {self.speedup}"),
            (self.start_ms is None or self.start_ms >= 0, f"start-ms must be ≥ 0: {self.start_ms}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SimulatorError(f"SimConfig: {message}")


@dataclass
class Summary:
    """What a run produced."""

    events: int = 0
    topics: dict[str, int] = field(default_factory=dict)
    event_types: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    media: dict[str, int] = field(default_factory=dict)
    users: int = 0
    start_ms: int = 0
    end_ms: int = 0
    speedup: float = 0.0
    simulated_hours: float = 0.0
    expected_events: int = 0
    elapsed_s: float = 0.0
    target_rate: float = 0.0
    achieved_rate: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `feedflow.output.emit`."""
        return asdict(self)


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"feedflow-simulator/{seed}/{name}")


class Simulation:
    """A world (catalogue, users), a time plan and the loop that plays it out.

    Example:
        >>> from feedflow.simulator.writers import ListSink
        >>> sim = Simulation(SimConfig(users=5, items=20, rate=50, duration_s=2, seed=1,
        ...                            start_ms=1_700_000_000_000), now_ms=0)
        >>> sink = ListSink()
        >>> summary = sim.run(sink)
        >>> summary.events == len(sink.messages)
        True
    """

    def __init__(self, config: SimConfig, now_ms: int) -> None:
        config.validate()
        self.config = config
        seed = config.seed
        creators = build_creators(_stream(seed, "creators"), seed, config.items)
        self.users: list[Taste] = build_users(_stream(seed, "users"), seed, config.users, creators)
        self.plan: Plan = plan_span(
            RateCurve(self.users),
            config.rate,
            config.duration_s,
            now_ms,
            speedup=config.speedup,
            start_ms=config.start_ms,
        )
        span_days = (self.plan.end_ms - self.plan.start_ms) / 86_400_000
        share = max(ARRIVALS_PER_30_DAYS * span_days / 30, MIN_ARRIVAL_SHARE)
        arriving = min(config.items, max(1, round(config.items * share)))
        arriving = arriving if config.catalogue_changes else 0
        self.catalogue: Catalogue = build_catalogue(
            _stream(seed, "items"), seed, creators, config.items, arriving
        )
        removals = min(max(1, round(config.items * REMOVAL_SHARE)), config.items // 2)
        removals = removals if config.catalogue_changes else 0
        self.changes = schedule_media(
            _stream(seed, "schedule"),
            self.catalogue,
            self.plan.start_ms,
            self.plan.end_ms,
            removals,
        )
        # Ids name the traffic, not the noise: runs differing only in --malformed share them.
        traffic = dataclasses.replace(config, malformed=0.0)
        digest = hashlib.blake2b(repr((traffic, self.plan.start_ms)).encode(), digest_size=5)
        self.tag = digest.hexdigest()

    def truth(self) -> dict[str, Any]:
        """Ground truth: the plan, the removed items and every user's planted tastes."""
        return {
            "seed": self.config.seed,
            "start_ms": self.plan.start_ms,
            "end_ms": self.plan.end_ms,
            "speedup": self.plan.speedup,
            "categories": list(CATEGORY_NAMES),
            "removed_media_ids": [
                item.media_id for _, kind, item in self.changes if kind != PUBLISH
            ],
            "users": ground_truth(self.users),
        }

    def run(self, sink: Sink, pace: bool = False, progress: Progress | None = None) -> Summary:
        """Play the whole span into `sink`, then close it; return what was produced."""
        loop = _Loop(self, sink, pace, progress)
        started = time.monotonic()
        interrupted = False
        try:
            loop.publish_initial()
            loop.play()
        except KeyboardInterrupt:  # Ctrl-C: deliver what was produced, report it, stop
            interrupted = True
        sink.close()
        summary = loop.summary(time.monotonic() - started)
        summary.interrupted = interrupted
        if progress is not None:  # counted in steps of 256 on the way: the exact count last
            progress.advance(max(summary.events - progress.done, 0))
            progress.close()
        return summary


class _Loop:
    """One run's mutable state; `play` is the hot path."""

    def __init__(self, sim: Simulation, sink: Sink, pace: bool, progress: Progress | None):
        seed = sim.config.seed
        self.sim, self.sink, self.progress = sim, sink, progress
        self.pools = Pools(len(CATEGORY_NAMES), len(sim.catalogue.creators))
        self.text_rng = _stream(seed, "text")
        self.behaviour = _stream(seed, "behaviour")
        self.viewers = [Viewer(t, self.behaviour, self.pools, sim.tag) for t in sim.users]
        self.malformer = Malformer(_stream(seed, "malformed-kinds"))
        self.mal_rng = _stream(seed, "malformed")
        self.pacer = Pacer(sim.plan.start_ms, sim.plan.speedup) if pace else None
        self.event_types = dict.fromkeys(sorted(EVENT_TYPES), 0)
        self.media = {"initial": 0, "published": 0, "removed": 0}
        self.engagement = self.malformed = 0
        self.change_idx = 0

    def publish_initial(self) -> None:
        """The catalogue as it stood at the start, then every viewer's first event."""
        catalogue, start = self.sim.catalogue, self.sim.plan.start_ms
        for item in catalogue.items[: catalogue.initial]:
            self._publish(item)
        self.media["initial"] = catalogue.initial
        rnd = self.behaviour.random
        for v in self.viewers:
            v.start(start, in_session=rnd() < in_session_probability(v.taste, start))

    def _publish(self, item: Item) -> None:
        self.pools.add(item)
        payload = media_payload(self.text_rng, item)
        self.sink.write(TOPIC_MEDIA, item.media_id, item.published_at, payload)

    def _apply_changes(self, until_ms: int) -> int:
        """Publish and remove items due before `until_ms`; return the next change's time."""
        changes, i = self.sim.changes, self.change_idx
        while i < len(changes) and changes[i][0] <= until_ms:
            ts, kind, item = changes[i]
            if kind == PUBLISH:
                self._publish(item)
                self.media["published"] += 1
            else:
                self.pools.remove(item)
                self.sink.write(TOPIC_MEDIA, item.media_id, ts, removal_payload(item))
                self.media["removed"] += 1
            i += 1
        self.change_idx = i
        return changes[i][0] if i < len(changes) else _NEVER

    def play(self) -> None:
        """Emit engagement events in event-time order until the end of the span."""
        end, viewers = self.sim.plan.end_ms, self.viewers
        heap = [(v.ts, i) for i, v in enumerate(viewers)]
        heapq.heapify(heap)
        keys = [v.taste.user_id for v in viewers]
        write, replace, counts = self.sink.write, heapq.heapreplace, self.event_types
        rate, draw, corrupt = self.sim.config.malformed, self.mal_rng.random, self.malformer.corrupt
        tag, n, bad = self.sim.tag + "-", self.engagement, self.malformed
        next_change = self._apply_changes(self.sim.plan.start_ms)
        sendable = -1 if self.pacer is not None else _NEVER  # event time already due
        while True:
            ts, ui = heap[0]
            if ts >= end:
                break
            if ts >= next_change:
                next_change = self._apply_changes(ts)
            if ts > sendable:
                sendable = self._pace(ts)
            v = viewers[ui]
            ts, etype, pos, frm, head, tail = v.step()
            replace(heap, (v.ts, ui))
            n += 1
            counts[etype] += 1
            if frm >= 0:
                payload = (
                    f'{{"event_id":"{tag}{n}","event_type":"{etype}",{head},"ts":{ts},'
                    f'"position_s":{pos}.0,"from_position_s":{frm}.0{tail}'
                )
            elif pos >= 0:
                payload = (
                    f'{{"event_id":"{tag}{n}","event_type":"{etype}",{head},"ts":{ts},'
                    f'"position_s":{pos}.0{tail}'
                )
            else:
                payload = f'{{"event_id":"{tag}{n}","event_type":"{etype}",{head},"ts":{ts}{tail}'
            if rate and draw() < rate:
                payload = corrupt(payload)
                bad += 1
            write(TOPIC_ENGAGEMENT, keys[ui], ts, payload)
            if not n & _CHECK_EVERY and self.progress is not None:
                self.progress.advance(_CHECK_EVERY + 1)
        self.engagement, self.malformed = n, bad
        self._apply_changes(end - 1)

    def _pace(self, ts: int) -> int:
        """Wait until event time `ts` is due; return the event time due now."""
        assert self.pacer is not None
        wait = self.pacer.wait_s(ts)
        if wait > 0.0005:
            self.sink.idle(wait)
        return self.pacer.due_ms()

    def summary(self, elapsed_s: float) -> Summary:
        plan, media = self.sim.plan, sum(self.media.values())
        events = self.engagement + media
        return Summary(
            events=events,
            topics={TOPIC_ENGAGEMENT: self.engagement, TOPIC_MEDIA: media},
            event_types={k: v for k, v in self.event_types.items() if v},
            malformed=self.malformed,
            malformed_kinds=dict(self.malformer.counts),
            media=dict(self.media),
            users=len(self.viewers),
            start_ms=plan.start_ms,
            end_ms=plan.end_ms,
            speedup=round(plan.speedup, 3),
            simulated_hours=round((plan.end_ms - plan.start_ms) / 3_600_000, 3),
            expected_events=round(plan.expected_events),
            elapsed_s=round(elapsed_s, 3),
            target_rate=self.sim.config.rate,
            achieved_rate=round(events / max(elapsed_s, 1e-9), 1),
        )
