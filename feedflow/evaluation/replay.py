"""Feedflow under evaluation: the production flows and feed API, replaying a data set.

Nothing here reimplements Feedflow. In one process, on a private `redis-server` (a free
loopback port, stopped at the end) and a temporary index directory:

1. the content flow (`flows.content.build_flow`) reads the catalogue events from a testing
   source of Kafka messages, and its real index sink writes the item store, the update log,
   the hnswlib index and its snapshot;
2. the engagement flow (`flows.engagement.build_flow`) reads the engagement events the same
   way, one partition, in event-time order, with its real feature sink and item lookup;
3. the serving runtime (`serving.runtime.build_runtime`) starts on that Redis and snapshot
   directory, and every evaluated user's feed is asked of the real HTTP handler
   (`GET /api/v1/content/feed`) through the ASGI app, once `/readyz` says ready.

Rejected payloads go to an in-process dead-letter list, which is counted (0 expected).

:func:`run` replays every event and then asks every feed (leave-last-out).
:func:`run_temporal` pauses the engagement flow at each checkpoint of
:func:`feedflow.evaluation.protocol.checkpoints` and asks that checkpoint's users there: each
stretch of events between two checkpoints is one execution of the same flow over a testing
source that ends with an EOF marker, under a recovery store, so the next execution resumes
with the state the previous one left (the engagement flow's own snapshots: bytewax's
continuation after EOF). At each EOF the stateful logics flush as at the end of input: open
views close with what they had, so a session running across a checkpoint is cut there and
its later events are dropped as late (counted in the outcomes; 7 of 410,204 on
ml-latest-small, where other users are seldom active at a user's moment). Each checkpoint's
feeds are asked of a serving runtime started for it, so no serving cache outlives the state
it was read from.

Cost: an execution restores every key's state and, since `on_eof` touches every key,
snapshots all of them again at its EOF, so a checkpoint costs in proportion to the keys held,
not to the events between checkpoints. On ml-latest-small (610 checkpoints, ~20k keys by the
end) the engagement flow took 1,234 s instead of ~100 s in one run, serving start-ups 165 s
(0.27 s each), and the recovery store wrote some 45 GB in all (the temporary directory had
better be on fast storage).

Eval-only settings, on top of the process's own: pages up to :data:`MAX_PAGE` items (a user's
training items are dropped from the page before it is cut to 20, so the page must be larger
than 20), a 1 s Redis timeout for requests (the eval measures ranking, not latency: the
production 10 ms would let a busy process answer from the degradation ladder), and a seeded
exploration so two runs ask the same feeds.

Time in a replay: the flows run on event time (the data set's 1996–2018 timestamps).
Timers and state expiry run on processing time, which a replay compresses into minutes, so
no state expires; Redis TTLs count from the write. Serving compares publication times with
the wall clock, so no film is "new" (freshness 0) and the fresh-items source is empty. The
trending boards keep the items of the last event-time hour of each board, so after a replay
they describe the data set's final hour; popularity decays with `popular_half_life_h` of
event time, so at its default (a week) the popularity boards describe the final weeks. In a
temporal replay both describe the hour and the weeks before each checkpoint instead.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from feedflow import behaviour_job
from feedflow.asgi_client import AsgiClient
from feedflow.bench.serving_world import PrivateRedis
from feedflow.evaluation.protocol import LIST_LENGTH, Checkpoint, top_unseen
from feedflow.output import Progress
from flows import content, engagement
from kernel.errors import FeedflowError
from kernel.settings import Settings
from operators.behaviour import Positives, factorise
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_MEDIA,
    DeadLetter,
    EngagementEvent,
    MediaPublished,
    encode,
)
from serving.app import create_app
from serving.runtime import build_runtime
from state.behaviour_store import BehaviourStore
from state.index_replica import snapshot_store
from state.item_lookup import job_lookup
from state.redis_client import JOB, connect

MAX_PAGE: Final = 1000
WEEK_MS: Final = 7 * 86_400_000  # the behaviour run's schedule (`feedflow behaviour run`)
REQUEST_TIMEOUT_MS: Final = 1000
READY_TIMEOUT_S: Final = 120.0
FEED_PATH: Final = "/api/v1/content/feed"
OUTCOMES: Final = ("ok", "late", "duplicate", "invalid")
# Start-up lines of a serving runtime (index loaded, catalogue scanned, ready, impressions
# off): useful once, noise when a temporal run starts one per checkpoint.
QUIET_LOGGERS: Final = ("serving", "state")


class ReplayError(FeedflowError):
    """The replay or the feed API failed (serving never became ready, a request failed)."""


@dataclass
class FeedflowRun:
    """What the replay produced: each user's top list, and what happened on the way."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: int = 0
    events: dict[str, int] = field(default_factory=dict)  # engagement outcomes
    fallbacks: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)  # of the items in the top lists
    seconds: dict[str, float] = field(default_factory=dict)
    applied: int = 0  # engagement events replayed (temporal: up to the last checkpoint)
    checkpoints: int = 0  # temporal: pauses of the replay (flow executions, serving starts)
    behaviour: dict[str, Any] = field(default_factory=dict)  # what the behaviour run learned


