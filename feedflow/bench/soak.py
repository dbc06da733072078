"""Soak: the whole system at a steady rate for a bounded time, memory sampled.

    python -m feedflow.bench.soak [--duration 600] [--rate 1000] [--out FILE]

A private stack (broker and redis-server on loopback), the content and engagement flows, the
serving process and the simulator paced at `--rate` events per second for `--duration`
seconds — the demo's components — plus a bounded feed-request loop (`--feeds-per-s`). Every
`--sample` seconds: the resident memory (VmRSS) of every process and Redis's `used_memory`
and key count. The summary sets each figure at the end of the warm-up (the first quarter)
against its value at the end, and the events the simulator sent as the reference of how much
work went through: flat memory means bounded state (TTLs, bounded caches) under that work.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from feedflow.demo import Component, components, start_components, stop_components
from feedflow.stack import LocalStack
from kernel.settings import Settings
from state.redis_client import JOB, connect


def rss_kb(pid: int) -> int | None:
    """Resident memory of a process in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _feeds(url: str, users: int, per_s: float, stop: threading.Event, out: dict[str, int]) -> None:
    rng = random.Random(3)
    with httpx.Client(base_url=url, timeout=2.0) as client:
        while not stop.wait(1.0 / per_s):
            user = f"s7-u{rng.randrange(users):06d}"
            try:
                r = client.get("/api/v1/content/feed", params={"user_id": user})
                out["ok" if r.status_code == 200 else "not_ok"] += 1
            except httpx.HTTPError:
                out["error"] += 1


def run_soak(duration_s: int, rate: int, feeds_per_s: float, sample_s: int) -> dict[str, Any]:
    """Run the soak; plain data of every sample and the summary."""
    with tempfile.TemporaryDirectory(prefix="feedflow-soak-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "stack", partitions=2)
        info = stack.up()
        args = argparse.Namespace(users=20_000, items=5_000, rate=rate, seed=7,
                                  duration=duration_s, port=None)  # fmt: skip
        parts: list[Component] = components(args, Settings(state_dir=str(root)))
        logs = root / "logs"
        logs.mkdir()
        stop, counts = threading.Event(), {"ok": 0, "not_ok": 0, "error": 0}
        try:
            start_components(parts, info, logs, root)
            pids = {c.name: c.proc.pid for c in parts if c.proc is not None}
            pids.update({p.name: p.pid for p in info.processes})
            serve = next(c for c in parts if c.name == "serve")
            loop = threading.Thread(target=_feeds, args=(serve.url, 20_000, feeds_per_s, stop,
                                                         counts), daemon=True)  # fmt: skip
            loop.start()
            client = connect(info.redis_url, JOB)
            samples, started = [], time.monotonic()
            while (elapsed := time.monotonic() - started) <= duration_s:
                mem = client.info("memory")
                samples.append({
                    "t_s": round(elapsed), "rss_kb": {n: rss_kb(p) for n, p in pids.items()},
                    "redis_used_memory": int(mem["used_memory"]), "redis_keys": client.dbsize(),
                    "feeds": dict(counts),
                })  # fmt: skip
                sys.stderr.write(f"soak: {samples[-1]}\n")
                time.sleep(sample_s)
            client.close()
        finally:
            stop.set()
            stop_components(parts)
            stack.down()
        sent = _simulated(logs / "simulator.log")
    return {"duration_s": duration_s, "rate": rate, "feeds_per_s": feeds_per_s,
            "samples": samples, "simulator": sent, "summary": summarise(samples)}  # fmt: skip


def _simulated(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][-400:] if lines else ""


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure at the end of the warm-up (first quarter) against its last value."""
    warm = samples[max(len(samples) // 4, 1) - 1]
    last = samples[-1]
    out: dict[str, Any] = {"warm_t_s": warm["t_s"], "end_t_s": last["t_s"]}
    for name, kb in last["rss_kb"].items():
        before = warm["rss_kb"].get(name)
        if kb and before:
            out[f"rss_mib:{name}"] = (round(before / 1024, 1), round(kb / 1024, 1),
                                      round(kb / before - 1, 3))  # fmt: skip
    for key in ("redis_used_memory", "redis_keys"):
        out[key] = (warm[key], last[key], round(last[key] / max(warm[key], 1) - 1, 3))
    out["feeds"] = last["feeds"]
    return out


def main() -> int:
    """Command-line entry: print the summary as JSON (the whole result to `--out`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=600)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--feeds-per-s", type=float, default=10.0)
    p.add_argument("--sample", type=int, default=30)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    duration = min(max(args.duration, 60), 3600)  # bounded in time, whatever is asked
    result = run_soak(duration, min(args.rate, 20_000), min(args.feeds_per_s, 200.0), args.sample)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
