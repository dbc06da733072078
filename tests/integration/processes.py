"""Flow processes started by the integration tests."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C as an operator would, then kill when it does not exit within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
