"""`feedflow demo`: the whole system at once on the embedded default; Ctrl-C stops it all.

It starts the local stack, then every component as a child process of its own (the content
and engagement flows, the serving process, the simulator), waits until a simulated user's
feed is personalised, prints the feed URL and that feed with its reasons, and the feed
explorer's address (`/explore`: serving runs with it on), and on Ctrl-C (or
`--duration`) stops the children and then the stack, leaving no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from feedflow.demo_feed import DEMO_WAIT_S, show_sample_feed
from feedflow.stack import LocalStack, StackInfo, free_port
from kernel.settings import Settings
from operators.ab import Assigner
from state.ab_config import load_config

# Added to feedflow.output.COMMON_EXIT_CODES in `--help` (None: never returned).
EXIT_CODES: Final[dict[int, str | None]] = {
    0: "stopped: Ctrl-C, SIGTERM, SIGHUP or --duration (everything it started is stopped)",
    1: "a component exited with an error (named on stderr; see its log)",
    130: None,
}


@dataclass
class Component:
    """A child process of the demo."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow demo`."""
    p = sub.add_parser(
        "demo",
        description="Start the local stack and every component; Ctrl-C stops them all.",
    )
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--rate", type=int, default=500, help="simulated events per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: Ctrl-C)")
    p.add_argument("--port", type=int, help="serving port (default 8080, or a free one)")


def components(args: argparse.Namespace, settings: Settings) -> list[Component]:
    """Everything the demo runs besides the stack, in start order."""
    me = [sys.executable, "-m", "feedflow.cli"]
    # A compressed replay that ends at "now": users build histories quickly, and the newest
    # events are fresh when the simulator finishes (then the demo keeps serving).
    span = int(args.duration) if args.duration else 600
    port = serving_port(args.port or settings.port, settings.host)
    return [
        Component("content", [*me, "flow", "content", "--no-recovery"]),
        Component("engagement", [*me, "flow", "engagement", "--no-recovery"]),
        Component(
            "serve",
            [*me, "serve", "--host", settings.host, "--port", str(port), "--explore"],
            url=f"http://{settings.host}:{port}",
        ),
        Component(
            "simulator",
            [
                *me, "simulate", "--users", str(args.users), "--items", str(args.items),
                "--rate", str(args.rate), "--duration", str(span), "--seed", str(args.seed),
                "--malformed", "0.01",
            ],
        ),
    ]  # fmt: skip


def serving_port(wanted: int, host: str) -> int:
    """`wanted` when nothing listens there, else a free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, wanted))
        except OSError:
            return free_port()
    return wanted


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow demo` until Ctrl-C, `--duration` or a failed component, then stop it all."""
    arms = Assigner(load_config(settings.ab_config))  # the one serving will use
    state = Path(settings.state_dir)
    stack = LocalStack(state / "demo-stack", settings.partitions, settings.redis_url or None)
    logs = state / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    parts = components(args, settings)
    started = time.monotonic()
    with _StopSignals() as stop:
        try:
            info = stack.up()
            start_components(parts, info, logs, state)
            _announce(info, parts, logs)
            serve = next(c for c in parts if c.name == "serve")
            show_sample_feed(parts, serve.url, info.redis_url, DEMO_WAIT_S,
                             keep=lambda user: arms.assign(user).personalised)  # fmt: skip
            left = args.duration - (time.monotonic() - started) if args.duration else 0
            if not args.duration or left > 0:
                _watch(parts, left)
        except KeyboardInterrupt:
            sys.stderr.write("\nstopping…\n")
        finally:
            stop.stopping = True  # from here on a signal is noted, not obeyed: finish the stop
            stop_components(parts)
            down = time.monotonic()
            stopped = stack.down()
            sys.stderr.write(
                f"demo stopped: {', '.join(c.name for c in parts)}, {stopped}"
                f" (stack in {time.monotonic() - down:.1f}s)\n"
            )
    return 0


def start_components(parts: list[Component], info: StackInfo, logs: Path, state: Path) -> None:
    """Start every component as its own process group, logging to `logs/<name>.log`."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": info.bootstrap,
        "REDIS_URL": info.redis_url,
        # The content flow writes index snapshots here and serving loads them from here.
        "FEEDFLOW_INDEX_DIR": str(state / "demo-index"),
    }
    for comp in parts:
        with (logs / f"{comp.name}.log").open("ab") as out:
            comp.proc = subprocess.Popen(
                comp.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip


def _announce(info: StackInfo, parts: list[Component], logs: Path) -> None:
    sys.stdout.write(info.env_lines())
    for comp in parts:
        pid = comp.proc.pid if comp.proc else "-"
        at = f", {comp.url}" if comp.url else ""
        sys.stdout.write(
            f"started {comp.name} (pid {pid}{at}), log {logs / (comp.name + '.log')}\n"
        )
    serve = next(c for c in parts if c.name == "serve")
    sys.stdout.write(f"explorer (feeds, features, items, trending): {serve.url}/explore\n")
    sys.stdout.write("Ctrl-C stops everything.\n")
    sys.stdout.flush()


def _watch(parts: list[Component], duration: float) -> None:
    deadline = time.monotonic() + duration if duration else None
    while deadline is None or time.monotonic() < deadline:
        for comp in parts:
            code = comp.proc.poll() if comp.proc else None
            if code is not None and code != 0:
                raise SystemExit(f"{comp.name} exited with {code}; see its log")
        time.sleep(0.5)


def stop_components(parts: list[Component], timeout_s: float = 10.0) -> None:
    """SIGTERM every component (newest first), SIGKILL what is left after `timeout_s`.

    Says on stderr how each one ended and when, so a slow stop names its culprit.
    """
    started = time.monotonic()
    for comp in reversed(parts):
        if comp.proc is not None and comp.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.proc.pid, signal.SIGTERM)
    deadline = started + timeout_s
    for comp in parts:
        if comp.proc is None:
            continue
        how = "exited"
        try:
            comp.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.proc.pid, signal.SIGKILL)
            comp.proc.wait()
            how = "killed"
        took = time.monotonic() - started
        sys.stderr.write(f"{comp.name} {how} ({comp.proc.returncode}) after {took:.1f}s\n")


class _StopSignals:
    """Ctrl-C, SIGTERM (a supervisor, `kill` of the process group) and SIGHUP (the terminal
    gone) all stop the demo the same way: the first raises KeyboardInterrupt; any later one,
    while the components and the stack are being stopped, is noted and ignored, so a second
    signal cannot cut the stop short and leave them running. Once a stop began the handlers
    stay (the process is about to exit: a late signal must not kill it with everything already
    stopped); otherwise the previous ones come back."""

    SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.stopping:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: object) -> None:
        if self.stopping:
            sys.stderr.write(f"already stopping: {signal.Signals(sig).name} ignored\n")
            return
        self.stopping = True
        raise KeyboardInterrupt
