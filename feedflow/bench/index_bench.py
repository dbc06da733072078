"""Index benchmark: build, size, snapshot load, k=500 retrieval and recall, publish → searchable.

Vectors are realistic, not uniform: the hashing encoder's outputs for a simulated catalogue
(Zipf-distributed tags and title words, 20 categories, one creator per ~50 items), computed
with the encoder's own token vectors. Retrieval is compared with brute-force numpy on the
same vectors in the same run.

Run: `python -m feedflow.bench.index_bench --quick` or `--sizes 1000000 --json out.json`;
`run_index_bench()` is what `feedflow bench` calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from operators.content import CONTENT_TYPES
from operators.encoders import FIELD_WEIGHTS, HashingEncoder
from state.vector_index import HnswIndex

Matrix = npt.NDArray[np.float32]
K = 500


def _zipf_ids(rng: np.random.Generator, vocab: int, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    return (rng.zipf(1.3, size=shape) - 1) % vocab


def catalogue_vectors(n: int, dim: int = 64, seed: int = 7) -> Matrix:
    """Encoder outputs of `n` simulated items (the HashingEncoder formula, vectorised)."""
    return catalogue(n, dim, seed)[0]


def catalogue(n: int, dim: int = 64, seed: int = 7) -> tuple[Matrix, npt.NDArray[Any]]:
    """Vectors of `n` simulated items and each item's category (its topic)."""
    enc, rng = HashingEncoder(dim), np.random.default_rng(seed)
    table = {
        "tag": np.stack([enc.token_vector(f"w:{i}") for i in range(2000)]),
        "title": np.stack([enc.token_vector(f"w:{i}") for i in range(8000)]),
        "category": np.stack([enc.token_vector(f"c:cat{i}") for i in range(20)]),
        "creator": np.stack([enc.token_vector(f"u:c{i}") for i in range(max(1, n // 50))]),
        "content_type": np.stack([enc.token_vector(f"t:{t}") for t in CONTENT_TYPES]),
        "language": np.stack([enc.token_vector(f"l:{x}") for x in ("en", "es", "de", "fr")]),
    }
    out = np.empty((n, dim), dtype=np.float32)
    topics = np.empty(n, dtype=np.int64)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        acc = np.zeros((m, dim), dtype=np.float32)
        topic = rng.integers(0, 20, m)  # items of a category share a slice of the vocabulary
        topics[start : start + m] = topic
        draws = {
            "tag": (_zipf_ids(rng, 100, (m, 3)) + topic[:, None] * 100) % 2000,
            "title": (_zipf_ids(rng, 400, (m, 5)) + topic[:, None] * 400) % 8000,
            "category": topic[:, None],
            "creator": rng.integers(0, len(table["creator"]), (m, 1)),
            "content_type": rng.integers(0, 2, (m, 1)),
            "language": rng.choice(4, (m, 1), p=[0.7, 0.15, 0.1, 0.05]),
        }
        for field, ids in draws.items():
            tokens = ids.shape[1]
            acc += (FIELD_WEIGHTS[field] / np.sqrt(tokens)) * table[field][ids].sum(axis=1)
        out[start : start + m] = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    return out, topics


def user_queries(items: Matrix, topics: npt.NDArray[Any], count: int, seed: int = 11) -> Matrix:
    """Queries like user vectors: the normalised mean of 1-10 items from 1-2 favourite topics."""
    rng = np.random.default_rng(seed)
    by_topic = [np.flatnonzero(topics == t) for t in range(int(topics.max()) + 1)]
    out = np.empty((count, items.shape[1]), dtype=np.float32)
    for i in range(count):
        favourites = rng.choice(len(by_topic), rng.integers(1, 3), replace=False)
        pool = np.concatenate([by_topic[t] for t in favourites])
        mean = items[rng.choice(pool, rng.integers(1, 11))].mean(axis=0)
        out[i] = mean / np.linalg.norm(mean)
    return out


def _pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def _latency(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"p50_ms": round(_pct(ms, 50), 3), "p99_ms": round(_pct(ms, 99), 3)}


def _brute(items: Matrix, query: Matrix, k: int) -> npt.NDArray[Any]:
    scores = items @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def bench_size(
    n: int, *, dim: int, m: int, ef_construction: int, ef: int, queries: int, threads: int
) -> dict[str, Any]:
    """Build, snapshot, load and query one index of `n` items."""
    items, topics = catalogue(n, dim)
    ids = [str(i) for i in range(n)]
    index = HnswIndex(dim, m=m, ef_construction=ef_construction, ef_search=ef, threads=threads)
    started = time.perf_counter()
    for start in range(0, n, 50_000):
        index.upsert(ids[start : start + 50_000], items[start : start + 50_000])
    build_s = time.perf_counter() - started
    tmp = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    try:
        started = time.perf_counter()
        index.save(tmp)
        save_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in tmp.iterdir())
        started = time.perf_counter()
        loaded = HnswIndex.load(tmp, dim, ef_search=ef)
        load_s = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del index
    qs = user_queries(items, topics, queries)
    return {
        "items": n,
        "dim": dim,
        "m": m,
        "ef_construction": ef_construction,
        "ef_search": ef,
        "build_s": round(build_s, 2),
        "build_items_per_s": round(n / build_s),
        "snapshot_bytes_per_item": round(size / n, 1),
        "snapshot_save_s": round(save_s, 3),
        "snapshot_load_s": round(load_s, 3),
        **_query_bench(loaded, items, qs),
    }


def _query_bench(index: HnswIndex, items: Matrix, qs: Matrix) -> dict[str, Any]:
    for q in qs[:20]:  # warm-up
        index.query(q, K)
    hnsw_s, brute_s, recalls = [], [], []
    for q in qs:
        t0 = time.perf_counter()
        hits = index.query(q, K)
        hnsw_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        truth = _brute(items, q, K)
        brute_s.append(time.perf_counter() - t0)
        # Tie-aware: any item scoring at least the exact 500th score is a correct answer.
        kth = float(items[truth[-1]] @ q) - 1e-5
        recalls.append(min(K, sum(1 for _, score in hits if score >= kth)) / K)
    return {
        "queries": len(qs),
        "vectors": "hashing-encoder outputs of a simulated catalogue (20 topics, Zipf tokens);"
        " queries: mean of 1-10 items from 1-2 topics",
        "hnsw_k500": _latency(hnsw_s),
        "numpy_brute_k500": _latency(brute_s),
        "recall_at_500": round(float(np.mean(recalls)), 4),
        "recall_at_500_min": round(float(np.min(recalls)), 4),
    }


class _Arrivals:
    """Records when each published item became queryable at a reader."""

    def __init__(self) -> None:
        self.latency_s: dict[str, float] = {}
        self.done = threading.Event()
        self.expected = 0

    def __call__(self, entries: Sequence[Any], now: float) -> None:
        for entry in entries:
            record = entry.record
            if entry.op == "add" and record.media_id.startswith("bench-"):
                self.latency_s[record.media_id] = now - record.published_at / 1000
        if len(self.latency_s) >= self.expected:
            self.done.set()


def _event_bytes(media_id: str, n: int) -> bytes:
    from operators.contracts import MediaPublished, encode

    return encode(
        MediaPublished(
            media_id=media_id,
            creator_id=f"c{n % 40}",
            content_type="VIDEO",
            title=f"bench item {n} jazz session",
            category=f"cat{n % 20}",
            tags=[f"t{n % 30}", "bench"],
            language="en",
            duration_s=60.0,
            published_at=time.time_ns() // 1_000_000,
        )
    )


def bench_freshness(redis_url: str, items: int = 200, interval_s: float = 0.01) -> dict[str, Any]:
    """Writer → Redis log → reader thread, in one process: publish → searchable latency."""
    import redis

    from operators.contracts import decode_media
    from state.index_keys import IndexKeys
    from state.index_reader import IndexReader
    from state.index_replica import IndexParams
    from state.index_writer import Change, IndexWriter
    from state.snapshots import DirSnapshotStore

    client = redis.Redis.from_url(redis_url)
    keys, tmp = IndexKeys(f"bench{time.time_ns()}"), Path(tempfile.mkdtemp(prefix="ff-bench-"))
    store, params, arrivals = DirSnapshotStore(tmp), IndexParams(), _Arrivals()
    arrivals.expected = items
    try:
        writer = IndexWriter.open(client, store, params, keys, "hashing-v1", 64)
        reader = IndexReader(client, store, keys, params, block_ms=100, listener=arrivals)
        reader.start()
        for n in range(items):
            raw = _event_bytes(f"bench-{n}", n)
            event = decode_media(raw)
            assert not hasattr(event, "reason")
            writer.apply([Change(event, raw, 0, n)])  # type: ignore[arg-type]
            time.sleep(interval_s)
        arrivals.done.wait(10)
        reader.stop()
        return _freshness_report("in-process writer → Redis stream → reader thread", arrivals)
    finally:
        _drop_prefix(client, keys.prefix)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_prefix(client: Any, prefix: str) -> None:
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.unlink(key)


def _freshness_report(path: str, arrivals: _Arrivals) -> dict[str, Any]:
    lat = list(arrivals.latency_s.values())
    return {
        "path": path,
        "published": arrivals.expected,
        "searchable": len(lat),
        "p50_s": round(_pct(lat, 50), 4),
        "p99_s": round(_pct(lat, 99), 4),
        "max_s": round(max(lat), 4) if lat else None,
    }


def bench_freshness_kafka(
    bootstrap: str, redis_url: str, items: int = 200, rate: float = 50.0
) -> dict[str, Any]:
    """Kafka → the content flow (a real `bytewax.run` process) → Redis → a reader."""
    import subprocess

    import redis
    from confluent_kafka import Producer

    from operators.contracts import TOPIC_MEDIA
    from state.index_reader import IndexReader
    from state.snapshots import DirSnapshotStore

    tmp = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDIS_URL": redis_url}
    env["FEEDFLOW_STATE_DIR"] = str(tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.content:build_flow()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client, arrivals = redis.Redis.from_url(redis_url), _Arrivals()
    arrivals.expected = items
    reader = IndexReader(client, DirSnapshotStore(tmp / "index"), block_ms=100, listener=arrivals)
    try:
        deadline = time.monotonic() + 60
        while not reader.load() and time.monotonic() < deadline:
            time.sleep(0.2)
        reader.start()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        run_id = time.time_ns()
        for n in range(items):
            media_id = f"bench-{run_id}-{n}"
            producer.produce(TOPIC_MEDIA, key=media_id, value=_event_bytes(media_id, n))
            producer.poll(0)
            time.sleep(1 / rate)
        producer.flush(10)
        arrivals.done.wait(30)
        return _freshness_report("Kafka → content flow process → Redis stream → reader", arrivals)
    finally:
        reader.stop()
        proc.terminate()
        proc.wait(20)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run_index_bench(
    sizes: Sequence[int] = (1_000_000,),
    *,
    quick: bool = False,
    queries: int = 1000,
    dim: int = 64,
    m: int = 16,
    ef_construction: int = 200,
    ef: int = 800,
    threads: int = 2,
    redis_url: str | None = None,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Every index figure; `quick` shrinks sizes and query counts to run in well under a minute."""
    if quick:
        sizes, queries = [min(s, 20_000) for s in sizes], min(queries, 200)
    report: dict[str, Any] = {
        "retrieval": [
            bench_size(
                n,
                dim=dim,
                m=m,
                ef_construction=ef_construction,
                ef=ef,
                queries=queries,
                threads=threads,
            )
            for n in sizes
        ]
    }
    count = 100 if quick else 500
    if redis_url:
        report["freshness_in_process"] = bench_freshness(redis_url, count)
    if redis_url and bootstrap:
        report["freshness_kafka"] = bench_freshness_kafka(bootstrap, redis_url, count)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m feedflow.bench.index_bench`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", default="1000000", help="comma-separated item counts")
    p.add_argument("--quick", action="store_true", help="20k items, 200 queries")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=800)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--json", help="also write the report to this file")
    args = p.parse_args(argv)
    report = run_index_bench(
        [int(s) for s in args.sizes.split(",")],
        quick=args.quick,
        queries=args.queries,
        m=args.m,
        ef_construction=args.ef_construction,
        ef=args.ef,
        redis_url=args.redis_url,
        bootstrap=args.bootstrap,
    )
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    sys.stdout.write(text.decode() + "\n")
    if args.json:
        Path(args.json).write_bytes(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
