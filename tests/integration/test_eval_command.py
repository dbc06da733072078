"""`feedflow eval` end to end on a generated MovieLens directory with planted genre tastes.

The whole production path runs: the content and engagement flows replay the ratings into a
private redis-server, and the feed API answers every user through the ASGI app; under the
temporal protocol the engagement flow pauses at each user's held-out moment and resumes.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from feedflow.cli import main
from feedflow.evaluation import movielens, replay
from feedflow.evaluation.protocol import Checkpoint
from kernel.settings import Settings

pytestmark = pytest.mark.integration
GENRES = ("Action", "Comedy", "Documentary", "Horror", "Romance")
PER_GENRE = 10
USERS = 40
TEMPORAL_USERS = 12  # a checkpoint each: a flow execution and a serving start-up


def planted_data_set(root: Path, seed: int = 7, users: int = USERS) -> Path:
    """50 films, 10 per genre; user n loves genre n % 5: six high ratings of it, three low
    ones elsewhere, and their last rating (the held-out one) is of their genre too."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    movies = ["movieId,title,genres"]
    by_genre: dict[str, list[int]] = {}
    for n in range(PER_GENRE * len(GENRES)):
        genre = GENRES[n % len(GENRES)]
        by_genre.setdefault(genre, []).append(n + 1)
        movies.append(f"{n + 1},Picture {n + 1} ({1980 + n % 30}),{genre}")
    ratings = ["userId,movieId,rating,timestamp"]
    for user in range(1, users + 1):
        loved = GENRES[user % len(GENRES)]
        mine = rng.sample(by_genre[loved], 7)
        others = rng.sample([m for g, ms in by_genre.items() if g != loved for m in ms], 3)
        early = [(m, rng.choice((4.0, 4.5, 5.0))) for m in mine[:6]]
        early += [(m, rng.choice((1.0, 2.0))) for m in others]
        rng.shuffle(early)
        ts = 1_500_000_000 + user * 7_200
        for k, (movie, rating) in enumerate([*early, (mine[6], 5.0)]):
            ratings.append(f"{user},{movie},{rating},{ts + 60 * k}")
    (root / "movies.csv").write_text("\n".join(movies) + "\n")
    (root / "ratings.csv").write_text("\n".join(ratings) + "\n")
    return root


def test_eval_prints_every_model_and_feedflow_finds_the_planted_tastes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = planted_data_set(tmp_path / "ml")
    report_file = tmp_path / "eval.json"
    assert main(["eval", "--path", str(data), "--json", str(report_file)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["model", "HR@10", "NDCG@10"]
    assert [line.split()[0] for line in printed[1:5]] == ["MostPop", "ItemKNN", "EASE", "Feedflow"]
    report = orjson.loads(report_file.read_bytes())
    assert report["users"] == USERS
    feedflow = report["models"]["Feedflow"]
    for key in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage", "popular_share"):
        assert 0.0 <= feedflow[key] <= 1.0, key
    assert feedflow["short_lists"] == 0
    assert report["feedflow"]["dead_letters"] == 0
    assert report["feedflow"]["engagement_events"]["late"] == 0
    # A user has 41 unseen films, 4 of their genre plus the held-out one: random finds it in
    # the top 10 for about a quarter of users; a feed that learned the taste, for most.
    assert feedflow["hr@10"] >= 0.6
    assert feedflow["hr@10"] > report["models"]["MostPop"]["hr@10"]


def test_eval_temporal_asks_each_user_at_their_moment_and_reports_what_baselines_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = planted_data_set(tmp_path / "ml", users=TEMPORAL_USERS)
    report_file = tmp_path / "eval.json"
    argv = ["eval", "--path", str(data), "--protocol", "temporal", "--json", str(report_file)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = [line.split()[0] for line in printed.splitlines()[1:6]]
    assert rows == ["MostPop", "MostPop-past", "ItemKNN", "EASE", "Feedflow"]
    assert "Feedflow top-20 slots by source" in printed
    report = orjson.loads(report_file.read_bytes())
    assert report["protocol"] == "temporal"
    assert "future" in report["baselines_see"]
    feedflow = report["feedflow"]
    # One pause per user (their moments are hours apart); every training event comes before
    # the last user's moment, so all are replayed, each once, none cut by a pause.
    assert feedflow["checkpoints"] == TEMPORAL_USERS
    assert feedflow["events_replayed"] == feedflow["engagement_events"]["ok"]
    assert feedflow["engagement_events"]["late"] == feedflow["engagement_events"]["duplicate"] == 0
    assert feedflow["dead_letters"] == 0
    assert sum(feedflow["sources"].values()) == TEMPORAL_USERS * 20
    assert sum(feedflow["source_share"].values()) == pytest.approx(1.0, abs=1e-3)
    # The first users are asked with little but their own history: the taste still shows.
    assert report["models"]["Feedflow"]["hr@10"] >= 0.5
    assert report["models"]["Feedflow"]["short_lists"] == 0


def test_a_temporal_replay_pauses_before_later_events_and_resumes_with_the_state(
    tmp_path: Path,
) -> None:
    # u1 rates three films early and three late, at 3 (a partial view, no feedback: one
    # engagement each); u2 rates six in between. Fewer than 5 engagements is a cold start.
    # Asked at a pause after u1's first three, both are cold: u1 has 3, and u2's six come
    # after the pause. Asked again at the end, both are personalised, which u1 is only if
    # the resumed flow kept the state of its first three.
    t0 = 1_500_000_000
    rows = [(1, film, 3.0, t0 + 60 * film) for film in (1, 2, 3)]
    rows += [(2, film, 3.0, t0 + 3_600 + 60 * film) for film in range(4, 10)]
    rows += [(1, film, 3.0, t0 + 7_200 + 60 * film) for film in (10, 11, 12)]
    ratings = [
        movielens.Rating(f"u{u}", f"m{film}", value, ts, n)
        for n, (u, film, value, ts) in enumerate(rows)
    ]
    films = {
        f"m{n}": movielens.Movie(f"m{n}", f"Picture {n} (1990)", (GENRES[n % 5],))
        for n in range(1, 16)
    }
    data = movielens.MovieLens(ratings, films, [])
    events = movielens.sessions(ratings)
    pause = (t0 + 1_800) * 1000
    applied = sum(1 for e in events if e.ts < pause)
    plan = [
        Checkpoint(pause, applied, ("u1", "u2")),
        Checkpoint(events[-1].ts + 1, len(events), ("u1", "u2")),
    ]
    catalogue = movielens.catalogue(data, movielens.earliest_ms(ratings))
    run = replay.run_temporal(Settings(), catalogue, events, {}, plan)
    assert run.fallbacks == {"cold_start": 2, "none": 2}
    assert run.applied == len(events) and run.checkpoints == 2
    assert run.events == {"ok": len(events), "late": 0, "duplicate": 0, "invalid": 0}