def eval_settings(base: Settings, redis_url: str, index_dir: Path) -> Settings:
    """The process's settings on the private Redis and index, with the eval's overrides."""
    return msgspec.structs.replace(
        base,
        kafka_bootstrap_servers="",  # the replay never talks to a broker
        redis_url=redis_url,
        index_dir=str(index_dir),
        feed_limit_max=max(base.feed_limit_max, MAX_PAGE),
        redis_timeout_ms=max(base.redis_timeout_ms, REQUEST_TIMEOUT_MS),
    )


def run(
    settings: Settings,
    catalogue: Sequence[MediaPublished],
    events: Sequence[EngagementEvent],
    history: Mapping[str, set[str]],
    users: Sequence[str],
    seed: int = 0,
) -> FeedflowRun:
    """Replay `catalogue` then `events`, then ask the feed of each of `users`.

    Args:
        settings: the process's settings (signal weights, feed parameters, …).
        catalogue: catalogue events, published before any engagement.
        events: engagement events in the order to replay them.
        history: each user's training items, dropped from their feed.
        users: the users whose feeds are asked, in this order.
        seed: seed of the feed's exploration.
    """
    out = FeedflowRun()
    with private_world(settings) as (s, _):
        letters: list[DeadLetter] = []
        with _timer(out, "content_flow"):
            replay_catalogue(s, catalogue, letters)
        with _timer(out, "engagement_flow"), _counting(out):
            replay_engagement(s, events, letters)
        out.applied, out.dead_letters = len(events), len(letters)
        with _timer(out, "behaviour_run"):
            out.behaviour = learn_behaviour(s, events)
        with _timer(out, "feed_requests"):
            ask_feeds(s, users, history, seed, out)
    return out


def run_temporal(
    settings: Settings,
    catalogue: Sequence[MediaPublished],
    events: Sequence[EngagementEvent],
    history: Mapping[str, set[str]],
    plan: Sequence[Checkpoint],
    seed: int = 0,
) -> FeedflowRun:
    """Replay `catalogue`, then `events` up to each checkpoint of `plan` and ask its users.

    Events after the last checkpoint are not replayed: nobody is asked after them.

    Args:
        settings: the process's settings.
        catalogue: catalogue events, published before any engagement.
        events: engagement events in event-time order (the order `plan` was made for).
        history: each user's training items, dropped from their feed.
        plan: the checkpoints, in order; a checkpoint's `applied` counts events from the
            start of `events`.
        seed: seed of the feed's exploration (every checkpoint's runtime starts from it).
    """
    out = FeedflowRun(checkpoints=len(plan))
    with private_world(settings) as (s, root):
        letters: list[DeadLetter] = []
        with _timer(out, "content_flow"):
            replay_catalogue(s, catalogue, letters)
        recovery = fresh_recovery(root / "recovery")
        flow_progress = Progress("engagement flow: events", plan[-1].applied if plan else 0)
        feed_progress = Progress("feed requests", sum(len(cp.users) for cp in plan))
        weekly = WeeklyBehaviour(s)
        with _counting(out):
            for n, cp in enumerate(plan):
                with _timer(out, "engagement_flow"):
                    stretch = (out.applied, cp.applied)
                    replay_stretch(s, events, stretch, n, recovery, letters, flow_progress)
                with _timer(out, "behaviour_run"):
                    weekly.advance(events[out.applied : cp.applied], cp.at)
                out.applied = cp.applied
                with _timer(out, "feed_requests"), _quiet(n > 0):
                    ask_feeds(s, cp.users, history, seed, out, feed_progress)
        flow_progress.close()
        feed_progress.close()
        out.dead_letters = len(letters)
        out.behaviour = weekly.summary()
        weekly.close()
    return out


@contextmanager
def private_world(settings: Settings) -> Iterator[tuple[Settings, Path]]:
    """A private redis-server and temporary directory; the eval's settings on them."""
    with tempfile.TemporaryDirectory(prefix="feedflow-eval-") as tmp:
        root = Path(tmp)
        with PrivateRedis(root / "redis") as server:
            yield eval_settings(settings, server.url, root / "index"), root


