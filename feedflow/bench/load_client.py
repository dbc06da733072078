"""A closed-loop HTTP load generator: `concurrency` keep-alive connections on loopback.

Each connection sends a request, waits for the whole response, records the latency and sends
the next, for `duration_s` or `max_requests` in all. Raw asyncio streams keep the client's own
cost near 30 µs a request, so the server, not the client, is what is measured. Run as a
separate process (`python -m feedflow.bench.load_client ...`): it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson


async def _connection(
    host: str,
    port: int,
    paths: Iterator[str],
    deadline: float,
    budget: list[int],
    out: dict[str, Any],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            request = f"GET {next(paths)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            out["latencies"].append(time.perf_counter() - started)
            out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
            if status == 200 and b'"fallback":null' not in body:
                out["fallbacks"] += 1
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    paths: Sequence[str],
    concurrency: int,
    duration_s: float,
    max_requests: int,
    seed: int = 1,
) -> dict[str, Any]:
    """Latencies (seconds), status counts and the wall time of one closed-loop run."""
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    cycle = itertools.cycle(shuffled)
    out: dict[str, Any] = {"latencies": [], "statuses": {}, "fallbacks": 0}
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(
        *(_connection(host, port, cycle, deadline, budget, out) for _ in range(concurrency))
    )
    out["wall_s"] = time.perf_counter() - started
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: run the load, print the result as one JSON object on stdout."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--paths", required=True, help="file with one request path per line")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    args = p.parse_args(argv)
    with open(args.paths, encoding="utf-8") as fh:
        paths = [line.strip() for line in fh if line.strip()]
    result = asyncio.run(
        run_load(args.host, args.port, paths, args.concurrency, args.duration, args.max_requests)
    )
    sys.stdout.write(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
