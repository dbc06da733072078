"""CPU cost per event of the engagement logic alone (no Bytewax, Kafka or Redis), and sizes.

Traffic is the simulator's (second-level playback of planted tastes); item vectors come from
the hashing encoder, as in the content flow. The per-user logic (dedup + sessionizer +
profile, with and without a feature record per change) runs over the users interleaved by
event time, the way one worker sees them. The first half of the events warms the users up;
the second half is timed in process CPU time, best of `repeats`. Snapshots are taken the way
Bytewax takes them: every `epoch_events` events, one per key touched in that epoch, pickled.
By default an epoch is as many events as there are active users, so a touched user has about
one event per epoch: the worst case for snapshot cost (live, with heartbeats every 10 s and
5-second epochs, a watching user is touched by about one event per epoch).

    python -m feedflow.bench.engagement_logic --users 2000 --rate 2000 --duration 100
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import statistics
import time
from collections.abc import Sequence
from typing import Any

from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import ListSink
from kernel.settings import Settings
from operators.content import Stamp, record_of
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_MEDIA,
    EngagementEvent,
    MediaPublished,
    decode_engagement,
    decode_media,
)
from operators.emissions import Feedback, Segment, ViewStart
from operators.encoders import HashingEncoder, doc_of
from operators.item_info import ItemInfo, lookup_from
from operators.item_stats import ItemStats, ranking_keys
from operators.trending import TrendingBoard
from operators.user_engagement import UserEngagement, user_state
from operators.user_features import encode_user_features


def simulate(
    users: int, items: int, rate: float, duration_s: float, seed: int
) -> tuple[list[EngagementEvent], dict[str, ItemInfo]]:
    """Simulated engagement events and the catalogue with hashing-encoder vectors."""
    config = SimConfig(users, items, rate, duration_s, seed, start_ms=1_700_000_000_000)
    sink = ListSink()
    Simulation(config, now_ms=0).run(sink)
    encoder = HashingEncoder(dim=Settings().embedding_dim)
    events: list[EngagementEvent] = []
    catalogue: dict[str, ItemInfo] = {}
    for topic, _, _, value in sink.messages:
        payload = value.encode()
        if topic == TOPIC_ENGAGEMENT:
            ev = decode_engagement(payload)
            if isinstance(ev, EngagementEvent):
                events.append(ev)
        elif topic == TOPIC_MEDIA:
            item = decode_media(payload)
            if isinstance(item, MediaPublished) and item.status != "removed":
                record = record_of(item, Stamp(item.published_at or 0, 0))
                vector = encoder.encode_one(doc_of(item, record))
                catalogue[item.media_id] = ItemInfo.from_record(record, vector) or ItemInfo(
                    item.media_id
                )
    events.sort(key=lambda e: e.ts)
    return events, catalogue


def _time_users(
    events: Sequence[EngagementEvent],
    catalogue: dict[str, ItemInfo],
    emit: bool,
    epoch_events: int,
) -> tuple[float, float, int, dict[str, UserEngagement]]:
    settings, lookup = Settings(), lookup_from(catalogue)
    users: dict[str, UserEngagement] = {}
    half = len(events) // 2
    for ev in events[:half]:
        user = users.get(ev.user_id) or users.setdefault(
            ev.user_id, UserEngagement(settings, lookup, emit_features=emit)
        )
        user.on_event(ev)
    rest = [ev for ev in events[half:] if ev.user_id in users]
    gc.collect()
    touched: set[str] = set()
    snap_s = 0.0
    snapshots = 0
    start = time.process_time()
    for i, ev in enumerate(rest, 1):
        users[ev.user_id].on_event(ev)
        touched.add(ev.user_id)
        if i % epoch_events == 0:
            t0 = time.process_time()
            for key in touched:
                pickle.dumps(users[key].snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
            snap_s += time.process_time() - t0
            snapshots += len(touched)
            touched.clear()
    total = time.process_time() - start
    n = max(len(rest), 1)
    return (total - snap_s) * 1e6 / n, snap_s * 1e6 / n, snapshots, users


def _time_items(
    events: Sequence[EngagementEvent], catalogue: dict[str, ItemInfo]
) -> tuple[float, int]:
    """µs per item-side input (ItemStats + the trending boards it feeds)."""
    settings, lookup = Settings(), lookup_from(catalogue)
    users: dict[str, UserEngagement] = {}
    inputs: list[ViewStart | Segment | Feedback] = []
    for ev in events:
        user = users.get(ev.user_id) or users.setdefault(
            ev.user_id, UserEngagement(settings, lookup, emit_features=False)
        )
        for out in user.on_event(ev):
            if isinstance(out, ViewStart | Segment | Feedback) and out.media_id:
                inputs.append(out)
    stats: dict[str, ItemStats] = {}
    boards: dict[str, TrendingBoard] = {}
    start = time.process_time()
    for x in inputs:
        media = x.media_id or ""
        item = stats.get(media) or stats.setdefault(media, ItemStats(settings, lookup))
        update = item.on_event(x)[1]
        for key in ranking_keys(update):  # type: ignore[arg-type]
            board = boards.get(key) or boards.setdefault(key, TrendingBoard(100))
            board.on_event(update)  # type: ignore[arg-type]
    return (time.process_time() - start) * 1e6 / max(len(inputs), 1), len(inputs)


def _quantiles(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def run(
    users: int = 2000,
    items: int = 5000,
    rate: float = 2000.0,
    duration_s: float = 100.0,
    seed: int = 1,
    epoch_events: int | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """Measure and return a JSON-ready summary."""
    events, catalogue = simulate(users, items, rate, duration_s, seed)
    active = len({e.user_id for e in events})
    epoch_events = epoch_events or active
    result: dict[str, Any] = {"events": len(events), "users": active, "epoch_events": epoch_events}
    for emit in (False, True):
        runs = [_time_users(events, catalogue, emit, epoch_events) for _ in range(repeats)]
        best = min(runs, key=lambda r: r[0] + r[1])
        on_event, snapshot, snapshots, state = best
        result["features_on" if emit else "features_off"] = {
            "on_event_us": round(on_event, 2),
            "snapshot_us_per_event": round(snapshot, 2),
            "snapshots": snapshots,
            "total_us_per_event": round(on_event + snapshot, 2),
        }
    result["snapshot_bytes"] = _quantiles(
        [len(pickle.dumps(u.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)) for u in state.values()]
    )
    result["sessionizer_bytes"] = _quantiles(
        [len(user_state(u.snapshot()).sessions) for u in state.values()]
    )
    result["feature_record_bytes"] = _quantiles(
        [len(encode_user_features(u.features())) for u in state.values()]
    )
    item_us, inputs = _time_items(events, catalogue)
    result["item_side"] = {"us_per_input": round(item_us, 2), "inputs": inputs}
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: print the summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epoch-events", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    summary = run(
        args.users,
        args.items,
        args.rate,
        args.duration,
        args.seed,
        args.epoch_events,
        args.repeats,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