def fresh_recovery(directory: Path) -> RecoveryConfig:
    """An empty one-partition recovery store (the replay runs one worker)."""
    directory.mkdir(parents=True)
    init_db_dir(directory, 1)
    return RecoveryConfig(directory)


def replay_catalogue(
    settings: Settings, catalogue: Sequence[MediaPublished], letters: list[DeadLetter]
) -> None:
    """Run the content flow over the catalogue until it ends (the index is snapshotted)."""
    keyed = ((m.media_id, encode(m)) for m in catalogue)
    progress = Progress("content flow: catalogue events", len(catalogue))
    source = _source(TOPIC_MEDIA, keyed, settings.kafka_batch_size, progress)
    run_main(
        content.build_flow(settings, source=source, deadletters=TestingSink(letters), tick=None)
    )
    progress.close()


def replay_engagement(
    settings: Settings, events: Sequence[EngagementEvent], letters: list[DeadLetter]
) -> None:
    """Run the engagement flow over the events until it ends (every view closed, written)."""
    keyed = ((e.user_id, encode(e)) for e in events)
    progress = Progress("engagement flow: events", len(events))
    source = _source(TOPIC_ENGAGEMENT, keyed, settings.kafka_batch_size, progress)
    run_main(engagement.build_flow(settings, source=source, deadletters=TestingSink(letters)))
    progress.close()


def learn_behaviour(settings: Settings, events: Sequence[EngagementEvent]) -> dict[str, Any]:
    """The weekly behaviour run (`feedflow behaviour run`) over the replayed events, its
    version published on the eval's Redis and index directory for serving to load."""
    client = connect(settings.redis_url, JOB)
    try:
        store = BehaviourStore(client, snapshot_store(settings))
        items = job_lookup(client)
        result = behaviour_job.run(store, settings, (encode(e) for e in events), items)
    finally:
        client.close()
    return result.as_dict()


