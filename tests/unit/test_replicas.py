"""The process supervisor behind `serve --processes` and `flow --processes`, on real (tiny)
processes: a replica that dies is replaced alone; a cluster member that dies restarts all."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from feedflow.replicas import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _kill_one_and_watch(sup: Supervisor, out: dict[str, list[int]]) -> None:
    """From a helper thread: kill member 1, record the pids before and after, then stop."""
    try:
        _until(lambda: len(sup.members) == 2)
        out["before"] = [m.proc.pid for m in sup.members]
        os.kill(out["before"][1], signal.SIGKILL)
        _until(lambda: [m.proc.pid for m in sup.members][1] != out["before"][1])
        _until(lambda: all(m.proc.poll() is None for m in sup.members))
        out["after"] = [m.proc.pid for m in sup.members]
    finally:
        sup.stopping = True


def _supervise(unit: bool) -> tuple[dict[str, list[int]], Supervisor]:
    calls: list[int] = []

    def argvs() -> list[list[str]]:
        calls.append(1)
        return [SLEEPER, SLEEPER]

    sup = Supervisor(argvs, grace_s=5, unit=unit)
    out: dict[str, list[int]] = {}
    watcher = threading.Thread(target=_kill_one_and_watch, args=(sup, out))
    watcher.start()
    assert sup.run(poll_s=0.05) == 0
    watcher.join()
    assert all(m.proc.poll() is not None for m in sup.members), "a member outlived run()"
    return out, sup


def test_a_dead_replica_is_replaced_and_the_others_keep_running() -> None:
    out, sup = _supervise(unit=False)
    assert out["after"][0] == out["before"][0]
    assert out["after"][1] != out["before"][1]
    assert sup.replaced == 1


def test_a_dead_cluster_member_restarts_every_member() -> None:
    out, sup = _supervise(unit=True)
    assert set(out["after"]).isdisjoint(out["before"])
    assert sup.replaced == 2
