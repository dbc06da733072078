"""`feedflow eval --path DIR [--protocol leave-last-out|temporal] [--json [FILE]] [--out FILE]`.

Feedflow and three baselines on one offline split. Loads a MovieLens directory, holds out
each user's last rating (:mod:`.protocol`), replays the rest through the real flows and asks
the real feed API (:mod:`.replay`), scores MostPop, ItemKNN and EASE on the same split
(:mod:`.baselines`) and prints one table row per model, then the share of Feedflow's top-20
slots per candidate source. Progress goes to stderr; `--json` prints every figure as JSON
instead of the tables, `--out FILE` also writes them to FILE.

Protocols (the split is the same):

- `leave-last-out` (default): every feed is asked once all training events are replayed.
- `temporal`: each user's feed is asked at the moment of their held-out rating, the start of
  the session it would have had (:func:`.movielens.session_starts`), with exactly the events
  before that moment replayed (:func:`.protocol.checkpoints`; equal moments share one pause).
  The user's training items, all earlier than the held-out one, are still dropped from the
  list. MostPop, ItemKNN and EASE are batch models fitted once on all training ratings, so
  here they see the future, which favours them; `MostPop-past` counts only the ratings
  before each user's held-out rating (:func:`.baselines.most_pop_at`), the fair reference.
  The popular-share metric keeps its one definition: the 100 most-rated training films.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from feedflow.evaluation import baselines, movielens, replay
from feedflow.evaluation.protocol import (
    CHECKPOINT_WINDOW_MS,
    LEAVE_LAST_OUT,
    LIST_LENGTH,
    POPULAR_ITEMS,
    PROTOCOLS,
    TEMPORAL,
    Judge,
    Metrics,
    Split,
    checkpoints,
    leave_last_out,
    popularity,
)
from feedflow.evaluation.replay import FeedflowRun
from feedflow.output import add_json_flag, cell, emit
from kernel.settings import Settings
from operators.contracts import EngagementEvent, MediaPublished

FEEDFLOW: Final = "Feedflow"
MOST_POP_PAST: Final = "MostPop-past"
DESCRIPTION: Final = {
    LEAVE_LAST_OUT: "leave-last-out: every feed asked after all training events; "
    "full ranking, training items excluded, top 20",
    TEMPORAL: "temporal: each feed asked at the user's held-out moment with only earlier "
    "events applied; full ranking, training items excluded, top 20",
}
BASELINES_SEE: Final = {
    LEAVE_LAST_OUT: "all training ratings",
    TEMPORAL: "MostPop, ItemKNN, EASE: all training ratings, later ones included (the "
    "future, which favours them); MostPop-past: only ratings before the user's held-out one",
}
# (key in Metrics.row(), column title, decimals)
COLUMNS: Final = (
    ("hr@10", "HR@10", 4),
    ("ndcg@10", "NDCG@10", 4),
    ("hr@20", "HR@20", 4),
    ("ndcg@20", "NDCG@20", 4),
    ("coverage", "coverage", 4),
    ("genre_diversity", "genres@20", 2),
    ("popular_share", "popular share", 4),
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow eval`."""
    p = sub.add_parser(
        "eval",
        description="Hold out each user's last rating, replay the rest through the content "
        "and engagement flows into a private Redis, ask the feed API of every user, and "
        "compare with MostPop, ItemKNN and EASE on the same split.",
    )
    p.add_argument("--path", required=True, type=Path, metavar="DIR", help="MovieLens directory")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=LEAVE_LAST_OUT,
        help="when feeds are asked: after the whole replay (default), or each at the user's "
        "held-out moment with only earlier events replayed",
    )
    add_json_flag(p, out="also write every figure as JSON here")
    p.add_argument(
        "--users",
        type=int,
        metavar="N",
        help="a seeded sample of N users and only their ratings (quick runs; not comparable)",
    )
    p.add_argument("--seed", type=int, default=0, help="user sample and feed exploration seed")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the evaluation; returns the exit code."""
    started = time.perf_counter()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per feed request
    _say(f"loading {args.path}")
    data = movielens.load(args.path)
    if args.users is not None:
        data = sample_users(data, args.users, args.seed)
    split = leave_last_out(data.ratings)
    users = sorted(split.held_out)
    judge = Judge(
        held_out={u: x.item for u, x in split.held_out.items()},
        catalogue_size=len(data.movies),
        genres=data.genres(),
        popular=frozenset(popularity(split.train)[:POPULAR_ITEMS]),
    )
    _say(f"{len(data.ratings)} ratings, {len(users)} users evaluated, {len(data.movies)} films")
    _say(f"protocol {args.protocol}")
    results: dict[str, Metrics] = {}
    seconds: dict[str, float] = {}
    for name, lists in run_baselines(split, users, seconds, args.protocol):
        results[name] = judge.score(lists)
    if args.protocol == TEMPORAL:
        feedflow = run_feedflow_temporal(settings, data, split, args.seed)
    else:
        feedflow = run_feedflow(settings, data, split, users, args.seed)
    results[FEEDFLOW] = judge.score(feedflow.lists)
    seconds.update(feedflow.seconds)
    seconds["total"] = time.perf_counter() - started
    report = build_report(args.path, args.protocol, data, split, results, feedflow, seconds)
    if args.out is not None:
        args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if args.json:
        emit(report, as_json=True)
        return 0
    sys.stdout.write(table(results) + "\n\n")
    sys.stdout.write(source_table(feedflow.sources) + "\n\n")
    sys.stdout.write(facts(report) + "\n")
    return 0


def sample_users(data: movielens.MovieLens, n: int, seed: int) -> movielens.MovieLens:
    """The data set restricted to a seeded sample of `n` users (all films kept)."""
    everyone = sorted({r.user for r in data.ratings})
    chosen = set(random.Random(seed).sample(everyone, min(n, len(everyone))))
    ratings = [r for r in data.ratings if r.user in chosen]
    tags = [t for t in data.tags if t.user in chosen]
    return movielens.MovieLens(ratings, data.movies, tags)


def run_baselines(
    split: Split[movielens.Rating],
    users: list[str],
    seconds: dict[str, float],
    protocol: str = LEAVE_LAST_OUT,
) -> list[tuple[str, dict[str, list[str]]]]:
    """Top lists of MostPop, ItemKNN and EASE for `users`, fitted on all training ratings;
    under the temporal protocol also MostPop-past, counted before each user's moment."""
    m = baselines.TrainMatrix.of((x.user, x.item) for x in split.train)
    models: list[tuple[str, Callable[[baselines.TrainMatrix], baselines.Scorer]]] = [
        ("MostPop", baselines.most_pop),
        ("ItemKNN", baselines.item_knn),
        ("EASE", baselines.ease),
    ]
    out = []
    for name, build in models:
        started = time.perf_counter()
        _say(f"{name}: {len(m.users)} users × {len(m.items)} items")
        out.append((name, baselines.recommend(m, build(m), users, LIST_LENGTH)))
        seconds[name] = time.perf_counter() - started
    if protocol == TEMPORAL:
        started = time.perf_counter()
        timed = ((x.user, x.item, x.ts) for x in split.train)
        moments = {u: split.held_out[u].ts for u in users}
        out.insert(1, (MOST_POP_PAST, baselines.most_pop_at(m, timed, moments, LIST_LENGTH)))
        seconds[MOST_POP_PAST] = time.perf_counter() - started
    return out


