"""The parity monitor on the real stack: the content, engagement and learning flows as
`feedflow flow` processes writing one lake, the serving app scoring feeds in-process and
publishing their impressions, `feedflow parity` reading it all back.

The engagement flow runs with a skew planted from outside the code: its 30-minute session
window is cut an hour off (as a cutoff taken in UTC+1 and compared with UTC stamps would
be). The monitor must see it in that feature and in no other."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from feedflow import cli
from feedflow.asgi_client import AsgiClient
from feedflow.parity import CHECKED
from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo, free_port
from kernel.settings import Settings
from operators.contracts import TOPIC_MEDIA
from operators.user_engagement import IDLE_FLUSH_S
from serving.app import create_app
from serving.runtime import build_runtime
from state.lake import Lake
from state.lake_schema import IMPRESSIONS
from state.redis_client import JOB, RedisClient, connect
from tests.integration.processes import stop
from tests.integration.test_serving_e2e import ActiveUsers, settle, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
# The engagement flow, with its session window's cutoff read an hour off.
SKEWED = (
    f"import sys, operators.user_profile as p; p.GENRE_WINDOW_MS -= {HOUR_MS}; "
    "from feedflow.cli import main; sys.exit(main(sys.argv[1:]))"
)


def start(name: str, env: dict[str, str], state: Path, *command: str) -> subprocess.Popen[bytes]:
    with (state / f"{name}.log").open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(r'^feedflow_parity_divergence\{feature="(\w+)"\} (\S+)$', text, re.M)
    return {k: float(v) for k, v in found}


def test_a_skewed_window_is_caught_in_that_feature_and_no_other(
    private_stack: StackInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": private_stack.bootstrap,
        "REDIS_URL": private_stack.redis_url,
        "FEEDFLOW_LAKE_URL": lake.root,
        "FEEDFLOW_INDEX_DIR": str(tmp_path / "index"),
        "FEEDFLOW_SNAPSHOT_INTERVAL_S": "1",
    }
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "FEEDFLOW_LAKE_URL"):
        monkeypatch.setenv(name, env[name])
    # Twenty minutes of event time ending now, as live traffic has (a backfill of hours in
    # a second would differ: idle timers run on processing time, and do not fire in it).
    sim = Simulation(SimConfig(users=1500, items=200, rate=20_000, duration_s=1, seed=9,
                               speedup=1200), now_ms=int(time.time() * 1000))  # fmt: skip
    sink = Recorded(KafkaSink(private_stack.bootstrap))
    sim.run(sink)
    sent = time.monotonic()
    client = connect(private_stack.redis_url, JOB)
    procs = []
    try:
        for name in ("content", "learning", "engagement"):
            if name == "learning":  # as in production, items are known before their views
                wait_for(lambda: all(client.exists(f"ff:item:{{{m}}}") for m in sink.media),
                         60, "the whole catalogue in Redis")  # fmt: skip
            state = tmp_path / name
            state.mkdir()
            flow = [name, "--no-recovery"]
            command = (
                [sys.executable, "-c", SKEWED, "flow", *flow] if name == "engagement"
                else [sys.executable, "-m", "feedflow.cli", "flow", *flow]
            )  # fmt: skip
            procs.append(start(name, {**env, "FEEDFLOW_STATE_DIR": str(state)}, tmp_path,
                               *command))  # fmt: skip
        # The last views close, and quiet users' records are written, on processing-time
        # timers: here, for events of minutes ago that all arrived a moment ago, in a while.
        time.sleep(max(0.0, sent + IDLE_FLUSH_S + 5 - time.monotonic()))
        features = settle(client, len(sink.users), 120)
        stable(client, "ff:{i:*")
        runtime = build_runtime(Settings(
            redis_url=private_stack.redis_url, kafka_bootstrap_servers=private_stack.bootstrap,
            index_dir=str(tmp_path / "index"), serving_refresh_ms=200,
        ))  # fmt: skip
        http = AsgiClient(create_app(runtime))
        try:
            wait_for(lambda: http.get("/readyz").status_code == 200, 30, "serving ready")
            served = 0
            for user in sorted(features)[:40]:
                r = http.get("/api/v1/content/feed", params={"user_id": user, "limit": 20})
                assert r.status_code == 200, r.text
                served += len(r.json()["items"])
            wait_for(lambda: lake.read(IMPRESSIONS).num_rows >= served, 60,
                     "served items in the lake")  # fmt: skip
        finally:
            http.close()
        # Everything this stack served (its lake holds nothing else).
        code = cli.main(["parity", "--window", "600", "--delay", "0", "--sample", "1000",
                         "--json"])  # fmt: skip
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["impressions"] == 40 and report["rows"] > 0, report
        shares = report["divergence"]
        assert set(shares) == set(CHECKED)
        assert shares["session_genre"] > 0.05, report
        others = {c: v for c, v in shares.items() if c != "session_genre"}
        assert others == dict.fromkeys(others, 0.0), report["examples"]

        # Run continuously, the monitor publishes the same finding as a metric.
        port = free_port()
        procs.append(start("parity", {**env, "FEEDFLOW_METRICS_PORT": str(port)}, tmp_path,
                           sys.executable, "-m", "feedflow.cli", "parity", "--every", "2",
                           "--window", "600", "--delay", "0"))  # fmt: skip
        wait_for(lambda: _scraped(port) and "session_genre" in scrape(port), 60,
                 "the monitor's metrics")  # fmt: skip
        assert scrape(port)["session_genre"] > 0.05
    finally:
        for proc in procs:
            stop(proc)
        client.close()


class Recorded(ActiveUsers):
    """Forwards to the broker; remembers the active users and the media ids published."""

    def __init__(self, inner: KafkaSink) -> None:
        super().__init__(inner)
        self.media = set[str]()

    def write(self, topic: str, key: str, ts: int, value: str) -> None:
        if topic == TOPIC_MEDIA and '"media_id"' in value and '"removed"' not in value:
            self.media.add(key)
        super().write(topic, key, ts, value)


def stable(client: RedisClient, pattern: str, timeout_s: float = 60) -> None:
    """Once keys match and they and their values stay as they are for 2 s."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        now = {k: client.get(k) for k in client.scan_iter(pattern, 1000)}
        if now and now == last:
            return
        last = now
        time.sleep(2.0)
    raise AssertionError(f"{pattern}: not stable within {timeout_s}s")


def _scraped(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True
