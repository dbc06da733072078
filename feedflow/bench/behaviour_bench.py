"""What the behaviour space costs a feed request, on a synthetic space.

    python -m feedflow.bench.behaviour_bench [--items 100000] [--requests 2000] [--out FILE]

A space of `--items` vectors (64 floats, a low-rank mixture like PureSVD's) is built as
serving holds it (hnswlib graph plus dense copy); each request folds in 8 seed digests, asks
for 100 neighbours, scores 500 candidates (the `behaviour` feature) and finds the anchors of
20 page items. The reference, timed in the same run on the same requests, is the content
source's share of the same work: one hnswlib query of 200 on a graph of the same size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from feedflow.bench.machine import pct_ms
from operators.dedup import id_hash64
from serving.behaviour import BehaviourSpace

DIM, SEEDS, HITS, CANDIDATES, PAGE, REFERENCE_K = 64, 8, 100, 500, 20, 200


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": pct_ms(samples, 50), "p99_ms": pct_ms(samples, 99)}


def run(items: int, requests: int, seed: int = 0) -> dict[str, object]:
    """Build time and per-request timings (ms) of a space of `items` random vectors."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((DIM, DIM)).astype(np.float32)
    mixed = (rng.standard_normal((items, DIM)).astype(np.float32) ** 3) @ factors / DIM
    vectors = mixed.astype(np.float32)
    ids = [f"m{n}" for n in range(items)]
    started = time.monotonic()
    space = BehaviourSpace.of("bench.1", ids, vectors)
    build_s = time.monotonic() - started
    behaviour, reference = [], []
    for _ in range(requests):
        seeds = [id_hash64(ids[n]) for n in rng.integers(0, items, SEEDS)]
        candidates = [ids[n] for n in rng.integers(0, items, CANDIDATES)]
        t0 = time.perf_counter()
        match = space.match(seeds, HITS)
        assert match is not None
        match.features(candidates)
        for media_id in candidates[:PAGE]:
            match.anchor(media_id)
        t1 = time.perf_counter()
        space._index.query(match.point, REFERENCE_K)  # type: ignore[union-attr]
        t2 = time.perf_counter()
        behaviour.append(t1 - t0)
        reference.append(t2 - t1)
    return {
        "items": items,
        "requests": requests,
        "build_s": round(build_s, 1),
        "behaviour_per_request": _percentiles(behaviour),
        "reference_ann_query_k200": _percentiles(reference),
    }


def main() -> int:
    """Command-line entry: print the result as JSON (and write it to `--out`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=2_000)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = run(args.items, min(args.requests, 100_000))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
