"""A supervisor of local processes: serving replicas on one port (`feedflow serve
--processes N`) and the processes of a Bytewax cluster (`feedflow flow NAME --processes N`).

Each serving replica is a `feedflow serve` process that binds the port with SO_REUSEPORT, so the
kernel spreads new connections over the replicas by their address hash. (A socket shared by
the replicas, as uvicorn's own `--workers` does, is not spread: measured here, the first
replica to wake took 99 % of the connections.) Each replica loads its own index reader and
caches.

The supervisor:

- starts N replicas, each in a session of its own (a terminal's Ctrl-C reaches only the
  supervisor, which stops each replica once, gracefully: impressions still queued are sent),
  and each told by the kernel to stop when the supervisor dies (PR_SET_PDEATHSIG);
- replaces a replica that exits while it runs (after a pause if it keeps failing at start);
  or, for members that only work together (`unit=True`: a Bytewax cluster, whose processes
  panic when one of them dies and resume from their recovery store as a whole), stops the
  rest and starts them all again, with command lines computed afresh (new cluster ports);
- on SIGTERM or SIGINT, stops every replica with SIGTERM, waits up to `grace_s`, kills
  what is left, and only then returns. Its handlers stay in place until then, so a second
  signal cannot cut the shutdown short.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from kernel.processes import die_with_parent

log = logging.getLogger(__name__)
QUICK_EXIT_S: Final = 5.0  # a replica that dies sooner than this is restarted after a pause


@dataclass
class Replica:
    """One running replica and when it started."""

    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs the command lines `argvs()` returns, one process each, until told to stop."""

    def __init__(
        self,
        argvs: Callable[[], Sequence[Sequence[str]]],
        grace_s: float = 10.0,
        unit: bool = False,
    ) -> None:
        self.argvs, self.grace_s, self.unit = argvs, grace_s, unit
        self.n = len(argvs())
        self.stopping = False
        self.replaced = 0  # members started again after one exited
        self.members: list[Replica] = []  # the running processes, by index

    def _spawn(self, index: int, argv: Sequence[str]) -> Replica:
        # preexec_fn is unsafe only beside other threads; the supervisor runs none.
        proc = subprocess.Popen(
            list(argv),
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        log.info("process %d started (pid %d)", index, proc.pid)
        return Replica(index, proc)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d process(es)", signal.Signals(signum).name, self.n)
        self.stopping = True

    def run(self, poll_s: float = 0.2) -> int:
        """Supervise until SIGTERM/SIGINT; 0 once every process has stopped."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.members = self._spawn_all()
            while not self.stopping:
                time.sleep(poll_s)
                exited = [r for r in self.members if r.proc.poll() is not None]
                if not exited or self.stopping:
                    continue
                quick = any(time.monotonic() - r.started < QUICK_EXIT_S for r in exited)
                for r in exited:
                    lived = time.monotonic() - r.started
                    log.warning("process %d (pid %d) exited with %s after %.1fs",
                                r.index, r.proc.pid, r.proc.returncode, lived)  # fmt: skip
                if quick:
                    time.sleep(1.0)  # failing at start: do not spin
                if self.unit:
                    log.error("a cluster member exited: restarting all %d together", self.n)
                    self._stop(self.members)
                    self.members = self._spawn_all()
                    self.replaced += len(self.members)
                    continue
                argvs = self.argvs()
                for r in exited:
                    self.members[r.index] = self._spawn(r.index, argvs[r.index])
                    self.replaced += 1
        finally:
            self._stop(self.members)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _spawn_all(self) -> list[Replica]:
        return [self._spawn(i, argv) for i, argv in enumerate(self.argvs())]

    def _stop(self, replicas: list[Replica]) -> None:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.terminate()
        deadline = time.monotonic() + self.grace_s
        for r in replicas:
            try:
                r.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process %d did not stop within %.0fs: killed", r.index, self.grace_s)
                r.proc.kill()
                r.proc.wait()