def _replayed(
    data: movielens.MovieLens, split: Split[movielens.Rating]
) -> tuple[list[MediaPublished], list[EngagementEvent]]:
    """The catalogue (held-out films hidden from their users' pasts) and the training
    ratings as playback sessions: what both protocols replay."""
    hidden = {(u, x.item) for u, x in split.held_out.items()}
    catalogue = movielens.catalogue(data, movielens.earliest_ms(split.train), hidden)
    return catalogue, movielens.sessions(split.train)


def run_feedflow(
    settings: Settings,
    data: movielens.MovieLens,
    split: Split[movielens.Rating],
    users: list[str],
    seed: int,
) -> FeedflowRun:
    """Replay the training ratings through the flows and ask the feed of every user."""
    catalogue, events = _replayed(data, split)
    _say(f"Feedflow: {len(catalogue)} catalogue events, {len(events)} engagement events")
    return replay.run(settings, catalogue, events, split.history(), users, seed)


def run_feedflow_temporal(
    settings: Settings, data: movielens.MovieLens, split: Split[movielens.Rating], seed: int
) -> FeedflowRun:
    """Replay the training ratings, pausing to ask each user's feed at their held-out moment.

    A user's moment is the start of their held-out rating's session, laid out after their
    training sessions, so their own events all come before it.
    """
    catalogue, events = _replayed(data, split)
    starts = movielens.session_starts([*split.train, *split.held_out.values()])
    moments = {u: starts[x.row] for u, x in split.held_out.items()}
    plan = checkpoints([(e.user_id, e.ts) for e in events], moments)
    _say(
        f"Feedflow: {len(catalogue)} catalogue events, {len(events)} engagement events, "
        f"{len(plan)} checkpoints"
    )
    return replay.run_temporal(settings, catalogue, events, split.history(), plan, seed)