class WeeklyBehaviour:
    """The behaviour run on its weekly schedule, in the replay's event time (temporal).

    Events are fed as the flow gets them; at a checkpoint at least :data:`WEEK_MS` after the
    last run, the run's own code (:func:`feedflow.behaviour_job.learn`'s steps) factorises the
    positives of every event before it and publishes a version, which that checkpoint's
    serving runtime loads: a feed never sees a version built from its future.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = connect(settings.redis_url, JOB)
        self._store = BehaviourStore(self._client, snapshot_store(settings))
        self._positives = Positives(settings, job_lookup(self._client))
        self._last: int | None = None
        self.runs = 0
        self.items = 0

    def advance(self, events: Sequence[EngagementEvent], at: int) -> None:
        """Feed `events` (all before `at`); run if a week has passed since the last run."""
        for event in events:
            self._positives.add(event)
        if self._last is not None and at < self._last + WEEK_MS:
            return
        space = factorise(self._positives.baskets(), self._settings.behaviour_dim)
        self._last = at
        if space.ids:
            self._store.publish(space)
            self.runs, self.items = self.runs + 1, len(space.ids)

    def summary(self) -> dict[str, Any]:
        """Plain data for the report."""
        active = self._store.active()
        return {"runs": self.runs, "items": self.items, "version": active}

    def close(self) -> None:
        """Close the Redis client (the published versions stay)."""
        self._client.close()


def replay_stretch(
    settings: Settings,
    events: Sequence[EngagementEvent],
    stretch: tuple[int, int],
    executions: int,
    recovery: RecoveryConfig,
    letters: list[DeadLetter],
    progress: Progress,
) -> None:
    """One execution of the engagement flow over `events[start:stop]`, resuming the state
    `executions` earlier executions left in `recovery`, up to an EOF marker.

    The testing source's recovery state is how many items it has read, EOF markers
    included; a resumed source skips that many from the start of its iterable. Placeholders
    stand in for them, so earlier events are neither kept encoded nor encoded again.

    Raises:
        ReplayError: the source resumed elsewhere than after the previous stretch.
    """
    start, stop = stretch
    keyed = ((e.user_id, encode(e)) for e in itertools.islice(events, start, stop))
    before = progress.done
    messages = _messages(TOPIC_ENGAGEMENT, keyed, progress, first_offset=start)
    items: Iterator[Any] = itertools.chain(
        itertools.repeat(None, start + executions), messages, [TestingSource.EOF()]
    )
    source = TestingSource(items, batch_size=settings.kafka_batch_size)
    flow = engagement.build_flow(settings, source=source, deadletters=TestingSink(letters))
    run_main(flow, recovery_config=recovery)
    if progress.done - before != stop - start:
        raise ReplayError(f"replay read {progress.done - before} events of {start}:{stop}")


def _source(
    topic: str, keyed: Iterator[tuple[str, bytes]], batch_size: int, progress: Progress
) -> TestingSource[KafkaSourceMessage[bytes, bytes]]:
    """A one-partition testing source of `topic` messages, built lazily, counted as read."""
    return TestingSource(_messages(topic, keyed, progress), batch_size=batch_size)


def _messages(
    topic: str, keyed: Iterator[tuple[str, bytes]], progress: Progress, first_offset: int = 0
) -> Iterator[KafkaSourceMessage[bytes, bytes]]:
    """Kafka messages of partition 0 from (key, value) pairs, counted as they are read."""
    for offset, (key, value) in enumerate(keyed, start=first_offset):
        progress.advance()
        yield KafkaSourceMessage(key.encode(), value, topic=topic, partition=0, offset=offset)


def ask_feeds(
    settings: Settings,
    users: Iterable[str],
    history: Mapping[str, set[str]],
    seed: int,
    out: FeedflowRun,
    progress: Progress | None = None,
) -> None:
    """Each user's feed from the HTTP handler of a runtime started for them, training items
    dropped, cut to the top 20.

    Args:
        settings: the eval's settings.
        users: the users to ask, in this order.
        history: each user's training items.
        seed: the exploration seed.
        out: receives the lists, the sources of their items and the fallbacks.
        progress: counts the requests; one of this call's own when None.
    """
    users = list(users)
    meter = progress or Progress("feed requests", len(users))
    with serving_client(settings, seed) as client:
        for user in users:
            ask_feed(client, user, history.get(user, set()), out)
            meter.advance()
    if progress is None:
        meter.close()


@contextmanager
def serving_client(settings: Settings, seed: int) -> Iterator[AsgiClient]:
    """A serving runtime on the eval's Redis and index, started, ready, behind an ASGI client."""
    runtime = build_runtime(settings)
    # Exploration samples category boards; seeded, two runs ask the same feeds.
    runtime.service._rng.seed(seed)
    # Every user gets the personalised feed: the eval measures the recommender, not the
    # A/B layout (the permanent holdback would otherwise give ~2 % of users trending only).
    runtime.service.arms = None
    # A serving process freezes its start-up heap out of the collector's reach once ready.
    # This process is the eval's, and a temporal run starts a runtime per checkpoint: a
    # frozen runtime's reference cycles would outlive it, and each freeze costs a full
    # collection. Marked as done, the freeze is skipped; nothing the feed computes depends
    # on it.
    runtime.frozen = True
    with AsgiClient(create_app(runtime)) as client:
        _wait_ready(client)
        yield client


def ask_feed(client: AsgiClient, user: str, seen: set[str], out: FeedflowRun) -> None:
    """One user's feed: a page large enough to drop `seen` from and keep 20."""
    limit = min(LIST_LENGTH + len(seen), MAX_PAGE)
    response = client.get(FEED_PATH, params={"user_id": user, "limit": limit})
    if response.status_code != 200:
        raise ReplayError(f"feed of {user}: HTTP {response.status_code} {response.text}")
    body = response.json()
    items = body["items"]
    top = top_unseen((i["media_id"] for i in items), seen)
    out.lists[user] = top
    source = {i["media_id"]: i["source"] for i in items}
    out.sources.update(source[m] for m in top)
    out.fallbacks[body["fallback"] or "none"] += 1


def _wait_ready(client: AsgiClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.2)
    detail = client.get("/readyz").text
    raise ReplayError(f"serving not ready within {READY_TIMEOUT_S:.0f}s: {detail}")


def _outcomes() -> dict[str, float]:
    labels = {"topic": TOPIC_ENGAGEMENT}
    return {
        k: REGISTRY.get_sample_value("feedflow_events_total", {**labels, "outcome": k}) or 0.0
        for k in OUTCOMES
    }


@contextmanager
def _timer(out: FeedflowRun, name: str) -> Iterator[None]:
    """Add the block's wall time to `out.seconds[name]`."""
    started = time.perf_counter()
    yield
    out.seconds[name] = out.seconds.get(name, 0.0) + time.perf_counter() - started


@contextmanager
def _counting(out: FeedflowRun) -> Iterator[None]:
    """Set `out.events` to the engagement outcomes counted inside the block."""
    before = _outcomes()
    yield
    after = _outcomes()
    out.events = {k: round(after[k] - before[k]) for k in OUTCOMES}


@contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """Raise the serving loggers to ERROR inside the block when `on`."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    if on:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
