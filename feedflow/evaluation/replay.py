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
event time, so at its default (a week) the popularity boards describe the final weeks.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from feedflow.asgi_client import AsgiClient
from feedflow.bench.serving_world import PrivateRedis
from feedflow.evaluation.protocol import LIST_LENGTH, top_unseen
from feedflow.output import Progress
from flows import content, engagement
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_MEDIA,
    DeadLetter,
    EngagementEvent,
    MediaPublished,
    encode,
)
from operators.errors import FeedflowError
from operators.settings import Settings
from serving.app import create_app
from serving.runtime import build_runtime

MAX_PAGE: Final = 1000
REQUEST_TIMEOUT_MS: Final = 1000
READY_TIMEOUT_S: Final = 120.0
FEED_PATH: Final = "/api/v1/content/feed"
OUTCOMES: Final = ("ok", "late", "duplicate", "invalid")


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
    with tempfile.TemporaryDirectory(prefix="feedflow-eval-") as tmp:
        root = Path(tmp)
        with PrivateRedis(root / "redis") as server:
            s = eval_settings(settings, server.url, root / "index")
            letters: list[DeadLetter] = []
            started = time.perf_counter()
            replay_catalogue(s, catalogue, letters)
            out.seconds["content_flow"] = time.perf_counter() - started
            before = _outcomes()
            started = time.perf_counter()
            replay_engagement(s, events, letters)
            out.seconds["engagement_flow"] = time.perf_counter() - started
            after = _outcomes()
            out.events = {k: round(after[k] - before[k]) for k in OUTCOMES}
            out.dead_letters = len(letters)
            started = time.perf_counter()
            ask_feeds(s, users, history, seed, out)
            out.seconds["feed_requests"] = time.perf_counter() - started
    return out


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


def _source(
    topic: str, keyed: Iterator[tuple[str, bytes]], batch_size: int, progress: Progress
) -> TestingSource[KafkaSourceMessage[bytes, bytes]]:
    """A one-partition testing source of `topic` messages, built lazily, counted as read."""

    def messages() -> Iterator[KafkaSourceMessage[bytes, bytes]]:
        for offset, (key, value) in enumerate(keyed):
            progress.advance()
            yield KafkaSourceMessage(key.encode(), value, topic=topic, partition=0, offset=offset)

    return TestingSource(messages(), batch_size=batch_size)


def ask_feeds(
    settings: Settings,
    users: Sequence[str],
    history: Mapping[str, set[str]],
    seed: int,
    out: FeedflowRun,
) -> None:
    """Each user's feed from the HTTP handler, training items dropped, cut to the top 20."""
    runtime = build_runtime(settings)
    # Exploration samples category boards; seeded, two runs ask the same feeds.
    runtime.service._rng.seed(seed)
    # Every user gets the personalised feed: the eval measures the recommender, not the
    # A/B layout (the permanent holdback would otherwise give ~2 % of users trending only).
    runtime.service.arms = None
    progress = Progress("feed requests", len(users))
    with AsgiClient(create_app(runtime)) as client:
        _wait_ready(client)
        for user in users:
            seen = history.get(user, set())
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
            progress.advance()
    progress.close()


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
