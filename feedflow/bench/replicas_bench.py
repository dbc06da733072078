"""Serving replicas on one host: `feedflow serve --processes N` for N = 1 and 2.

One world (the serving benchmark's cached index snapshot and a private redis-server filled
with users, item stats and boards), then for each N: the replicas start, warm up, and the
closed-loop load client (its own process) runs at several client counts. Reported per N:
requests per second held with P99 ≤ 15 ms (client side), the P99 at each level, server CPU
per request (all replicas), and each replica's resident memory. N = 1 is the reference of
the same run. The machine's cores are shared by the replicas, the load client and Redis:
on 2 cores the second replica competes with them, which is what the figures show.

Run: `python -m feedflow.bench.replicas_bench --items 1000000` (the 1M snapshot is built
once, ~10 min on 2 cores, then reused); `--write-md` updates BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import orjson

from feedflow.bench.machine import children, cmdline, cpu_model, process_cpu_s, rss_mib
from feedflow.bench.markdown import write_section
from feedflow.bench.serving_bench import (
    BUDGET_P99_MS,
    ROOT,
    Log,
    _load,
    _serve,
    _stderr,
    _wait_ready,
)
from feedflow.bench.serving_world import PrivateRedis, ensure_snapshot, populate, register
from feedflow.stack import free_port
from kernel.settings import Settings
from state.index_keys import IndexKeys
from state.index_replica import IndexParams
from state.redis_client import JOB, connect

SECTION: Final = "## Serving replicas"


def replicas_of(pid: int) -> list[int]:
    """The replica processes under a `feedflow serve --processes N` supervisor (or itself)."""
    spawned = [c for c in children(pid) if b"--replica" in cmdline(c)]
    return spawned or [pid]


def run_processes(
    url: str, root: Path, users: Sequence[str], processes: int, levels: Sequence[int],
    duration_s: float, warm_s: float, log: Log,
) -> dict[str, Any]:  # fmt: skip
    """One `feedflow serve --processes N` under load at each client count."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmp:
        paths = Path(tmp) / "paths.txt"
        paths.write_text("".join(f"/api/v1/content/feed?user_id={u}&limit=20\n" for u in users))
        proc = _serve(url, root, port, Path(tmp), processes)
        try:
            ready_s = _wait_ready(port, proc, 600)
            deadline = time.monotonic() + 600
            while len(replicas_of(proc.pid)) < processes and time.monotonic() < deadline:
                time.sleep(0.5)
            # /readyz answers once one replica is ready: every replica must have loaded.
            _load(port, paths, 2 * processes, warm_s)
            pids = replicas_of(proc.pid)
            out = []
            for c in levels:
                cpu = [process_cpu_s(p) for p in pids]
                result = _load(port, paths, c, duration_s)
                per = [process_cpu_s(p) - b for p, b in zip(pids, cpu, strict=True)]
                used = sum(per)
                result["cpu_share"] = [round(x / used, 2) if used else 0.0 for x in per]
                result["server_cpu_ms_per_request"] = round(used / result["requests"] * 1000, 3)
                result["load_avg_1m"] = round(os.getloadavg()[0], 2)
                log(f"  {processes} process(es), {c} clients: {result['req_per_s']} req/s, "
                    f"P99 {result['p99_ms']} ms, CPU shares {result['cpu_share']}")  # fmt: skip
                out.append(result)
            memory = [rss_mib(p) for p in pids]
        finally:
            proc.terminate()
            proc.wait(60)
    held = [r for r in out if r["p99_ms"] <= BUDGET_P99_MS and r["non_200"] == 0]
    best = max(held, key=lambda r: r["req_per_s"]) if held else None
    return {"processes": processes, "ready_s": round(ready_s, 1), "levels": out,
            "held": best, "rss_mib": memory}  # fmt: skip


def run(
    items: int, users: int, processes: Sequence[int], levels: Sequence[int],
    duration_s: float, warm_s: float, seed: int = 7, log: Log = _stderr,
) -> dict[str, Any]:  # fmt: skip
    """Every process count on one world; plain data."""
    cache = ROOT / ".feedflow" / "bench" / "serving-world"
    params = replace(IndexParams.from_settings(Settings()), threads=2)
    info, build = ensure_snapshot(cache, items, seed, params)
    with (
        tempfile.TemporaryDirectory(prefix="replicas-redis-") as tmp,
        PrivateRedis(Path(tmp)) as private,
    ):
        client = connect(private.url, JOB)
        register(client, IndexKeys(), info)
        ids = populate(client, items, users, seed, cache, info.version)
        client.close()
        runs = [run_processes(private.url, cache, ids, n, levels, duration_s, warm_s, log)
                for n in processes]  # fmt: skip
    return {"items": items, "users": users, "snapshot": build, "cpu": cpu_model(),
            "cores": os.cpu_count(), "runs": runs}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        SECTION,
        "",
        f"`feedflow serve --processes N` at {result['items']:,} items, measured by"
        f" `python -m feedflow.bench.replicas_bench --items {result['items']}` on"
        f" {time.strftime('%Y-%m-%d')} ({result['cores']} cores, {result['cpu']}), shared by"
        " the replicas, the load client and Redis. N = 1 is the reference of the same run."
        f" Held: the highest request rate whose client-side P99 ≤ {BUDGET_P99_MS:g} ms.",
        "",
        "| processes | clients | req/s | P50 ms | P99 ms | server CPU ms/req | CPU share per"
        " replica | load avg |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["runs"]:
        for lv in r["levels"]:
            lines.append(
                f"| {r['processes']} | {lv['concurrency']} | {lv['req_per_s']:,.0f} |"
                f" {lv['p50_ms']:.2f} | {lv['p99_ms']:.2f} |"
                f" {lv['server_cpu_ms_per_request']:.2f} |"
                f" {' / '.join(f'{x:.2f}' for x in lv['cpu_share'])} | {lv['load_avg_1m']:.1f} |"
            )
    lines.append("")
    for r in result["runs"]:
        best = r["held"]
        held = (f"{best['req_per_s']:,.0f} req/s held ({best['concurrency']} clients, P99"
                f" {best['p99_ms']:.2f} ms)" if best else "no level held the budget")  # fmt: skip
        memory = ", ".join(f"{m:,.0f}" for m in r["rss_mib"])
        lines.append(f"- {r['processes']} process(es): {held}; resident memory per replica"
                     f" {memory} MiB; ready in {r['ready_s']} s.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m feedflow.bench.replicas_bench`."""
    p = argparse.ArgumentParser(description="Serving replicas benchmark.")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--processes", default="1,2", help="comma-separated replica counts")
    p.add_argument("--levels", default="1,2,4,8", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    p.add_argument("--warm", type=float, default=15.0, help="warm-up seconds per run")
    p.add_argument("--out", help="write the results here")
    p.add_argument("--write-md", action="store_true", help="update BENCHMARKS.md")
    args = p.parse_args(argv)
    result = run(args.items, args.users, [int(x) for x in args.processes.split(",")],
                 [int(x) for x in args.levels.split(",")], args.duration, args.warm)  # fmt: skip
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.write_md:
        write_section(ROOT / "BENCHMARKS.md", markdown(result))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
