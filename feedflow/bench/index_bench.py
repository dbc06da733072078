"""Index benchmark: build, size, snapshot load, k=500 retrieval and recall, publish → searchable.

Vectors are realistic, not uniform: the hashing encoder's outputs for a simulated catalogue
(Zipf-distributed tags and title words, 20 categories, one creator per ~50 items), computed
with the encoder's own token vectors. Queries are shaped like user vectors (the mean of 1-10
items from 1-2 topics). Retrieval is compared with brute-force numpy on the same vectors in
the same run; the two are timed in separate passes, because a brute-force scan between two
index queries evicts the graph from the CPU caches and would bill that to hnswlib.

Run: `python -m feedflow.bench.index_bench --quick` or `--sizes 1000000 --out out.json`;
`--m 12,16,24 --ef 500,800` sweeps (one build per M, one snapshot load per ef).
`run_index_bench()` is what `feedflow bench` calls. Pin `OPENBLAS_NUM_THREADS=1`, as serving
does, so the numpy reference runs on one thread like the index queries.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from feedflow.bench.machine import cpu_model
from kernel.settings import Settings
from operators.content import CONTENT_TYPES
from operators.encoders import FIELD_WEIGHTS, HashingEncoder
from state.redis_client import JOB, connect
from state.vector_index import Hit, HnswIndex

Matrix = npt.NDArray[np.float32]
K = 500
_DEFAULTS = Settings()  # the bench measures the configured index parameters by default
BUILD_STATS = "bench-build.json"
VECTORS = (
    "hashing-encoder outputs of a simulated catalogue (20 topics, Zipf tokens);"
    " queries: mean of 1-10 items from 1-2 topics"
)


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


def shaped_user_queries(
    items: Matrix, topics: npt.NDArray[Any], count: int, seed: int = 11
) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """Queries like user vectors: the normalised mean of 1-10 items from 1-2 favourite topics,
    and how many distinct topics the items of each query came from."""
    rng = np.random.default_rng(seed)
    by_topic = [np.flatnonzero(topics == t) for t in range(int(topics.max()) + 1)]
    out = np.empty((count, items.shape[1]), dtype=np.float32)
    mixed = np.empty(count, dtype=np.int64)
    for i in range(count):
        favourites = rng.choice(len(by_topic), rng.integers(1, 3), replace=False)
        pool = np.concatenate([by_topic[t] for t in favourites])
        chosen = rng.choice(pool, rng.integers(1, 11))
        mean = items[chosen].mean(axis=0)
        out[i] = mean / np.linalg.norm(mean)
        mixed[i] = len(np.unique(topics[chosen]))
    return out, mixed


def _pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


class _Samples(NamedTuple):
    """Per-call wall time and thread CPU time, in seconds.

    CPU time is what a call costs when it has a core to itself; on a shared machine the wall
    time's tail also holds the time the thread waited for one.
    """

    wall: list[float]
    cpu: list[float]


def _timed(samples: _Samples, started: tuple[float, float]) -> None:
    samples.wall.append(time.perf_counter() - started[0])
    samples.cpu.append(time.thread_time() - started[1])


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _latency(samples: _Samples) -> dict[str, float]:
    wall, cpu = [s * 1000 for s in samples.wall], [s * 1000 for s in samples.cpu]
    return {
        "p50_ms": round(_pct(wall, 50), 3),
        "p99_ms": round(_pct(wall, 99), 3),
        "cpu_p50_ms": round(_pct(cpu, 50), 3),
        "cpu_p99_ms": round(_pct(cpu, 99), 3),
    }


def _median_latency(passes: Sequence[_Samples]) -> dict[str, Any]:
    """Median over passes of each pass's percentiles, and every pass's P99 (the noise)."""
    each = [_latency(p) for p in passes]
    out: dict[str, Any] = {
        key: round(float(np.median([e[key] for e in each])), 3) for key in each[0]
    }
    out["p99_ms_passes"] = [e["p99_ms"] for e in each]
    return out


def _brute(items: Matrix, query: Matrix, k: int) -> npt.NDArray[Any]:
    scores = items @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


class _Exact(NamedTuple):
    kth: npt.NDArray[np.float64]  # each query's exact k-th best score
    latency: dict[str, float]


def _exact(items: Matrix, qs: Matrix, k: int) -> _Exact:
    kth, took = np.empty(len(qs)), _Samples([], [])
    for i, q in enumerate(qs):
        started = _clocks()
        truth = _brute(items, q, k)
        _timed(took, started)
        kth[i] = float(items[truth[-1]] @ q)
    return _Exact(kth, _latency(took))


def _recall_stats(recalls: npt.NDArray[np.float64]) -> dict[str, float]:
    if not len(recalls):
        return {"queries": 0}
    return {
        "queries": len(recalls),
        "mean": round(float(recalls.mean()), 4),
        "p5": round(float(np.percentile(recalls, 5)), 4),
        "min": round(float(recalls.min()), 4),
    }


def _recalls(hits: Sequence[Sequence[Hit]], exact: _Exact, k: int) -> npt.NDArray[np.float64]:
    # Tie-aware: any item scoring at least the exact k-th score is a correct answer.
    out = np.empty(len(hits))
    for i, (answer, kth) in enumerate(zip(hits, exact.kth - 1e-5, strict=True)):
        out[i] = min(k, sum(1 for _, score in answer if score >= kth)) / k
    return out


def _timed_pass(index: HnswIndex, qs: Matrix) -> tuple[_Samples, list[list[Hit]]]:
    took, hits = _Samples([], []), []
    for q in qs:
        started = _clocks()
        answer = index.query(q, K)
        _timed(took, started)
        hits.append(answer)
    return took, hits


def _build(
    items: Matrix, *, m: int, ef_construction: int, threads: int, into: Path
) -> dict[str, Any]:
    """Build an index of `items` in batches, as the writer does, and snapshot it `into`."""
    n, dim = items.shape
    ids = [str(i) for i in range(n)]
    index = HnswIndex(dim, m=m, ef_construction=ef_construction, threads=threads)
    started = time.perf_counter()
    for start in range(0, n, 50_000):
        index.upsert(ids[start : start + 50_000], items[start : start + 50_000])
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    index.save(into)
    save_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in into.iterdir())
    return {
        "items": n,
        "dim": dim,
        "m": m,
        "ef_construction": ef_construction,
        "build_threads": threads,
        "build_s": round(build_s, 2),
        "build_items_per_s": round(n / build_s),
        "snapshot_bytes_per_item": round(size / n, 1),
        "snapshot_save_s": round(save_s, 3),
    }


def _query_bench(
    snapshot: Path,
    dim: int,
    ef: int,
    qs: Matrix,
    mixed: npt.NDArray[Any],
    exact: _Exact,
    repeats: int,
) -> dict[str, Any]:
    """Load the snapshot with search depth `ef`; time `repeats` passes of single-thread queries."""
    started = time.perf_counter()
    index = HnswIndex.load(snapshot, dim, ef_search=ef)
    load_s = time.perf_counter() - started
    for q in qs[:50]:  # warm-up
        index.query(q, K)
    gc.collect()
    gc.freeze()  # as the serving process does after start-up
    try:
        passes: list[_Samples] = []
        hits: list[list[Hit]] = []
        for _ in range(max(1, repeats)):
            took, hits = _timed_pass(index, qs)
            passes.append(took)
    finally:
        gc.unfreeze()
    recalls = _recalls(hits, exact, K)
    stats = _recall_stats(recalls)
    return {
        "ef_search": ef,
        "snapshot_load_s": round(load_s, 3),
        "queries": len(qs),
        "query_threads": 1,
        "hnsw_k500": _median_latency(passes),
        "numpy_brute_k500": exact.latency,
        "recall_at_500": stats["mean"],
        "recall_at_500_p5": stats["p5"],
        "recall_at_500_min": stats["min"],
        "recall_at_500_by_query_topics": {
            str(t): _recall_stats(recalls[mixed == t]) for t in sorted(set(mixed.tolist()))
        },
    }


def _snapshot(
    items: Matrix, *, m: int, ef_construction: int, threads: int, at: Path
) -> dict[str, Any]:
    """Build into `at`, or reuse the snapshot a previous run left there (same catalogue)."""
    stats_file = at / BUILD_STATS
    if stats_file.exists():
        reused: dict[str, Any] = orjson.loads(stats_file.read_bytes())
        return {**reused, "snapshot_reused": True}
    at.mkdir(parents=True, exist_ok=True)
    stats = _build(items, m=m, ef_construction=ef_construction, threads=threads, into=at)
    stats_file.write_bytes(orjson.dumps(stats))
    return stats


def bench_grid(
    n: int,
    *,
    dim: int,
    ms: Sequence[int],
    efs: Sequence[int],
    ef_construction: int,
    queries: int,
    threads: int,
    repeats: int = 3,
    keep: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per (M, ef) over one catalogue of `n` items: one build per M, one load per ef.

    With `keep`, snapshots stay in (and are reused from) a folder per parameter set, so
    latency can be measured again without rebuilding.
    """
    items, topics = catalogue(n, dim)
    qs, mixed = shaped_user_queries(items, topics, queries)
    exact = _exact(items, qs, K)
    rows = []
    for m in ms:
        if keep is None:
            at = Path(tempfile.mkdtemp(prefix="ff-bench-"))
        else:
            at = keep / f"n{n}-d{dim}-m{m}-efc{ef_construction}"
        try:
            built = _snapshot(items, m=m, ef_construction=ef_construction, threads=threads, at=at)
            for ef in efs:
                row = _query_bench(at, dim, ef, qs, mixed, exact, repeats)
                rows.append({**built, **row, "vectors": VECTORS})
        finally:
            if keep is None:
                shutil.rmtree(at, ignore_errors=True)
    return rows


