"""Idle cost: how much of a core each flow uses when no message arrives.

    python -m feedflow.bench.idle [--settle 25] [--sample 20] [--out FILE]

On loopback, with a stack of its own (the embedded broker, a redis-server, empty topics):
the content, engagement and learning flows with recovery on, each sampled from /proc for
`--sample` seconds after `--settle` seconds of start-up. The reference, in the same run, is
a bare librdkafka consumer assigned to every partition of the engagement topic, polling with
a 50 ms timeout: what waiting for Kafka costs without an engine around it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from feedflow.bench.machine import process_cpu_s
from feedflow.bench.serving_world import PrivateRedis
from feedflow.stack import LocalStack

FLOWS: Final = ("content", "engagement", "learning")
CONSUMER: Final = """
import sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "idle", "enable.auto.commit": False})
c.assign([TopicPartition("user.engagement.events", p, 0) for p in range(int(sys.argv[2]))])
while True:
    c.poll(0.05)
"""


def share_of_a_core(procs: dict[str, subprocess.Popen[bytes]], sample_s: float) -> dict[str, float]:
    """Each process's CPU over `sample_s` seconds, as a percentage of one core."""
    before = {name: process_cpu_s(p.pid) for name, p in procs.items()}
    time.sleep(sample_s)
    return {
        name: round(100 * (process_cpu_s(p.pid) - before[name]) / sample_s, 1)
        for name, p in procs.items()
    }


def run_idle(root: Path, settle_s: float = 25.0, sample_s: float = 20.0) -> dict[str, Any]:
    """Start the stack and the idle flows, sample them; plain data of the result."""
    partitions = 4
    with PrivateRedis(root / "redis") as redis_server:
        stack = LocalStack(root / "stack", partitions=partitions, redis_url=redis_server.url)
        info = stack.up()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": info.bootstrap,
            "REDIS_URL": redis_server.url,
            "FEEDFLOW_STATE_DIR": str(root / "state"),
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in FLOWS:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "feedflow.cli", "flow", name], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            procs["reference"] = subprocess.Popen(
                [sys.executable, "-c", CONSUMER, info.bootstrap, str(partitions)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(settle_s)
            ended = [name for name, p in procs.items() if p.poll() is not None]
            if ended:
                raise RuntimeError(f"ended before the sample: {ended}")
            shares = share_of_a_core(procs, sample_s)
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            stack.down(timeout_s=1.0)
    return {"settle_s": settle_s, "sample_s": sample_s, "percent_of_a_core": shares}


def main(argv: list[str] | None = None) -> int:
    """The command line: print the shares as JSON."""
    parser = argparse.ArgumentParser(prog="python -m feedflow.bench.idle", description=__doc__)
    parser.add_argument("--settle", type=float, default=25.0, help="seconds of start-up")
    parser.add_argument("--sample", type=float, default=20.0, help="seconds sampled")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="feedflow-idle-") as tmp:
        report = run_idle(Path(tmp), args.settle, args.sample)
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
