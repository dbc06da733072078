"""Weekly weights end to end on a real Redis: `feedflow weights run` on a week of events, the
serving app in-process reading the active version, `feedflow weights rollback`, a run that
crashes mid-write, and cold-start users served from the cohort model.

The world is the serving benchmark's (an index snapshot of 2,000 items, users shaped like the
flows' records, item stats and boards) in a private redis-server; the weeks are synthetic
views of its items, so each test knows what the weights should say.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

import feedflow.weights_job
import state.weights_registry
from feedflow import cli
from feedflow.asgi_client import AsgiClient
from feedflow.bench.serving_world import (
    PrivateRedis,
    ensure_snapshot,
    media_id,
    populate,
    register,
)
from feedflow.stack import LOOPBACK, free_port
from feedflow.week_events import Counts, apply_events, file_payloads
from feedflow.weights_job import run_week
from kernel.settings import Settings
from operators.cold_start import CohortModel
from operators.content import ItemRecord
from operators.contracts import ErasureRequest
from operators.erasure import Tombstones
from operators.item_info import no_items
from operators.user_features import UserFeatures, decode_user_features, encode_user_features
from operators.week_aggregate import WeekAggregator
from operators.weekly_weights import week_seed, week_span
from serving.app import create_app
from serving.runtime import Runtime, build_runtime
from state.feature_store import USER, feature_key, stamp
from state.index_keys import IndexKeys
from state.index_replica import IndexParams
from state.item_lookup import job_lookup
from state.item_store import ItemStore
from state.weights_registry import FAILED, WeightsRegistry, WeightsStateError

pytestmark = [pytest.mark.integration]
ITEMS, USERS, SEED = 2_000, 40, 3
WEEKS = ("2024-W10", "2024-W11")
COLD = "cold-listener"


@dataclass
class World:
    client: redis.Redis
    runtime: Runtime
    http: AsgiClient
    registry: WeightsRegistry
    records: dict[str, ItemRecord]
    user: str  # a warm user whose two weeks favour two other categories
    x: str  # the category of the first week
    y: str  # the category of the second
    cold_items: list[str]  # what the cold user's cohort listened to
    versions: list[str]
    pages: dict[str, list[str]]

    def feed(self, user: str, **params: Any) -> dict[str, Any]:
        self.runtime.service._rng = random.Random(1)  # the same exploration draw each time
        r = self.http.get("/api/v1/content/feed", params={"user_id": user, **params})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def page(self, user: str) -> list[str]:
        return [i["media_id"] for i in self.feed(user, limit=20)["items"]]


def views(user: str, items: list[ItemRecord], start_ms: int, **context: str) -> list[bytes]:
    """Completed views of `items`, one after the other (started at 0, completed at the end)."""
    out, ts = [], start_ms + 3_600_000
    for n, item in enumerate(items):
        common = {"user_id": user, "media_id": item.media_id, "content_type": item.content_type,
                  **context}  # fmt: skip
        end = ts + int(item.duration_s * 1000)
        out.append(orjson.dumps({"event_id": f"{user}-{n}-s", "event_type": "media_started",
                                 "ts": ts, "position_s": 0.0, **common}))  # fmt: skip
        out.append(orjson.dumps({"event_id": f"{user}-{n}-c", "event_type": "media_completed",
                                 "ts": end, "position_s": item.duration_s, **common}))  # fmt: skip
        ts = end + 60_000
    return out


def week_file(world: World, tmp_path: Path, week: str, prefix: str, users: int) -> Path:
    """A week of five completed views each for `users` users `<prefix><n>`, as a file."""
    path = tmp_path / "week.jsonl"
    start, _ = week_span(week)
    records = sorted(world.records.values(), key=lambda r: r.media_id)
    path.write_bytes(b"\n".join(
        line for n in range(users)
        for line in views(f"{prefix}{n}", records[n * 5 : n * 5 + 5], start)
    ))  # fmt: skip
    return path


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def weights_cli(*argv: str) -> int:
    return cli.main(["weights", *argv, "--json"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("weekly-serving")
    with PrivateRedis(root / "redis") as private, pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_URL", private.url)
        client = redis.Redis.from_url(private.url)
        info, _ = ensure_snapshot(
            root / "index", ITEMS, SEED, IndexParams(m=16, ef_construction=100)
        )
        register(client, IndexKeys(), info)
        users = populate(client, ITEMS, USERS, SEED, root / "index", info.version)
        found = ItemStore(client, IndexKeys()).features([media_id(i) for i in range(ITEMS)])
        records = {f.record.media_id: f.record for f in found if f is not None}
        user = users[0]
        raw = client.get(feature_key(USER, user))
        assert isinstance(raw, bytes)
        mine = set(decode_user_features(raw[8:]).top_categories)
        others = sorted({r.category for r in records.values()} - mine)
        x, y = others[0], others[1]

        def of(category: str, kind: str | None = None, n: int = 30) -> list[ItemRecord]:
            chosen = [r for r in records.values() if r.category == category
                      and (kind is None or r.content_type == kind)]  # fmt: skip
            return sorted(chosen, key=lambda r: r.media_id)[:n]

        cold_items = of(y, "AUDIO", 12)
        for week, favourite in zip(WEEKS, (x, y), strict=True):
            start, _ = week_span(week)
            lines = views(user, of(favourite), start, language="en", device="tv")
            for n in range(6):  # a cohort of Spanish phone listeners, one category's audio
                lines += views(f"es-{n}", cold_items, start, language="es", device="phone")
            (root / f"{week}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        versions = []
        for week in WEEKS:
            assert weights_cli("run", "--week", week, "--input", str(root / f"{week}.jsonl")) == 0
            versions.append(WeightsRegistry(client, 86_400).active() or "")
        cold = UserFeatures(ts=int(time.time() * 1000), engagements=2, language="es")
        client.set(feature_key(USER, COLD), stamp(cold.ts, encode_user_features(cold)))
        settings = Settings(redis_url=private.url, index_dir=str(root / "index"),
                            serving_refresh_ms=100, redis_timeout_ms=500)  # fmt: skip
        runtime = build_runtime(settings)
        with AsgiClient(create_app(runtime)) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 30, "serving ready")
            registry = WeightsRegistry(client, settings.weights_ttl_days * 86_400)
            yield World(client, runtime, http, registry, records, user, x, y,
                        [r.media_id for r in cold_items], versions, {})  # fmt: skip
        client.close()


def test_the_weeks_weights_favour_what_the_user_watched_that_week(world: World) -> None:
    first, second = world.versions
    assert world.registry.active() == second
    for version, favourite in ((first, world.x), (second, world.y)):
        weights = world.registry.user_weights(world.user, version)
        assert weights is not None and weights.categories[0][0] == favourite
        assert weights.mass > 20  # more than a dozen completed views
    status = world.registry.status()
    assert [v["version"] for v in status["versions"]] == [second, first]
    assert all(v["state"] == "complete" and v["users"] == 7 for v in status["versions"])


def test_rollback_restores_the_previous_versions_feed_without_a_restart(world: World) -> None:
    first, second = world.versions
    wait_for(lambda: world.runtime.service.weekly.version == second, 5, "serving on v2")
    on_second = world.page(world.user)
    assert weights_cli("publish", first) == 0
    wait_for(lambda: world.runtime.service.weekly.version == first, 5, "serving on v1")
    on_first = world.page(world.user)
    assert on_first != on_second  # same user, same draw: only the weights differ
    assert weights_cli("publish", second) == 0
    wait_for(lambda: world.page(world.user) == on_second, 5, "feed of v2 again")
    assert weights_cli("rollback") == 0
    assert world.registry.active() == first
    wait_for(lambda: world.page(world.user) == on_first, 5, "rollback reaches the feed")
    # What serving follows is when that version was computed: a stale week shows (and alerts).
    completed = world.registry.get(first).completed_ms / 1000
    assert REGISTRY.get_sample_value(
        "feedflow_weights_active_completed_timestamp_seconds"
    ) == pytest.approx(completed)
    assert world.feed(world.user)["fallback"] is None
    assert weights_cli("rollback") != 0  # nothing older than the first version
    assert weights_cli("publish", second) == 0


def test_a_run_that_crashes_mid_write_leaves_the_active_version_untouched(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    active = world.registry.active()
    assert active is not None
    wait_for(lambda: world.runtime.service.weekly.version == active, 5, "serving on active")
    before = world.page(world.user)
    written = []

    def crashing(*args: Any) -> Iterator[Any]:
        for n, pair in enumerate(real(*args)):
            if n == 3:
                raise RuntimeError("disk on fire")
            written.append(pair[0])
            yield pair

    real = feedflow.weights_job._shrunk
    monkeypatch.setattr(feedflow.weights_job, "_shrunk", crashing)
    monkeypatch.setattr(state.weights_registry, "BATCH", 2)  # so part of it reaches Redis
    path = week_file(world, tmp_path, "2024-W12", "u", 8)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_week(world.registry, Settings(), "2024-W12", file_payloads(path), no_items, "test")
    failed = max(world.registry.manifests().values(), key=lambda m: m.seq)
    assert failed.state == FAILED and "disk on fire" in failed.error
    stored = [world.registry.user_weights(u, failed.version) for u in written]
    assert sum(w is not None for w in stored) == 2  # half-written when it crashed
    assert world.registry.active() == active
    with pytest.raises(WeightsStateError, match="failed"):
        world.registry.publish(failed.version)
    time.sleep(0.3)  # a few refresh rounds: nothing may have moved
    assert world.runtime.service.weekly.version == active
    assert world.page(world.user) == before


def test_cold_start_users_get_the_cohort_models_items(world: World) -> None:
    body = world.feed(COLD, content_type="AUDIO", device="phone")
    assert body["fallback"] == "cold_start"
    cohort = [i["media_id"] for i in body["items"] if i["source"] == "cohort"]
    assert len(cohort) >= 6 and len(set(cohort) & set(world.cold_items)) >= 5
    assert sum(i["media_id"] in world.cold_items for i in body["items"][:10]) >= 6
    lists = world.registry.cohort_lists(world.registry.active() or "")
    assert len(set(lists["es|AUDIO|phone"][:12]) & set(world.cold_items)) >= 8
    stranger = world.feed("nobody-at-all", device="phone")  # no language: a general list
    assert stranger["fallback"] == "cold_start" and len(stranger["items"]) == 20


def test_a_user_forgotten_while_the_run_reads_the_week_is_left_out(
    world: World, tmp_path: Path
) -> None:
    """The erasures are read again just before the users are written: a user erased after
    the run started gets no weights in the new version; the others do."""
    path = week_file(world, tmp_path, "2024-W13", "w", 4)
    late = Tombstones([ErasureRequest(user_id="w1", ts=int(time.time() * 1000), request_id="r")])
    result = run_week(world.registry, Settings(), "2024-W13", file_payloads(path), no_items,
                      "test", publish=False, erased=Tombstones(), recheck=lambda: late)  # fmt: skip
    stored = {u: world.registry.user_weights(u, result.version) for u in ("w0", "w1", "w2")}
    assert stored["w1"] is None and stored["w0"] is not None and stored["w2"] is not None


def mixed_week(world: World, path: Path, week: str, users: int) -> Path:
    """A week of `users` users, each with views and likes of random items, in a few
    languages and on a few devices."""
    start, _ = week_span(week)
    records = sorted(world.records.values(), key=lambda r: r.media_id)
    lines: list[bytes] = []
    for n in range(users):
        rng = random.Random(n)
        user, chosen = f"mix-{n}", rng.sample(records, rng.randint(1, 9))
        context = {"language": rng.choice(["en", "es", "de"]),
                   "device": rng.choice(["tv", "phone"])}  # fmt: skip
        day = start + rng.randrange(6) * 86_400_000
        lines += views(user, chosen, day, **context)
        lines += [orjson.dumps({"event_id": f"{user}-like-{r.media_id}", "ts": day + 1_000,
                                "event_type": "media_liked", "user_id": user,
                                "media_id": r.media_id, **context})
                  for r in chosen[:2]]  # fmt: skip
    lines.append(b'{"not": "an event"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_run_as_a_two_process_bytewax_cluster_writes_what_a_single_run_writes(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    week, users = "2024-W20", 120
    path = str(mixed_week(world, tmp_path / "mixed.jsonl", week, users))
    capsys.readouterr()
    assert weights_cli("run", "--week", week, "--input", path, "--no-publish") == 0
    single = orjson.loads(capsys.readouterr().out)
    assert weights_cli("run", "--week", week, "--input", path, "--no-publish",
                       "--processes", "2") == 0  # fmt: skip
    clustered = orjson.loads(capsys.readouterr().out)

    counts = ("users", "events", "invalid", "erased", "late", "outside_week", "cohorts")
    assert {k: clustered[k] for k in counts} == {k: single[k] for k in counts}
    assert single["users"] == users and single["invalid"] == 1
    a, b = (world.registry.get(r["version"]) for r in (single, clustered))
    assert b.state == "complete" and a.prior is not None and b.prior is not None
    assert b.prior.categories == pytest.approx(a.prior.categories)
    assert (b.prior.video, b.prior.explore, b.prior.fresh) == pytest.approx(
        (a.prior.video, a.prior.explore, a.prior.fresh)
    )
    for n in range(users):
        mine, theirs = (world.registry.user_weights(f"mix-{n}", m.version) for m in (a, b))
        assert mine is not None and theirs is not None
        assert dict(theirs.categories) == pytest.approx(dict(mine.categories))
        assert (theirs.video, theirs.explore, theirs.fresh, theirs.mass) == pytest.approx(
            (mine.video, mine.explore, mine.fresh, mine.mass)
        )
    # The lists come from a model seeded by the week: the single pass's tally, fitted with
    # that seed, gives the lists of both runs.
    start, end = week_span(week)
    tally = WeekAggregator(Settings(), job_lookup(world.client), start, end)
    apply_events(file_payloads(Path(path)), Counts(), tally.add)
    tally.finish()
    expected = CohortModel(seed=week_seed(week)).fit(tally.cohorts).top_lists()
    assert world.registry.cohort_lists(b.version) == expected
    assert world.registry.cohort_lists(a.version) == expected


def members(version: str, *extra: str) -> list[subprocess.Popen[bytes]]:
    """Two `weights member` processes, as a scheduler would start them on two hosts."""
    addresses = ";".join(f"{LOOPBACK}:{free_port()}" for _ in range(2))
    argv = [sys.executable, "-m", "feedflow.cli", "weights", "member", version, *extra]
    return [subprocess.Popen([*argv, "-i", str(i), "-a", addresses], stdout=2)
            for i in range(2)]  # fmt: skip


def test_a_run_across_hosts_is_begin_members_complete_and_writes_what_one_run_writes(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    week, users = "2024-W22", 60
    path = str(mixed_week(world, tmp_path / "mixed.jsonl", week, users))
    capsys.readouterr()
    assert weights_cli("run", "--week", week, "--input", path, "--no-publish") == 0
    single = orjson.loads(capsys.readouterr().out)
    before = world.registry.active()
    assert weights_cli("begin", "--week", week, "--input", path) == 0
    version = orjson.loads(capsys.readouterr().out)["version"]
    assert world.registry.get(version).state == "writing"
    assert [m.wait(120) for m in members(version, "--input", path)] == [0, 0]
    assert world.registry.active() == before  # nothing moves before `complete`
    assert weights_cli("complete", version) == 0
    done = orjson.loads(capsys.readouterr().out)
    counts = ("users", "events", "invalid", "erased", "late", "outside_week", "cohorts")
    assert {k: done[k] for k in counts} == {k: single[k] for k in counts}
    assert done["published"] and world.registry.active() == version
    for n in range(users):
        mine = world.registry.user_weights(f"mix-{n}", single["version"])
        theirs = world.registry.user_weights(f"mix-{n}", version)
        assert mine is not None and theirs is not None
        assert dict(theirs.categories) == pytest.approx(dict(mine.categories))
    assert weights_cli("complete", version) == 2  # once only
    if before is not None:  # the tests after this one serve the version they published
        world.registry.publish(before)


def test_a_run_across_hosts_whose_member_failed_is_aborted_and_never_published(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.registry.active()
    assert weights_cli("begin", "--week", "2024-W23") == 0
    version = orjson.loads(capsys.readouterr().out)["version"]
    missing = str(tmp_path / "no-such-week.jsonl")
    assert all(code != 0 for code in (m.wait(120) for m in members(version, "--input", missing)))
    assert weights_cli("abort", version) == 0
    assert world.registry.get(version).state == FAILED
    assert weights_cli("complete", version) == 2 and weights_cli("publish", version) == 2
    assert weights_cli("member", version, "--input", missing) == 2  # refused before reading
    assert world.registry.active() == before


def test_a_clustered_run_whose_member_fails_is_marked_failed(world: World, tmp_path: Path) -> None:
    before = world.registry.active()
    missing = str(tmp_path / "no-such-week.jsonl")
    assert weights_cli("run", "--week", "2024-W21", "--input", missing, "--processes", "2") == 2
    failed = max(world.registry.manifests().values(), key=lambda m: m.seq)
    assert failed.week == "2024-W21" and failed.state == FAILED and "member" in failed.error
    assert world.registry.active() == before
