"""Publish → searchable while the index writer snapshots and compacts (issue: the writer never
stalls freshness).

One process holds the writer (opened on a snapshot of `--items` items); a reader runs in a
process of its own, as a serving replica does. New items are published at `--rate` per second
for a while in each phase, and each one's publish → searchable latency is taken at the reader:

1. quiet: no snapshot running (the reference of the same run);
2. snapshots: one forked snapshot child after another, for the same time;
3. compaction: `--removed` of the items are removed, then the writer's next tick starts the
   compacted snapshot in a child; publishing goes on until the writer has adopted the
   compacted snapshot and the reader has reloaded it (both pauses reported).

The world (vectors, records) is the serving benchmark's, its snapshot cached under
`--cache`; each run works on a copy, as the writer replaces snapshots.

    python -m feedflow.bench.index_maintenance --items 1000000 --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from feedflow.bench.index_bench import _Arrivals, _drop_prefix, _event_bytes, _pct
from feedflow.bench.machine import cpu_model, rss_mib
from feedflow.bench.serving_world import ensure_snapshot, media_id, register
from feedflow.stack import LocalStack
from operators.contracts import MediaPublished, decode_media, encode
from state.index_keys import IndexKeys
from state.index_reader import IndexReader
from state.index_replica import IndexParams
from state.index_writer import Change, IndexWriter
from state.redis_client import JOB, LOG_READER, connect
from state.snapshots import CURRENT, DirSnapshotStore

TICK_S = 0.5


def _copy_snapshot(cache: Path, version: str, into: Path) -> None:
    """The cached newest snapshot of `version` as the only one of a fresh store at `into`."""
    found = DirSnapshotStore(cache).latest(version)
    assert found is not None
    manifest, path = found
    target = into / version / manifest.name
    shutil.copytree(path, target)
    (into / version / CURRENT).write_text(manifest.name)


class _Publisher:
    """Publishes `bench-` items through the writer at a pace, ticking it as the sink does."""

    def __init__(self, writer: IndexWriter, arrivals: _Arrivals, rate: float) -> None:
        self.writer, self.arrivals, self.rate = writer, arrivals, rate
        self.n = 0
        self.offset = 10**9
        self.last_tick = 0.0
        self.ticks: list[float] = []  # seconds each tick took

    def run(self, until: Callable[[], bool], limit_s: float) -> list[str]:
        """Publish until `until()` or `limit_s`; returns the ids published."""
        ids: list[str] = []
        deadline = time.monotonic() + limit_s
        step = 1.0 / self.rate
        next_at = time.monotonic()
        while not until() and time.monotonic() < deadline:
            # Stamped when it was due, not when sent: an item that falls due while the writer
            # pauses counts the pause (as it would waiting in Kafka).
            due_ms = int((time.time() - (time.monotonic() - next_at)) * 1000)
            mid = f"bench-{self.n}"
            event = msgspec.structs.replace(
                decode_media(_event_bytes(mid, self.n)), published_at=due_ms
            )
            raw = encode(event)
            assert isinstance(event, MediaPublished)
            self.writer.apply([Change(event, raw, 0, self.offset + self.n)])
            ids.append(mid)
            self.n += 1
            now = time.monotonic()
            if now - self.last_tick >= TICK_S:
                self.writer.tick()
                self.ticks.append(time.monotonic() - now)
                self.last_tick = time.monotonic()
            next_at += step
            time.sleep(max(0.0, next_at - time.monotonic()))
        return ids


class _RemoteReader:
    """An index reader in its own process, reporting what became searchable and when."""

    def __init__(self, redis_url: str, prefix: str, root: Path, params: IndexParams) -> None:
        me = [sys.executable, "-m", "feedflow.bench.index_maintenance", "--reader"]
        argv = [*me, redis_url, prefix, str(root), str(params.m), str(params.ef_construction)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.arrivals = _Arrivals()
        self.arrivals.expected = 10**9
        self.deleted = -1
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match line.split():
                case ["deleted", count]:
                    self.deleted = int(count)
                case [media, latency] if media.startswith("bench-"):
                    self.arrivals.latency_s[media] = float(latency)
                case _:  # anything else a library printed
                    pass

    def status(self) -> dict[str, int]:
        """What the reader reported last (-1 before it loaded)."""
        return {"deleted": self.deleted}

    def stop(self) -> None:
        """Stop the reader process."""
        self.proc.terminate()
        self.proc.wait(30)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _reader_main(redis_url: str, prefix: str, root: str, m: int, ef_construction: int) -> int:
    """The reader process: a line per searchable `bench-` item, and its deleted count."""
    params = IndexParams(m=m, ef_construction=ef_construction)

    lock = threading.Lock()  # whole lines from both threads, never interleaved

    def say(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def report(entries: Sequence[Any], now: float) -> None:
        for entry in entries:
            record = entry.record
            if entry.op == "add" and record.media_id.startswith("bench-"):
                say(f"{record.media_id} {now - record.published_at / 1000}")

    client = connect(redis_url, LOG_READER)
    reader = IndexReader(client, DirSnapshotStore(root), IndexKeys(prefix), params,
                         block_ms=100, listener=report)  # fmt: skip
    reader.start()
    while True:
        say(f"deleted {reader.status().get('deleted', -1)}")
        time.sleep(0.2)


def _latencies(arrivals: _Arrivals, ids: Sequence[str], wait_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(i in arrivals.latency_s for i in ids):
        time.sleep(0.1)
    lat = [arrivals.latency_s[i] for i in ids if i in arrivals.latency_s]
    return {
        "published": len(ids),
        "searchable": len(lat),
        "p50_s": round(_pct(lat, 50), 4) if lat else None,
        "p99_s": round(_pct(lat, 99), 4) if lat else None,
        "max_s": round(max(lat), 4) if lat else None,
    }


def _remove(writer: IndexWriter, count: int, batch: int = 5000) -> float:
    """Remove the first `count` items of the world; seconds it took."""
    started = time.perf_counter()
    for start in range(0, count, batch):
        changes = []
        for i in range(start, min(start + batch, count)):
            event = MediaPublished(media_id=media_id(i), status="removed")
            changes.append(Change(event, encode(event), 1, 10**8 + i))  # newer than the world
        writer.apply(changes)
    return time.perf_counter() - started


def _snapshot_phase(
    writer: IndexWriter, pub: _Publisher, arrivals: _Arrivals, phase_s: float
) -> dict[str, Any]:
    """Publish while snapshot children run back to back."""
    started = [0]
    pub.ticks.clear()

    def next_snapshot() -> bool:
        if writer.settle(0.0):  # none running: the last one's result is taken
            writer.start_snapshot()
            started[0] += 1
        return False

    ids = pub.run(next_snapshot, phase_s)
    writer.settle(float("inf"))
    slowest = round(max(pub.ticks), 3) if pub.ticks else None
    return {**_latencies(arrivals, ids), "completed": started[0], "slowest_tick_s": slowest}


def _compaction_phase(
    writer: IndexWriter, reader: _RemoteReader, pub: _Publisher, arrivals: _Arrivals, count: int
) -> tuple[float, dict[str, Any]]:
    """Remove `count` items, then publish until the writer and the reader adopted the
    compacted snapshot; (seconds the removal took, latencies meanwhile)."""
    log(f"removing {count} items")
    removal_s = round(_remove(writer, count), 1)
    deadline = time.monotonic() + 120
    while reader.status()["deleted"] < count and time.monotonic() < deadline:
        time.sleep(0.2)
    log("compaction in a child, publishing until the writer and the reader adopted it")
    pub.ticks.clear()
    t0 = time.perf_counter()
    writer.tick()  # starts the compaction child
    adopted: list[float] = []
    pause = [0.0]

    def adopted_by_both() -> bool:
        if not adopted:
            before = time.perf_counter()
            if writer.settle(0.0):  # the call that adopts the compacted snapshot
                pause[0] = time.perf_counter() - before
                adopted.append(time.perf_counter() - t0)
        return bool(adopted) and reader.status()["deleted"] == 0

    ids = pub.run(adopted_by_both, 3600.0)
    return removal_s, {
        **_latencies(arrivals, ids),
        "writer_adopted_after_s": round(adopted[0], 1) if adopted else None,
        "writer_adoption_pause_s": round(pause[0], 2),
        "reader_adopted_after_s": round(time.perf_counter() - t0, 1),
        "slowest_tick_s": round(max(pub.ticks), 3) if pub.ticks else None,
    }


def run(
    redis_url: str,
    items: int,
    cache: Path,
    params: IndexParams,
    rate: float = 20.0,
    phase_s: float = 30.0,
    removed: float = 0.25,
    seed: int = 7,
    background: bool = True,
) -> dict[str, Any]:
    """Measure the three phases; a JSON-ready summary (`background=False`: the writer
    snapshots and compacts on its own thread, the reference)."""
    result: dict[str, Any] = {"items": items, "rate": rate, "phase_s": phase_s}
    result["snapshots_in"] = "forked child" if background else "writer thread"
    result["params"] = {"m": params.m, "ef_construction": params.ef_construction}
    info, built = ensure_snapshot(cache, items, seed, params)
    result["world"] = built
    client = connect(redis_url, JOB)
    keys = IndexKeys(f"bench{time.time_ns()}")
    tmp = Path(tempfile.mkdtemp(prefix="ff-maint-"))
    reader: _RemoteReader | None = None
    try:
        _copy_snapshot(cache, info.version, tmp)
        register(client, keys, info)
        store = DirSnapshotStore(tmp)
        started = time.perf_counter()
        writer = IndexWriter.open(
            client, store, params, keys, "hashing-v1", info.dim, background=background
        )
        result["writer_open_s"] = round(time.perf_counter() - started, 2)
        reader = _RemoteReader(redis_url, keys.prefix, tmp, params)
        arrivals = reader.arrivals
        deadline = time.monotonic() + 300
        while reader.status()["deleted"] < 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        pub = _Publisher(writer, arrivals, rate)
        log("quiet")
        result["quiet"] = _latencies(arrivals, pub.run(lambda: False, phase_s))

        log("snapshots back to back")
        result["snapshots"] = _snapshot_phase(writer, pub, arrivals, phase_s)
        result["removal_s"], result["compaction"] = _compaction_phase(
            writer, reader, pub, arrivals, int(items * removed)
        )
        result["rss_mib"] = {"writer": rss_mib(os.getpid()), "reader": rss_mib(reader.proc.pid)}
        writer.close()
        return result
    finally:
        if reader is not None:
            reader.stop()
        _drop_prefix(client, keys.prefix)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def log(message: str) -> None:
    """A progress line on stderr."""
    sys.stderr.write(f"[index-maintenance] {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: progress on stderr, the JSON summary on stdout."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--reader"]:
        url, prefix, root, m, ef = args_in[1:6]
        return _reader_main(url, prefix, root, int(m), int(ef))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=20.0, help="items published per second")
    parser.add_argument("--phase-s", type=float, default=30.0)
    parser.add_argument("--removed", type=float, default=0.25, help="share removed to compact")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=Path(".feedflow/bench/maintenance-world"))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--on-thread", action="store_true", help="the reference: snapshots on the writer thread"
    )
    args = parser.parse_args(args_in)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the private stack too
    params = IndexParams(
        m=args.m,
        ef_construction=args.ef_construction,
        snapshot_every_s=3600.0,
        threads=2,
    )
    with tempfile.TemporaryDirectory(prefix="ff-maint-stack-") as state:
        stack = LocalStack(Path(state), partitions=1)
        info = stack.up()
        try:
            result = run(info.redis_url, args.items, args.cache, params, args.rate,
                         args.phase_s, args.removed, background=not args.on_thread)  # fmt: skip
        finally:
            stack.down()
    result["machine"] = {"cpu": cpu_model(), "load": [round(x, 2) for x in os.getloadavg()]}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
