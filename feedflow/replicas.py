"""A supervisor for serving replicas on one port (`feedflow serve --processes N`).

Each replica is a `feedflow serve` process that binds the port with SO_REUSEPORT, so the
kernel spreads new connections over the replicas by their address hash. (A socket shared by
the replicas, as uvicorn's own `--workers` does, is not spread: measured here, the first
replica to wake took 99 % of the connections.) Each replica loads its own index reader and
caches.

The supervisor:

- starts N replicas, each in a session of its own (a terminal's Ctrl-C reaches only the
  supervisor, which stops each replica once, gracefully: impressions still queued are sent),
  and each told by the kernel to stop when the supervisor dies (PR_SET_PDEATHSIG);
- replaces a replica that exits while it runs (after a pause if it keeps failing at start);
- on SIGTERM or SIGINT, stops every replica with SIGTERM, waits up to `grace_s`, kills
  what is left, and only then returns. Its handlers stay in place until then, so a second
  signal cannot cut the shutdown short.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG: Final = 1
QUICK_EXIT_S: Final = 5.0  # a replica that dies sooner than this is restarted after a pause


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Replica:
    """One running replica and when it started."""

    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs `argv_of(i)` for i in 0..n-1 until told to stop."""

    def __init__(
        self, argv_of: Callable[[int], Sequence[str]], n: int, grace_s: float = 10.0
    ) -> None:
        self.argv_of, self.n, self.grace_s = argv_of, n, grace_s
        self.stopping = False
        self.replaced = 0

    def _spawn(self, index: int) -> Replica:
        # preexec_fn is unsafe only beside other threads; the supervisor runs none.
        proc = subprocess.Popen(
            list(self.argv_of(index)),
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.info("replica %d started (pid %d)", index, proc.pid)
        return Replica(index, proc)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d replica(s)", signal.Signals(signum).name, self.n)
        self.stopping = True

    def run(self, poll_s: float = 0.2) -> int:
        """Supervise until SIGTERM/SIGINT; 0 once every replica has stopped."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        replicas: list[Replica] = []
        try:
            replicas = [self._spawn(i) for i in range(self.n)]
            while not self.stopping:
                time.sleep(poll_s)
                for n, replica in enumerate(replicas):
                    code = replica.proc.poll()
                    if code is None or self.stopping:
                        continue
                    lived = time.monotonic() - replica.started
                    log.warning("replica %d (pid %d) exited with %s after %.1fs; replacing it",
                                replica.index, replica.proc.pid, code, lived)  # fmt: skip
                    if lived < QUICK_EXIT_S:
                        time.sleep(1.0)  # failing at start: do not spin
                    replicas[n] = self._spawn(replica.index)
                    self.replaced += 1
        finally:
            self._stop(replicas)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _stop(self, replicas: list[Replica]) -> None:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.terminate()
        deadline = time.monotonic() + self.grace_s
        for r in replicas:
            try:
                r.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("replica %d did not stop within %.0fs: killed", r.index, self.grace_s)
                r.proc.kill()
                r.proc.wait()
