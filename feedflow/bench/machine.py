"""What a benchmark ran on: every report names the CPU next to its figures."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it, else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, all threads (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct_ms(seconds: Sequence[float], q: float) -> float:
    """The `q`-th percentile of durations in seconds, in milliseconds to 3 places (0: none)."""
    return round(float(np.percentile(np.asarray(seconds) * 1000, q)), 3) if seconds else 0.0
