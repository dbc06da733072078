"""`feedflow demo` end to end: a personalised sample feed, the explorer page in a real browser,
then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from feedflow.stack import free_port
from tests.integration.explore_page import explore_in_browser

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


@dataclass
class Demo:
    """A running `feedflow demo`: its process, what it printed up to its sample feed."""

    proc: subprocess.Popen[str]
    lines: list[str]
    tmp: Path

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def printed(self, pattern: str) -> str:
        found = re.search(pattern, self.out)
        assert found, self.out
        return found.group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for this module's tests, up to its sample feed (the last test stops it)."""
    tmp = tmp_path_factory.mktemp("demo")
    proc = start_demo(tmp, "--users", "300", "--items", "1000", "--rate", "500")
    try:
        lines = read_until(proc, r"explore this user's feed", 240)  # after the sample feed
        yield Demo(proc, lines, tmp)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stopped(proc, tmp / "demo.err", "Ctrl-C")


def test_demo_prints_a_personalised_feed_and_the_explorer_address(demo: Demo) -> None:
    assert "feeds are personalised" in demo.out, demo.out
    assert re.search(r"feed URL: http://127\.0\.0\.1:\d+/api/v1/content/feed\?user_id=", demo.out)
    feed = [line for line in demo.lines if re.match(r"\s+\d+\. ", line)]
    assert len(feed) == 10 and any("because you watched" in line for line in feed), demo.out
    page = demo.printed(r"explorer \(feeds, features, items, trending\): (http://\S+/explore)\n")
    with httpx.Client() as http:
        r = http.get(page)
    assert r.status_code == 200 and "<title>Feedflow explorer</title>" in r.text


def test_the_explorer_in_a_real_browser(demo: Demo) -> None:
    page = demo.printed(r"explore this user's feed, features and items: (http://\S+)\n")
    bootstrap = demo.printed(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)\n")
    user = page.split("#user=", 1)[1]
    explore_in_browser(page, user, bootstrap)


def test_ctrl_c_stops_everything(demo: Demo) -> None:
    pids = processes(demo.lines, demo.tmp)
    demo.proc.send_signal(signal.SIGINT)
    stopped(demo.proc, demo.tmp / "demo.err", "Ctrl-C")
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
