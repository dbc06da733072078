"""`feedflow serve --processes 2` on real processes: two replicas on one port, each with its
own index, metrics added up across them, a killed replica replaced, and SIGTERM stopping all.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from feedflow.bench.machine import children, cmdline
from feedflow.bench.serving_world import ensure_snapshot, populate, register
from feedflow.stack import free_port
from state.index_keys import IndexKeys
from state.index_replica import IndexParams
from state.redis_client import JOB, connect

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
ITEMS, USERS, SEED = 2_000, 40, 11
READER_ITEMS = re.compile(r'feedflow_index_items\{pid="(\d+)",role="reader"\} ([0-9.e+]+)')


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout_s}s")


def replica_pids(pid: int) -> set[int]:
    """The replicas the supervisor `pid` runs."""
    return {c for c in children(pid) if b"--replica" in cmdline(c)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def replicas(redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    client = connect(redis_url, JOB)
    info, _ = ensure_snapshot(
        tmp_path / "index", ITEMS, SEED, IndexParams(m=16, ef_construction=100)
    )
    register(client, IndexKeys(), info)
    populate(client, ITEMS, USERS, SEED, tmp_path / "index", info.version)
    client.close()
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "FEEDFLOW_INDEX_DIR": str(tmp_path / "index"),
           "FEEDFLOW_STATE_DIR": str(tmp_path), "FEEDFLOW_LOG_LEVEL": "WARNING"}  # fmt: skip
    log = (tmp_path / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedflow.cli", "serve", "--processes", "2", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def reader_items(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {pid: float(n) for pid, n in READER_ITEMS.findall(text)}


def test_two_replicas_share_a_port_and_every_way_of_stopping_stops_both(
    replicas: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = replicas
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 60, "ready")
    wait_for(lambda: len(replica_pids(proc.pid) & {int(p) for p in reader_items(port)}) == 2,
             60, "both replicas' indexes in the shared metrics")  # fmt: skip
    first = set(replica_pids(proc.pid))
    assert len(first) == 2 and set(reader_items(port).values()) == {ITEMS}

    # Fresh connections land on both replicas; every feed is answered.
    for n in range(40):
        r = httpx.get(f"{base}/api/v1/content/feed", params={"user_id": f"u{n}"}, timeout=5)
        assert r.status_code == 200 and len(r.json()["items"]) == 20

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(replica_pids(proc.pid) - {victim}) == 2, 30, "a replacement replica")
    wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 60, "ready")
    for n in range(10):
        r = httpx.get(f"{base}/api/v1/content/feed", params={"user_id": f"u{n}"}, timeout=5)
        assert r.status_code == 200

    now = replica_pids(proc.pid)
    proc.send_signal(signal.SIGTERM)  # what a supervisor sends
    assert proc.wait(30) == 0
    assert not any(alive(pid) for pid in now)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)