def build_report(
    path: Path,
    protocol: str,
    data: movielens.MovieLens,
    split: Split[movielens.Rating],
    results: Mapping[str, Metrics],
    feedflow: FeedflowRun,
    seconds: Mapping[str, float],
) -> dict[str, Any]:
    """Every figure of the run, JSON-ready."""
    return {
        "data_set": path.name,
        "ratings": len(data.ratings),
        "films": len(data.movies),
        "users": len(split.held_out),
        "train_interactions": len(split.train),
        "protocol": protocol,
        "protocol_detail": DESCRIPTION[protocol],
        "baselines_see": BASELINES_SEE[protocol],
        "models": {name: m.row() for name, m in results.items()},
        "feedflow": {
            "engagement_events": feedflow.events,
            "events_replayed": feedflow.applied,
            "dead_letters": feedflow.dead_letters,
            "fallbacks": dict(feedflow.fallbacks),
            "sources": dict(feedflow.sources),
            "source_share": source_shares(feedflow.sources),
            "behaviour": feedflow.behaviour,
            **(
                {"checkpoints": feedflow.checkpoints, "checkpoint_window_ms": CHECKPOINT_WINDOW_MS}
                if protocol == TEMPORAL
                else {}
            ),
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def table(results: Mapping[str, Metrics]) -> str:
    """The metric table, one row per model."""
    header = ["model", *(title for _, title, _ in COLUMNS)]
    rows = [
        [name, *(f"{m.row()[key]:.{places}f}" for key, _, places in COLUMNS)]
        for name, m in results.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def source_shares(sources: Mapping[str, int]) -> dict[str, float]:
    """Each candidate source's share of Feedflow's top-20 slots, largest first.

    Example:
        >>> source_shares({"popular": 1, "ann": 3})
        {'ann': 0.75, 'popular': 0.25}
    """
    slots = sum(sources.values())
    ranked = sorted(sources, key=lambda src: (-sources[src], src))
    return {src: round(sources[src] / slots, 4) for src in ranked} if slots else {}


def source_table(sources: Mapping[str, int]) -> str:
    """Feedflow's top-20 slots per candidate source (the `source` of each feed item)."""
    rows = [["source", "slots", "share"]]
    rows += [
        [src, str(sources[src]), f"{share:.4f}"] for src, share in source_shares(sources).items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2])])
        for r in rows
    ]
    return "\n".join(["Feedflow top-20 slots by source", *lines])


def facts(report: Mapping[str, Any]) -> str:
    """A few lines about the run under the tables."""
    ff = report["feedflow"]
    replay_line = (
        f"Feedflow replay: events replayed {ff['events_replayed']}, outcomes "
        f"({cell(ff['engagement_events'])}), dead letters {ff['dead_letters']}, "
        f"fallbacks ({cell(ff['fallbacks'])})"
    )
    if "checkpoints" in ff:
        replay_line += f", checkpoints {ff['checkpoints']}"
    if ff.get("behaviour"):
        b = ff["behaviour"]
        runs = f"{b['runs']} weekly runs, the last " if "runs" in b else ""
        replay_line += f"\nbehaviour space: {runs}{b['items']} items, version {b['version']}"
    return "\n".join(
        [
            f"protocol {report['protocol_detail']}",
            f"baselines fitted on: {report['baselines_see']}",
            f"users {report['users']}, films {report['films']}, "
            f"training interactions {report['train_interactions']}",
            replay_line,
            f"seconds: {cell(report['seconds'])}",
        ]
    )


def _say(line: str) -> None:
    sys.stderr.write(f"eval: {line}\n")
    sys.stderr.flush()
