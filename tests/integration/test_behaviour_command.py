"""The behaviour space end to end on a real Redis and snapshot directory: `feedflow behaviour
run` on a file of engagement events, a serving holder loading the active version, a second
version swapped in whole, `feedflow behaviour publish` of the older one, an unreadable
version kept out.

The events plant two audiences: news fans watch news items, music fans music items; each
user completes a random half of their group's items, so the factorisation has to learn the
groups from who watched what (the ids say nothing to it).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import orjson
import pytest
import redis

from feedflow import cli
from feedflow.evaluation.replay import WEEK_MS, WeeklyBehaviour
from kernel.settings import Settings
from operators.contracts import EngagementEvent, decode_engagement
from operators.dedup import id_hash64
from serving.behaviour import BehaviourHolder
from state.behaviour_store import BehaviourStore
from state.snapshots import DirSnapshotStore

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def write_events(path: Path, seed: int, users_per_group: int = 25) -> None:
    rng = random.Random(seed)
    lines = []
    for group in ("news", "music"):
        items = [f"{group}-{n}" for n in range(10)]
        for u in range(users_per_group):
            user, ts = f"{group}-fan{u}", T0
            for n, item in enumerate(rng.sample(items, 5)):
                for kind, pos in (("media_started", 0.0), ("media_completed", 120.0)):
                    event = {
                        "event_id": f"{user}-{n}-{kind}",
                        "event_type": kind,
                        "user_id": user,
                        "media_id": item,
                        "ts": ts + int(pos * 1000),
                        "position_s": pos,
                    }
                    lines.append(orjson.dumps(event))
                ts += 600_000
    lines.append(b'{"event_type": "not json enough"')  # counted, never fatal
    path.write_bytes(b"\n".join(lines) + b"\n")


def behaviour_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main(["behaviour", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_a_run_is_learned_published_and_followed_by_serving(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FEEDFLOW_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("FEEDFLOW_BEHAVIOUR_DIM", "2")  # rank well below the 20 items
    client = redis.Redis.from_url(redis_url)
    holder = BehaviourHolder(BehaviourStore(client, DirSnapshotStore(tmp_path / "index")))
    holder.refresh()
    assert holder.space is None  # nothing published yet: the source is off
    assert behaviour_cli(capsys, "status")[0] == 3

    first, second = tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"
    write_events(first, seed=1)
    code, run = behaviour_cli(capsys, "run", "--input", str(first))
    assert code == 0 and run["published"] and run["invalid"] == 1
    assert run["items"] == 20 and run["users"] == 50
    holder.refresh()
    space = holder.space
    assert space is not None and space.version == run["version"]

    # A news fan's point is nearer every other news item than any music item.
    match = space.match([id_hash64("news-0"), id_hash64("news-1")], k=20)
    assert match is not None
    ranked = [m for m, _ in match.hits]
    assert all(m.startswith("news-") for m in ranked[:8])

    # A second version is swapped in whole; publishing the first moves the pointer back.
    write_events(second, seed=2)
    code, run2 = behaviour_cli(capsys, "run", "--input", str(second))
    assert code == 0 and run2["version"] != run["version"]
    holder.refresh()
    assert holder.version == run2["version"] and holder.space is not space
    code, moved = behaviour_cli(capsys, "publish", run["version"])
    assert code == 0 and moved == {"active": run["version"], "previous": run2["version"]}
    holder.refresh()
    assert holder.version == run["version"]
    code, status = behaviour_cli(capsys, "status")
    states = {v["version"]: v["state"] for v in status["versions"]}
    assert states == {run["version"]: "active", run2["version"]: "retired"}

    # A version whose snapshot cannot be read is kept out; the loaded one keeps serving.
    code, run3 = behaviour_cli(capsys, "run", "--input", str(second), "--no-publish")
    assert code == 0 and not run3["published"]
    shutil.rmtree(tmp_path / "index" / run3["version"])
    assert behaviour_cli(capsys, "publish", run3["version"])[0] == 2  # refused, loudly
    (tmp_path / "index" / run3["version"]).mkdir()
    (tmp_path / "index" / run3["version"] / "CURRENT").write_text("garbage")
    client.set("ff:beh:{idx}:active", run3["version"])  # as if another run had moved it
    holder.refresh()
    assert holder.version == run["version"]
    client.close()


def test_the_temporal_replay_runs_the_job_weekly_on_the_past_only(
    redis_url: str, tmp_path: Path
) -> None:
    """`WeeklyBehaviour` (the eval's temporal protocol): a version at the first checkpoint,
    none again within the week, a new one after it, each from the events before it."""
    path = tmp_path / "events.jsonl"
    write_events(path, seed=3)
    events = [e for line in path.read_bytes().splitlines()
              if isinstance(e := decode_engagement(line), EngagementEvent)]  # fmt: skip
    events.sort(key=lambda e: e.ts)
    settings = Settings(redis_url=redis_url, index_dir=str(tmp_path / "index"), behaviour_dim=2)
    weekly = WeeklyBehaviour(settings)
    half = len(events) // 2
    at = events[half].ts
    weekly.advance(events[:half], at)
    first = weekly.summary()
    assert first["runs"] == 1 and 0 < first["items"] <= 20
    weekly.advance(events[half:], at + WEEK_MS - 1)  # within the week: no run
    assert weekly.summary() == first
    weekly.advance([], at + WEEK_MS)
    second = weekly.summary()
    assert second["runs"] == 2 and second["version"] != first["version"]
    assert second["items"] >= first["items"]  # the later run saw every event
    weekly.close()
