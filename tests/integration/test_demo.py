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


def test_demo_prints_a_personalised_feed_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("FEEDFLOW_")
    }
    env["FEEDFLOW_STATE_DIR"] = str(tmp_path / "state")  # fmt: skip
    err_path = tmp_path / "demo.err"
    with err_path.open("w") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "demo", "--users", "300", "--items", "1000",
             "--rate", "500", "--port", str(free_port())],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if re.match(r"\s+10\. ", line):  # the last line of the sample feed
                break
        stack = orjson.loads((tmp_path / "state" / "demo-stack" / "stack.json").read_bytes())
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"demo ended with {code} after Ctrl-C:\n{_stopping(err_path)}"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
    out = "".join(lines)
    assert "feeds are personalised" in out, out
    assert re.search(r"feed URL: http://127\.0\.0\.1:\d+/api/v1/content/feed\?user_id=", out)
    feed = [line for line in lines if re.match(r"\s+\d+\. ", line)]
    assert len(feed) == 10 and any("because you watched" in line for line in feed), out
    children = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)", out)]
    assert len(children) == 4
    owned = [p["pid"] for p in stack["processes"]]
    assert not [pid for pid in children + owned if alive(pid)]


def test_sigterm_to_its_process_group_then_sighup_still_stops_everything(
    tmp_path: Path,
) -> None:
    # What a supervisor (or `kill -TERM` of `make demo`'s group) does, then the terminal going
    # away while the demo is stopping.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS") and not k.startswith("FEEDFLOW_")
    }
    env["FEEDFLOW_STATE_DIR"] = str(tmp_path / "state")
    err_path = tmp_path / "demo.err"
    with err_path.open("w") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "demo", "--users", "100", "--items", "300",
             "--rate", "200", "--port", str(free_port())],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True,
        )  # fmt: skip
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        stack = orjson.loads((tmp_path / "state" / "demo-stack" / "stack.json").read_bytes())
        os.killpg(demo.pid, signal.SIGTERM)
        os.killpg(demo.pid, signal.SIGHUP)  # and another while it stops
        try:
            code = demo.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"demo ended with {code} after SIGTERM:\n{_stopping(err_path)}"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
    children = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)", "".join(lines))]
    assert len(children) == 4
    owned = [p["pid"] for p in stack["processes"]]
    assert not [pid for pid in children + owned if alive(pid)], _stopping(err_path)
    assert "already stopping: SIG" in err_path.read_text()