def bench_size(
    n: int,
    *,
    dim: int,
    m: int,
    ef_construction: int,
    ef: int,
    queries: int,
    threads: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """Build, snapshot, load and query one index of `n` items."""
    return bench_grid(
        n,
        dim=dim,
        ms=[m],
        efs=[ef],
        ef_construction=ef_construction,
        queries=queries,
        threads=threads,
        repeats=repeats,
    )[0]


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
    from operators.contracts import decode_media
    from state.index_keys import IndexKeys
    from state.index_reader import IndexReader
    from state.index_replica import IndexParams
    from state.index_writer import Change, IndexWriter
    from state.snapshots import DirSnapshotStore

    client = connect(redis_url, JOB)
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
            writer.apply([Change(event, raw, 0, n)])
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
    client, arrivals = connect(redis_url, JOB), _Arrivals()
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
    dim: int = _DEFAULTS.embedding_dim,
    ms: Sequence[int] = (_DEFAULTS.index_m,),
    ef_construction: int = _DEFAULTS.index_ef_construction,
    efs: Sequence[int] = (_DEFAULTS.index_ef_search,),
    threads: int = 2,
    repeats: int = 3,
    keep: Path | None = None,
    redis_url: str | None = None,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Every index figure; `quick` shrinks sizes and query counts to run in well under a minute."""
    if quick:
        sizes, queries, repeats = [min(s, 20_000) for s in sizes], min(queries, 200), 1
    report: dict[str, Any] = {"retrieval": []}
    for n in sizes:
        report["retrieval"] += bench_grid(
            n,
            dim=dim,
            ms=ms,
            efs=efs,
            ef_construction=ef_construction,
            queries=queries,
            threads=threads,
            repeats=repeats,
            keep=keep,
        )
    count = 100 if quick else 500
    if redis_url:
        report["freshness_in_process"] = bench_freshness(redis_url, count)
    if redis_url and bootstrap:
        report["freshness_kafka"] = bench_freshness_kafka(bootstrap, redis_url, count)
    return report


def _environment(blas_threads: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "hnswlib": version("hnswlib"),
        "numpy": np.__version__,
        "OPENBLAS_NUM_THREADS": blas_threads,
    }


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m feedflow.bench.index_bench`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", type=_ints, default=[1_000_000], help="comma-separated item counts")
    p.add_argument("--quick", action="store_true", help="20k items, 200 queries")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="timed query passes; medians reported")
    p.add_argument("--m", type=_ints, default=[_DEFAULTS.index_m], help="comma-separated M")
    p.add_argument("--ef-construction", type=int, default=_DEFAULTS.index_ef_construction)
    p.add_argument("--ef", type=_ints, default=[_DEFAULTS.index_ef_search], help="comma-separated")
    p.add_argument("--threads", type=int, default=2, help="build threads (queries use one)")
    p.add_argument("--keep", type=Path, help="keep (and reuse) built snapshots in this folder")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS")
    if blas_threads != "1":
        sys.stderr.write(
            "warning: OPENBLAS_NUM_THREADS is not 1; the numpy reference may use more cores\n"
        )
    report = {
        "environment": _environment(blas_threads),
        **run_index_bench(
            args.sizes,
            quick=args.quick,
            queries=args.queries,
            ms=args.m,
            ef_construction=args.ef_construction,
            efs=args.ef,
            threads=args.threads,
            repeats=args.repeats,
            keep=args.keep,
            redis_url=args.redis_url,
            bootstrap=args.bootstrap,
        ),
    }
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    sys.stdout.write(text.decode() + "\n")
    if args.out:
        Path(args.out).write_bytes(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
