"""Redis bytes per item and per user, by key family, for the capacity model in BENCHMARKS.md.

Registers the serving benchmark's synthetic world (:mod:`feedflow.bench.serving_world`: the
cached index snapshot, item records and vectors, item stats, users shaped like the flows'
records, co-engagement records for their recent items) in a private redis-server, then
samples `MEMORY USAGE` (key, value and overhead) per key family and reads `used_memory`.
Reference: the raw value lengths of the same keys.

Run: `python -m feedflow.bench.capacity [--items 1000000] [--users 20000] [--out FILE]`
(the snapshot is built on the first run at a size and cached, see serving_world).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import orjson

from feedflow.bench.flow_harness import redis_value_sizes
from feedflow.bench.serving_world import PrivateRedis, ensure_snapshot, populate, register
from kernel.settings import Settings
from state.index_keys import IndexKeys
from state.index_replica import IndexParams
from state.redis_client import JOB, connect

ROOT: Final = Path(__file__).resolve().parents[2]
FAMILIES: Final = {
    "item record": "ff:item:*",
    "item vector": "ff:vec:*",
    "item stats": "ff:{i:*",
    "co-engagement (neighbour list)": "ff:{c:*",
    "user features": "ff:{u:*",
}


def run(items: int, users: int, sample: int = 2000, seed: int = 7) -> dict[str, Any]:
    """Bytes per key family on the world of `items` items and `users` users."""
    cache = ROOT / ".feedflow" / "bench" / "serving-world"
    params = replace(IndexParams.from_settings(Settings()), threads=2)
    info, _ = ensure_snapshot(cache, items, seed, params)
    with (
        tempfile.TemporaryDirectory(prefix="capacity-redis-") as tmp,
        PrivateRedis(Path(tmp)) as private,
    ):
        client = connect(private.url, JOB)
        before = int(client.info("memory")["used_memory"])
        register(client, IndexKeys(), info)
        populate(client, items, users, seed, cache, info.version)
        memory = client.info("memory")
        families = {name: redis_value_sizes(client, pattern, sample, skip=None)
                    for name, pattern in FAMILIES.items()}  # fmt: skip
        keys = int(client.dbsize())
        client.close()
    return {
        "items": items,
        "users": users,
        "keys": keys,
        "used_memory": int(memory["used_memory"]) - before,
        "used_memory_rss": int(memory["used_memory_rss"]),
        "families": families,
    }


def markdown(result: dict[str, Any]) -> str:
    """A table of bytes per key family."""
    lines = [
        "| key family | MEMORY USAGE mean / P99 (B) | value length mean / P99 (B) | keys sampled |",
        "|---|---:|---:|---:|",
    ]
    for name, f in result["families"].items():
        mu, vl = f["memory_usage"], f["value_len"]
        usage = f"{mu['mean']:,.0f} / {mu['p99']:,.0f}"
        length = f"{vl['mean']:,.0f} / {vl['p99']:,.0f}"
        lines.append(f"| {name} | {usage} | {length} | {f['sampled']} |")
    mib = result["used_memory"] / 2**20
    lines.append(f"\n`used_memory` grew by {mib:,.0f} MiB for {result['keys']:,} keys "
                 f"({result['items']:,} items, {result['users']:,} users).")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m feedflow.bench.capacity`."""
    p = argparse.ArgumentParser(description="Redis bytes per item and user, by key family.")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--out", help="write the results here")
    args = p.parse_args(argv)
    result = run(args.items, args.users)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
