"""`feedflow demo` end to end: a personalised sample feed, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from feedflow.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stopping(err_path: Path) -> str:
    """The demo's own account of its stop (what it printed after Ctrl-C)."""
    text = err_path.read_text(errors="replace")
    return text[text.rfind("stopping") :] if "stopping" in text else text[-4000:]


def start_demo(tmp_path: Path, *args: str, own_group: bool = False) -> subprocess.Popen[str]:
    """`feedflow demo ARGS` on a stack of its own (no inherited addresses or settings)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("FEEDFLOW_")
    }
    env["FEEDFLOW_STATE_DIR"] = str(tmp_path / "state")
    with (tmp_path / "demo.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "demo", *args, "--port", str(free_port())],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=own_group,
        )  # fmt: skip


def read_until(demo: subprocess.Popen[str], last: str, timeout_s: float) -> list[str]:
    """Its output lines up to the first matching `last` (a regex)."""
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.match(last, line):
            break
    return lines


def stopped(demo: subprocess.Popen[str], err_path: Path, after: str) -> None:
    """It exits 0 within a minute (killed, with its output closed, whatever happens)."""
    try:
        try:
            code = demo.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"demo ended with {code} after {after}:\n{_stopping(err_path)}"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()


def processes(lines: list[str], tmp_path: Path) -> list[int]:
    """The demo's components (as it announced them) and its stack's processes (the stack's
    own record, removed when it stops)."""
    children = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)", "".join(lines))]
    assert len(children) == 4
    stack = orjson.loads((tmp_path / "state" / "demo-stack" / "stack.json").read_bytes())
    return children + [p["pid"] for p in stack["processes"]]


def test_demo_prints_a_personalised_feed_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--users", "300", "--items", "1000", "--rate", "500")
    try:
        lines = read_until(demo, r"\s+10\. ", 240)  # the last line of the sample feed
        pids = processes(lines, tmp_path)
        demo.send_signal(signal.SIGINT)
    finally:
        stopped(demo, tmp_path / "demo.err", "Ctrl-C")
    out = "".join(lines)
    assert "feeds are personalised" in out, out
    assert re.search(r"feed URL: http://127\.0\.0\.1:\d+/api/v1/content/feed\?user_id=", out)
    feed = [line for line in lines if re.match(r"\s+\d+\. ", line)]
    assert len(feed) == 10 and any("because you watched" in line for line in feed), out
    assert not [pid for pid in pids if alive(pid)]


def test_sigterm_to_its_process_group_then_sighup_still_stops_everything(
    tmp_path: Path,
) -> None:
    # What a supervisor (or `kill -TERM` of `make demo`'s group) does, then the terminal going
    # away while the demo is stopping.
    demo = start_demo(tmp_path, "--users", "100", "--items", "300", "--rate", "200",
                      own_group=True)  # fmt: skip
    try:
        lines = read_until(demo, r"Ctrl-C stops everything", 120)
        pids = processes(lines, tmp_path)
        os.killpg(demo.pid, signal.SIGTERM)
        os.killpg(demo.pid, signal.SIGHUP)  # and another while it stops
    finally:
        stopped(demo, tmp_path / "demo.err", "SIGTERM")
    assert not [pid for pid in pids if alive(pid)], _stopping(tmp_path / "demo.err")
    assert "already stopping: SIG" in (tmp_path / "demo.err").read_text()
