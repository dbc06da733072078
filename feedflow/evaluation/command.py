"""`feedflow eval --path DIR [--json FILE]`: Feedflow and three baselines on one offline split.

Loads a MovieLens directory, holds out each user's last rating (:mod:`.protocol`), replays the
rest through the real flows and asks the real feed API (:mod:`.replay`), scores MostPop,
ItemKNN and EASE on the same split (:mod:`.baselines`) and prints one table row per model.
Progress goes to stderr; `--json FILE` also writes every figure to FILE.
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
    LIST_LENGTH,
    POPULAR_ITEMS,
    Judge,
    Metrics,
    Split,
    leave_last_out,
    popularity,
)
from feedflow.evaluation.replay import FeedflowRun
from operators.settings import Settings

FEEDFLOW: Final = "Feedflow"
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
        help="offline evaluation: a MovieLens data set through the real flows and feed",
        description="Hold out each user's last rating, replay the rest through the content "
        "and engagement flows into a private Redis, ask the feed API of every user, and "
        "compare with MostPop, ItemKNN and EASE on the same split.",
    )
    p.add_argument("--path", required=True, type=Path, metavar="DIR", help="MovieLens directory")
    p.add_argument("--json", dest="json_file", type=Path, metavar="FILE", help="write JSON here")
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
    results: dict[str, Metrics] = {}
    seconds: dict[str, float] = {}
    for name, lists in run_baselines(split, users, seconds):
        results[name] = judge.score(lists)
    feedflow = run_feedflow(settings, data, split, users, args.seed)
    results[FEEDFLOW] = judge.score(feedflow.lists)
    seconds.update(feedflow.seconds)
    seconds["total"] = time.perf_counter() - started
    report = build_report(args.path, data, split, results, feedflow, seconds)
    sys.stdout.write(table(results) + "\n")
    sys.stdout.write(facts(report) + "\n")
    if args.json_file is not None:
        args.json_file.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def sample_users(data: movielens.MovieLens, n: int, seed: int) -> movielens.MovieLens:
    """The data set restricted to a seeded sample of `n` users (all films kept)."""
    everyone = sorted({r.user for r in data.ratings})
    chosen = set(random.Random(seed).sample(everyone, min(n, len(everyone))))
    ratings = [r for r in data.ratings if r.user in chosen]
    tags = [t for t in data.tags if t.user in chosen]
    return movielens.MovieLens(ratings, data.movies, tags)


def run_baselines(
    split: Split[movielens.Rating], users: list[str], seconds: dict[str, float]
) -> list[tuple[str, dict[str, list[str]]]]:
    """Top lists of MostPop, ItemKNN and EASE for `users`."""
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
    return out


def run_feedflow(
    settings: Settings,
    data: movielens.MovieLens,
    split: Split[movielens.Rating],
    users: list[str],
    seed: int,
) -> FeedflowRun:
    """Replay the training ratings through the flows and ask the feed of every user."""
    hidden = {(u, x.item) for u, x in split.held_out.items()}
    catalogue = movielens.catalogue(data, movielens.earliest_ms(split.train), hidden)
    events = movielens.sessions(split.train)
    _say(f"Feedflow: {len(catalogue)} catalogue events, {len(events)} engagement events")
    return replay.run(settings, catalogue, events, split.history(), users, seed)


def build_report(
    path: Path,
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
        "protocol": "leave-last-out, full ranking, training items excluded, top 20",
        "models": {name: m.row() for name, m in results.items()},
        "feedflow": {
            "engagement_events": feedflow.events,
            "dead_letters": feedflow.dead_letters,
            "fallbacks": dict(feedflow.fallbacks),
            "sources": dict(feedflow.sources),
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


def facts(report: Mapping[str, Any]) -> str:
    """A few lines about the run under the table."""
    ff = report["feedflow"]
    return "\n".join(
        [
            f"users {report['users']}, films {report['films']}, "
            f"training interactions {report['train_interactions']}",
            f"Feedflow replay: events {ff['engagement_events']}, "
            f"dead letters {ff['dead_letters']}, fallbacks {ff['fallbacks']}",
            f"Feedflow sources in the top 20: {ff['sources']}",
            f"seconds: {report['seconds']}",
        ]
    )


def _say(line: str) -> None:
    sys.stderr.write(f"eval: {line}\n")
    sys.stderr.flush()
