"""Event lake benchmark: what writing the lake costs the engagement flow, and its bytes.

One private stack (Tansu broker, redis-server, loopback), N preloaded simulator events (as
:mod:`feedflow.bench.engagement_bench` preloads them); the engagement flow (one worker,
recovery on, 5 s epochs) is timed to the last sentinel with the lake off and on, in
alternating rounds, because the machine is shared: the ratio of the medians is the figure
(budget: the lake may lower ingest by at most 10 %). Then the lake's files: rows and bytes
per dataset, per million events, before and after `compact`.

Run: `python -m feedflow.bench.lake_bench [--events N] [--rounds R] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from feedflow.bench.engagement_bench import (
    BenchConfig,
    _Log,
    load_catalogue,
    machine,
    preload,
    timed_flow_run,
)
from feedflow.stack import LocalStack
from state.lake import Lake
from state.lake_schema import DATASETS
from state.redis_client import JOB, connect


def lake_sizes(lake: Lake) -> dict[str, Any]:
    """Files, rows and bytes of each dataset."""
    import io

    import pyarrow.parquet as pq

    out: dict[str, Any] = {}
    for name, dataset in DATASETS.items():
        files = lake.files(dataset)
        raw = [lake.fs.cat_file(f) for f in files]
        rows = sum(pq.ParquetFile(io.BytesIO(b)).metadata.num_rows for b in raw)
        out[name] = {"files": len(files), "rows": rows, "bytes": sum(len(b) for b in raw)}
    return out


def run_lake_bench(events: int, rounds: int, log: _Log) -> dict[str, Any]:
    """Alternating lake-off / lake-on ingest runs, then the lake's sizes."""
    cfg = BenchConfig.for_mode(False, events=events)
    result: dict[str, Any] = {"machine": machine(), "events_asked": events, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack", partitions=cfg.partitions).up()
        client = connect(stack.redis_url, JOB)
        try:
            pre = preload(stack, cfg)
            log(f"preloaded {pre['events']} events; loading {pre['catalogue']} items")
            load_catalogue(stack, work, client, pre["catalogue"])
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            lake_dir = work / "lake-last"
            for n in range(rounds):
                for mode in ("off", "on"):
                    run_dir = work / f"{mode}-{n}"
                    env = {"FEEDFLOW_LAKE_ENABLED": "false"} if mode == "off" else {}
                    done = timed_flow_run(stack, run_dir, client, pre, True, env=env)
                    runs[mode].append(done)
                    log(f"round {n} lake {mode}: {done['events_per_s_steady']} events/s, "
                        f"{done['events_per_cpu_s_steady']} per CPU s")  # fmt: skip
                    if mode == "on":
                        lake_dir = run_dir / "lake"
            # Every writer has stopped: their last epochs' journals hold nothing back.
            lake = Lake(str(lake_dir))
            before = lake_sizes(lake)
            started = time.perf_counter()
            merged = {
                name: lake.compact(d, 2**62, journal_horizon_ms=0)._asdict()
                for name, d in DATASETS.items()
            }
            compact_s = time.perf_counter() - started
            after = lake_sizes(lake)
        finally:
            client.close()
            LocalStack(work / "stack").down()
    n = pre["events"]
    result["events"] = n

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[mode]))

    for key in ("events_per_s_steady", "events_per_cpu_s_steady"):
        off, on = median("off", key), median("on", key)
        result[key] = {"off": off, "on": on, "on_over_off": round(on / off, 3)}
    result["runs"] = runs
    result["lake_before_compaction"] = before
    result["lake_after_compaction"] = after
    result["compaction"] = {"seconds": round(compact_s, 2), "datasets": merged}
    result["bytes_per_million_events"] = {
        name: round(after[name]["bytes"] * 1_000_000 / n) for name in DATASETS
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: progress on stderr, the JSON summary on stdout."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=320_000, help="preloaded events")
    parser.add_argument("--rounds", type=int, default=3, help="lake off / on pairs")
    parser.add_argument("--out", metavar="FILE", help="also write the summary here")
    args = parser.parse_args(argv)
    result = run_lake_bench(args.events, args.rounds, _Log())
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        Path(args.out).write_bytes(text)
    sys.stdout.write(text.decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
