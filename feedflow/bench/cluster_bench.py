"""Flow cluster benchmark: engagement ingest with 1 and N processes on one host.

The engagement ingest run of :mod:`feedflow.bench.engagement_bench` (preloaded simulator
events, recovery on, timed until a sentinel on every partition has its features in Redis),
once as one `feedflow flow engagement` process and once per `--processes N` cluster, on the
same private broker and Redis. Topics get a partition count that every process count divides.
Reference: one bare consumer reading and decoding the same topic, measured in the same run.
CPU is the whole cluster's (supervisor and members).

Then the weekly job over the same events (their week): `feedflow weights run` in one process
(the reference), and as a Bytewax batch flow of 1 and N processes (`--processes`); wall time,
CPU of the command and its members, and the largest resident memory of any one process.

Run: `python -m feedflow.bench.cluster_bench [--events N] [--processes 1,2] [--write-md]`.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from feedflow.bench.engagement_bench import (
    START_MS,
    BenchConfig,
    _flow_env,
    _Log,
    load_catalogue,
    machine,
    preload,
    timed_flow_run,
)
from feedflow.bench.flow_harness import BenchError, read_all
from feedflow.bench.machine import descendants, rss_mib
from feedflow.bench.markdown import write_section
from feedflow.stack import LocalStack, StackInfo
from operators.contracts import TOPIC_ENGAGEMENT
from operators.weekly_weights import week_of
from state.redis_client import JOB, connect

SECTION: Final = "## Flow clusters"
ROOT: Final = Path(__file__).resolve().parents[2]


def run(events: int, processes: Sequence[int], workdir: Path | None = None) -> dict[str, Any]:
    """Ingest `events` once per process count; the JSON-ready summary."""
    partitions = max(4, math.lcm(*processes))
    cfg = BenchConfig.for_mode(False, events=events, partitions=partitions)
    log = _Log()
    result: dict[str, Any] = {"machine": machine(), "partitions": partitions, "runs": []}
    with tempfile.TemporaryDirectory(prefix="feedflow-cluster-bench-", dir=workdir) as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack", partitions=partitions).up()
        client = connect(stack.redis_url, JOB)
        try:
            log(f"preloading ~{events} events into {partitions} partitions")
            pre = preload(stack, cfg)
            load_catalogue(stack, work, client, pre["catalogue"])
            reference = read_all(stack.bootstrap, TOPIC_ENGAGEMENT, partitions, 1000, 300)
            if reference["messages"] != pre["events"]:
                raise BenchError(f"broker holds {reference['messages']} != {pre['events']}")
            log(f"reference consumer {reference['events_per_s']} events/s")
            for n in processes:
                extra = ("--processes", str(n)) if n > 1 else ()
                one = timed_flow_run(stack, work / f"flow-{n}", client, pre, True, *extra)
                log(f"{n} process(es): {one['events_per_s_steady']} events/s steady")
                result["runs"].append({"processes": n, **one})
            result["weekly"] = []
            for members in [None, *processes]:
                weekly = weekly_run(stack, members)
                log(f"weekly run, {members} processes: {weekly['events_per_s']} events/s")
                result["weekly"].append(weekly)
        finally:
            client.close()
            LocalStack(work / "stack").down()
    result |= {"events": pre["events"], "reference": reference, "load_1min_max": max(log.loads)}
    return result


def weekly_run(stack: StackInfo, processes: int | None) -> dict[str, Any]:
    """One `feedflow weights run` over the preloaded week (None: in one process, the
    reference; else `--processes N`), sampled for memory every 0.2 s."""
    argv = [sys.executable, "-m", "feedflow.cli", "weights", "run", "--week", week_of(START_MS),
            "--no-publish", "--json"]  # fmt: skip
    argv += ["--processes", str(processes)] if processes else []
    env = {**os.environ, **_flow_env(stack)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        peak = max([peak, *(rss_mib(p) for p in [proc.pid, *descendants(proc.pid)])])
        time.sleep(0.2)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else b""
    if proc.returncode:
        raise BenchError(f"weights run ({processes} processes) exited with {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    run = orjson.loads(out)
    return {
        "processes": processes,
        "events": run["events"],
        "users": run["users"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events_per_s": round(run["events"] / wall),
        "events_per_cpu_s": round(run["events"] / cpu) if cpu else 0,
        "peak_rss_mib": round(peak),
    }


def markdown(result: dict[str, Any], command: str) -> str:
    """The `## Flow clusters` section of BENCHMARKS.md."""
    m, ref = result["machine"], result["reference"]
    lines = [
        SECTION,
        "",
        f"`{command}` — {m['cpu']}, {m['usable_cores']} usable cores shared with the broker "
        f"and Redis; {result['events']:,} simulator events in {result['partitions']} "
        f"partitions, engagement flow with recovery on (1 worker per process); 1-minute load "
        f"peaked at {result['load_1min_max']:.1f}.",
        "",
        "| run | events/s (steady) | events/s (with start-up) | CPU s | events per CPU s "
        "| cores busy |",
        "|---|---:|---:|---:|---:|---:|",
        f"| reference: bare consumer (read + decode) | {ref['events_per_s']:,} | – | – "
        f"| {ref['events_per_cpu_s']:,} | – |",
    ]
    for r in result["runs"]:
        n = r["processes"]
        name = "1 process" if n == 1 else f"cluster of {n} processes (`--processes {n}`)"
        lines.append(
            f"| {name} | {r['events_per_s_steady']:,} | {r['events_per_s_total']:,} "
            f"| {r['flow_cpu_s_steady']} | {r['events_per_cpu_s_steady']:,} "
            f"| {r['flow_cpu_share_steady']:.2f} |"
        )
    weekly = result.get("weekly", [])
    if weekly:
        w0 = weekly[0]
        lines += [
            "",
            f"The weekly job over the same {w0['events']:,} events ({w0['users']:,} users with "
            "weights), wall time including start-up (a Bytewax cluster takes about a second "
            "to form):",
            "",
            "| weekly run | wall s | events/s | CPU s | events per CPU s | largest process RSS "
            "(MiB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for w in weekly:
            n = w["processes"]
            name = ("reference: in one process (`feedflow weights run`)" if n is None
                    else f"Bytewax batch flow, `--processes {n}`")  # fmt: skip
            lines.append(
                f"| {name} | {w['wall_s']} | {w['events_per_s']:,} | {w['cpu_s']} "
                f"| {w['events_per_cpu_s']:,} | {w['peak_rss_mib']:,} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m feedflow.bench.cluster_bench`."""
    p = argparse.ArgumentParser(description="Flow cluster benchmark (engagement ingest).")
    p.add_argument("--events", type=int, default=320_000)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--out", help="write the results here")
    p.add_argument("--write-md", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args(argv)
    # The command to rerun, without where this run's JSON went.
    shown = f"--events {args.events} --processes {args.processes}"
    shown += " --write-md" if args.write_md else ""
    result = run(args.events, [int(x) for x in args.processes.split(",")])
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = markdown(result, f"python -m feedflow.bench.cluster_bench {shown}".strip())
    if args.write_md:
        write_section(ROOT / "BENCHMARKS.md", text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
