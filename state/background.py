"""Work on a copy of this process's memory, in a forked child: a snapshot that never stalls.

Saving a 1M-item hnswlib graph takes about a second and rebuilding it (compaction) minutes,
and hnswlib holds the GIL throughout, so a thread would stall the writer all the same. A
forked child instead gets a copy-on-write image of the index as it stood at the fork, writes
or rebuilds it at its leisure on another core, and exits; the parent goes on applying changes
and only pays for the fork itself (copying page tables: milliseconds) and for the pages it
writes afterwards.

The child runs only the given function, then leaves with `os._exit`: no atexit handlers, no
flushing of the parent's buffers, no closing of the parent's connections. It is told to stop
when the parent dies. Its exit code is its only report: 0 when the function returned.

Example:
    >>> job = Forked.start(lambda: None)
    >>> job.wait(5.0)
    True
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from kernel.processes import die_with_parent


@dataclass
class Forked:
    """One forked child and what the parent knows about it."""

    pid: int
    started: float = field(default_factory=time.monotonic)
    exit_code: int | None = None

    @classmethod
    def start(cls, work: Callable[[], object]) -> Forked:
        """Fork; the child runs `work()` and exits 0, or prints the error and exits 1."""
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                die_with_parent()
                work()
                code = 0
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        return cls(pid)

    def done(self) -> bool:
        """True once the child has exited (reaped here; `ok` then says how)."""
        if self.exit_code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code is not None

    @property
    def ok(self) -> bool:
        """The child exited 0."""
        return self.exit_code == 0

    def kill(self) -> None:
        """Stop the child now (SIGKILL) if it still runs, and reap it."""
        if not self.done():
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10.0)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the child; returns `ok` (False while it still runs)."""
        deadline = time.monotonic() + timeout_s
        while not self.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ok
