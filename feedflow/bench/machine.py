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


def children(pid: int) -> list[int]:
    """The running child processes of `pid` (none when it is gone)."""
    found: list[int] = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in tasks.read_text().split()]
        except OSError:
            continue  # a thread that ended meanwhile
    return found


def cmdline(pid: int) -> list[bytes]:
    """The command line of `pid`, one item per argument (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its running descendants (a supervisor and its members)."""
    return process_cpu_s(pid) + sum(tree_cpu_s(c) for c in children(pid))


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """The running descendants of `pid`, depth first."""
    found: list[int] = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def pct_ms(seconds: Sequence[float], q: float) -> float:
    """The `q`-th percentile of durations in seconds, in milliseconds to 3 places (0: none)."""
    return round(float(np.percentile(np.asarray(seconds) * 1000, q)), 3) if seconds else 0.0
