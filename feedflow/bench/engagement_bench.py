"""Engagement flow benchmark: ingest per worker, event → Redis freshness, bytes per user.

Each figure is measured next to a simple reference from the same run, on the same private
stack (a Tansu broker and a redis-server on loopback, started here and stopped at the end),
because the machine is shared and noisy and ratios hold better than absolute numbers:

1. Ingest: N simulator events with historical timestamps (the simulator lands within a
   few per cent of the N asked for) are preloaded into a broker with several partitions,
   the catalogue is loaded through the content flow, then one `feedflow flow engagement`
   process (one worker, recovery on, 5 s snapshots; again with `--no-recovery`) is started
   and timed until a sentinel event appended last on every partition (explicit partition)
   has produced its user's feature record in Redis.
   Reported with and without process start-up (first feature write → done), and per CPU
   second of the flow process. Reference: one bare confluent-kafka consumer reading and
   decoding the same topic end to end (the broker/decoding ceiling).
2. Freshness: simulator traffic paced at `rate` events/s by `feedflow simulate` in a
   separate process, the flow running with recovery on (in full mode again with
   `--no-recovery`, on a stack of its own: the difference is what the snapshots cost);
   every 50 ms a probe `media_liked` with ts = now is produced for a dedicated probe user,
   and the time until Redis holds that user's record stamped with the probe's ts is
   recorded (see :mod:`feedflow.bench.freshness_probe`). Reference: the same probes'
   produce → fetched by a bare consumer with the flows' consumer settings (the broker round
   trip), measured at the same time.
3. Bytes: `MEMORY USAGE` and the raw value length of sampled `ff:{u:*}` keys after the
   ingest run; operator state per user as the flow stored it (the user step's latest
   snapshot in the recovery store) and as the logic benchmark measures it (pickled
   `UserEngagement.snapshot()`, :mod:`feedflow.bench.engagement_logic`).

Run: `python -m feedflow.bench.engagement_bench [--quick] [--out FILE]` (progress on stderr,
the summary as JSON on stdout). `run_engagement_bench()` is what `feedflow bench` calls.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from feedflow.bench import engagement_logic
from feedflow.bench.engagement_report import budget_rows, markdown_table
from feedflow.bench.flow_harness import (
    BenchError,
    FlowProcess,
    catalogue_ids,
    clear_features,
    count_keys,
    engagement_payload,
    quantiles,
    read_all,
    redis_value_sizes,
    wait_catalogue,
    wait_for,
)
from feedflow.bench.freshness_probe import Prober
from feedflow.bench.machine import cpu_model
from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import LocalStack, StackInfo
from kernel.settings import Settings
from operators.contracts import TOPIC_ENGAGEMENT
from state.feature_store import USER, feature_key
from state.redis_client import JOB, RedisClient, connect

START_MS = 1_600_000_000_000  # historical on purpose: preloaded traffic is a replay
SENTINEL = "bench-sentinel-"


@dataclass(frozen=True)
class BenchConfig:
    """What one run measures; `for_mode` gives the defaults of full and quick runs."""

    quick: bool
    events: int
    rate: int
    probes: int
    users: int
    items: int
    partitions: int = 2
    seed: int = 5
    probe_interval_s: float = 0.05
    probe_timeout_s: float = 5.0
    warmup_s: float = 10.0
    redis_sample: int = 2000
    no_recovery: bool = True
    freshness_no_recovery: bool = True

    @classmethod
    def for_mode(cls, quick: bool, **overrides: Any) -> BenchConfig:
        """The configuration of a quick or a full run; `overrides` that are not None win."""
        base: dict[str, Any] = (
            {"events": 30_000, "rate": 5000, "probes": 60, "users": 2000, "items": 1000}
            | {"warmup_s": 3.0, "redis_sample": 500, "freshness_no_recovery": False}
            if quick
            else {"events": 320_000, "rate": 5000, "probes": 1000, "users": 20_000, "items": 5000}
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(quick=quick, **base)


class _Log:
    """Progress lines on stderr; also samples the 1-minute load average along the way."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.loads = [os.getloadavg()[0]]

    def __call__(self, message: str) -> None:
        self.loads.append(os.getloadavg()[0])
        sys.stderr.write(f"[engagement-bench {time.perf_counter() - self.t0:6.1f}s] {message}\n")
        sys.stderr.flush()


def _flow_env(stack: StackInfo) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "REDIS_URL": stack.redis_url,
        "FEEDFLOW_SNAPSHOT_INTERVAL_S": str(Settings().snapshot_interval_s),
    }


def preload(stack: StackInfo, cfg: BenchConfig) -> dict[str, Any]:
    """Publish the catalogue and N historical events, then one sentinel per partition."""
    sim_cfg = SimConfig(
        users=cfg.users,
        items=cfg.items,
        rate=cfg.events / 10,
        duration_s=10,
        seed=cfg.seed,
        start_ms=START_MS,
    )
    sim = Simulation(sim_cfg, now_ms=START_MS)
    summary = sim.run(KafkaSink(stack.bootstrap))
    media = sim.catalogue.items[0].media_id
    producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 0})
    sentinels = [f"{SENTINEL}{p}" for p in range(cfg.partitions)]
    for p, user in enumerate(sentinels):
        payload = engagement_payload(f"{user}-event", user, media, summary.end_ms)
        producer.produce(TOPIC_ENGAGEMENT, payload, user, partition=p)
    if producer.flush(30):
        raise BenchError("preload: sentinel events were not delivered")
    del producer
    gc.collect()  # librdkafka clients live until collected; stop them before the broker goes
    return {
        "events": summary.topics[TOPIC_ENGAGEMENT] + len(sentinels),
        "users": summary.users,
        "catalogue": summary.media["initial"] + summary.media["published"],
        "sentinels": sentinels,
        "simulated_hours": summary.simulated_hours,
    }


def load_catalogue(stack: StackInfo, work: Path, client: RedisClient, items: int) -> None:
    """Run the content flow until the item store holds the catalogue, then stop it."""
    content = FlowProcess.start(
        "content", work / "content", _flow_env(stack), "flow", "content", "--no-recovery"
    )
    try:
        wait_catalogue(client, items, 120, [content])
    finally:
        content.stop()


def timed_flow_run(
    stack: StackInfo,
    run_dir: Path,
    client: RedisClient,
    pre: dict[str, Any],
    recovery: bool,
    *extra_args: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start the engagement flow on the preloaded topic; time it until every sentinel lands.

    `extra_args` go to `feedflow flow engagement` (`--processes 2` runs a cluster: CPU is
    then the supervisor's and its members'); `env` adds to the flow's environment."""
    clear_features(client)
    baseline = int(client.dbsize())
    sentinel_keys = [feature_key(USER, s) for s in pre["sentinels"]]
    memory_before = int(client.info("memory")["used_memory"])
    extra = (*extra_args, *(() if recovery else ("--no-recovery",)))
    flow_env = _flow_env(stack) | (env or {})
    flow = FlowProcess.start("engagement", run_dir, flow_env, "flow", "engagement", *extra)
    first: list[float] = []

    def done() -> bool:
        pipe = client.pipeline(transaction=False)
        pipe.dbsize()
        pipe.exists(*sentinel_keys)
        size, found = pipe.execute()
        if not first and size > baseline:
            first.extend((time.perf_counter(), flow.cpu_s()))
        return bool(found == len(sentinel_keys))

    try:
        wait_for("every sentinel's features", done, max(120.0, pre["events"] / 1000), [flow])
        end, cpu_s = time.perf_counter(), flow.cpu_s()
        if recovery:  # the user step's state is in the store after the next epoch closes
            store = run_dir / "recovery" / "engagement"
            wait_for("a snapshot of the user step", lambda: _snapshots(store) > 0,
                     Settings().snapshot_interval_s + 30, [flow])  # fmt: skip
    finally:
        flow.stop()
    n, total, steady = pre["events"], end - flow.started, end - first[0]
    return {
        "recovery": recovery,
        "seconds_total": round(total, 3),
        "seconds_steady": round(steady, 3),
        "startup_s": round(total - steady, 3),
        "events_per_s_total": round(n / total),
        "events_per_s_steady": round(n / steady),
        "flow_cpu_s": round(cpu_s, 2),
        "flow_cpu_s_steady": round(cpu_s - first[1], 2),
        "events_per_cpu_s_steady": round(n / max(cpu_s - first[1], 1e-9)),
        "flow_cpu_share_steady": round((cpu_s - first[1]) / steady, 3),
        "redis_used_memory_delta": int(client.info("memory")["used_memory"]) - memory_before,
        "user_keys": count_keys(client, "ff:{u:*"),
    }


def _snapshots(recovery_dir: Path) -> int:
    try:
        return int(recovery_state_sizes(recovery_dir)["keys"])
    except sqlite3.OperationalError:  # a store being created or written right now
        return 0


def recovery_state_sizes(recovery_dir: Path, step: str = "user") -> dict[str, Any]:
    """Bytes of each key's latest snapshot of the user step, as the recovery store holds it."""
    sizes: list[float] = []
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        with contextlib.closing(sqlite3.connect(part)) as db:
            rows = db.execute(
                "SELECT state_key, length(ser_change), max(snap_epoch) FROM snaps "
                "WHERE step_id LIKE ? AND ser_change IS NOT NULL GROUP BY step_id, state_key",
                (f"%.{step}.stateful_batch",),
            ).fetchall()
        sizes.extend(float(r[1]) for r in rows if not str(r[0]).startswith("bench-"))
    return {"keys": len(sizes), "bytes": quantiles(sizes)}


def bench_ingest(cfg: BenchConfig, work: Path, log: _Log) -> dict[str, Any]:
    """Figures 1 and 3 (Redis bytes, flow state bytes) on one preloaded private stack."""
    stack = LocalStack(work / "stack", partitions=cfg.partitions).up()
    client = connect(stack.redis_url, JOB)
    try:
        log(f"ingest: preloading ~{cfg.events} events into {cfg.partitions} partitions")
        pre = preload(stack, cfg)
        log(f"ingest: {pre['events']} events; loading {pre['catalogue']} catalogue items")
        load_catalogue(stack, work, client, pre["catalogue"])
        log("ingest: reference consumer (read + decode)")
        reference = read_all(stack.bootstrap, TOPIC_ENGAGEMENT, cfg.partitions, 1000, 300)
        if reference["messages"] != pre["events"]:
            raise BenchError(f"ingest: broker holds {reference['messages']} != {pre['events']}")
        log(f"ingest: reference {reference['events_per_s']} events/s; flow, recovery on")
        on = timed_flow_run(stack, work / "flow-recovery", client, pre, recovery=True)
        log(f"ingest: recovery on {on['events_per_s_steady']} events/s steady")
        redis_bytes = redis_value_sizes(client, "ff:{u:*", cfg.redis_sample)
        co_bytes = redis_value_sizes(client, "ff:{c:*", cfg.redis_sample)
        state = recovery_state_sizes(work / "flow-recovery" / "recovery" / "engagement")
        runs = [on]
        if cfg.no_recovery:
            off = timed_flow_run(stack, work / "flow-plain", client, pre, recovery=False)
            log(f"ingest: --no-recovery {off['events_per_s_steady']} events/s steady")
            runs.append(off)
    finally:
        client.close()
        LocalStack(work / "stack").down()
    pre.pop("sentinels")
    return {
        "preload": pre,
        "reference": reference,
        "runs": runs,
        "redis_bytes": redis_bytes,
        "co_bytes": co_bytes,
        "flow_state": state,
    }


def _latency(samples: list[float | None], timeout_ms: float) -> dict[str, Any]:
    """Quantiles with timeouts counted at the timeout (so they can only raise the P99)."""
    values = [timeout_ms if s is None else s for s in samples]
    return {"timeouts": sum(s is None for s in samples), **quantiles(values)}


def _start_live(
    cfg: BenchConfig, stack: StackInfo, work: Path, client: RedisClient, recovery: bool, log: _Log
) -> list[FlowProcess]:
    """Content flow, paced simulator (`feedflow simulate`), engagement flow; warmed up."""
    env = _flow_env(stack)
    procs = [FlowProcess.start("content", work / "live-content", env, "flow", "content",
                               "--no-recovery")]  # fmt: skip
    start_ms = time.time_ns() // 1_000_000
    span_s = cfg.warmup_s + 60 + cfg.probes * cfg.probe_interval_s * 2
    sim = SimConfig(cfg.users, cfg.items, cfg.rate, span_s, cfg.seed + 1, start_ms=start_ms)
    initial = Simulation(sim, now_ms=start_ms).catalogue.initial  # what the child publishes
    args = ["simulate", "--users", str(sim.users), "--items", str(sim.items), "--rate",
            str(sim.rate), "--duration", str(span_s), "--seed", str(sim.seed), "--start-ms",
            str(start_ms), "--pace"]  # fmt: skip
    procs.append(FlowProcess.start("simulate", work / "live-sim", env, *args))
    log(f"freshness: background at {cfg.rate} events/s; loading {initial} catalogue items")
    wait_catalogue(client, initial, 120, procs, settle_s=0.0)  # items keep arriving
    extra = () if recovery else ("--no-recovery",)
    procs.append(FlowProcess.start("engagement", work / "live-flow", env, "flow", "engagement",
                                   *extra))  # fmt: skip
    wait_for("the first user features", lambda: bool(client.keys("ff:{u:*")), 120, procs)
    time.sleep(cfg.warmup_s)
    return procs


def bench_freshness(cfg: BenchConfig, work: Path, log: _Log, recovery: bool) -> dict[str, Any]:
    """Figure 2: probes under paced background traffic, on a stack of their own."""
    stack = LocalStack(work / "stack-live", partitions=cfg.partitions).up()
    client = connect(stack.redis_url, JOB)
    procs: list[FlowProcess] = []
    try:
        procs = _start_live(cfg, stack, work, client, recovery, log)
        flow = procs[-1]
        prober = Prober(stack.bootstrap, stack.redis_url, cfg.partitions,
                        catalogue_ids(client, 5000), cfg.probe_interval_s,
                        cfg.probe_timeout_s)  # fmt: skip
        try:
            # Warm-up: first lookups of probe users and items, and every probe user likes one
            # item, so each timed probe links to an earlier one (event → neighbour list).
            prober.run(prober.users)
            log(f"freshness: {cfg.probes} probes every {cfg.probe_interval_s * 1000:.0f} ms")
            before = prober.watcher.background, time.perf_counter(), flow.cpu_s()
            probes = prober.run(cfg.probes)
            after = prober.watcher.background, time.perf_counter(), flow.cpu_s()
            for p in procs:
                p.check_alive()  # the background ran throughout, the flow did not stop
        finally:
            prober.close()
            del prober
            gc.collect()  # librdkafka clients live until collected; the stack goes next
    finally:
        client.close()
        for p in reversed(procs):
            p.stop()
        LocalStack(work / "stack-live").down()
    seconds = after[1] - before[1]
    timeout_ms = cfg.probe_timeout_s * 1000
    return {
        "recovery": recovery,
        "probes": cfg.probes,
        "probe_interval_ms": cfg.probe_interval_s * 1000,
        "seconds": round(seconds, 2),
        "background_target_per_s": cfg.rate,
        "background_measured_per_s": round((after[0] - before[0]) / seconds),
        "flow_cpu_share": round((after[2] - before[2]) / seconds, 3),
        "flow_ms": _latency([p.flow_ms() for p in probes], timeout_ms),
        "co_ms": _latency([p.co_ms() for p in probes if p.co_key], timeout_ms),
        "broker_ms": _latency([p.broker_ms() for p in probes], timeout_ms),
    }


def bench_logic(quick: bool) -> dict[str, Any]:
    """The pure logic alone: CPU per event and pickled snapshot sizes per user."""
    params = (
        {"users": 400, "items": 500, "rate": 400.0, "duration_s": 40.0, "repeats": 1}
        if quick
        else {"users": 2000, "items": 5000, "rate": 2000.0, "duration_s": 100.0, "repeats": 1}
    )
    return {"params": params, **engagement_logic.run(**params)}  # type: ignore[arg-type]


def machine() -> dict[str, Any]:
    """CPU model, cores, Python and library versions, load."""
    from importlib.metadata import version

    import confluent_kafka

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "bytewax": version("bytewax"),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
    }


def run_engagement_bench(
    *,
    quick: bool,
    events: int | None = None,
    rate: int | None = None,
    probes: int | None = None,
    users: int | None = None,
    items: int | None = None,
    partitions: int | None = None,
    no_recovery: bool | None = None,
    command: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run every engagement measurement and return a JSON-ready summary (see module doc).

    Arguments left None take the defaults of the mode (`quick` is small and fast).
    """
    cfg = BenchConfig.for_mode(
        quick,
        events=events,
        rate=rate,
        probes=probes,
        users=users,
        items=items,
        partitions=partitions,
        no_recovery=no_recovery,
    )
    log = _Log()
    result: dict[str, Any] = {
        "command": command or f"run_engagement_bench(quick={quick})",
        "config": asdict(cfg),
        "machine": machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="feedflow-bench-", dir=workdir) as tmp:
        result["ingest"] = bench_ingest(cfg, Path(tmp) / "ingest", log)
        result["freshness"] = bench_freshness(cfg, Path(tmp) / "fresh", log, recovery=True)
        if cfg.freshness_no_recovery:
            log("freshness: again with --no-recovery")
            result["freshness_no_recovery"] = bench_freshness(
                cfg, Path(tmp) / "fresh-plain", log, recovery=False
            )
    log("logic: pure-logic CPU and snapshot sizes")
    result["logic"] = bench_logic(quick)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["load_1min_max"] = round(max(log.loads), 2)  # sampled at each progress line
    result["budgets"] = budget_rows(result)
    log("done")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: progress on stderr, the JSON summary on stdout."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and fast (about a minute)")
    parser.add_argument("--out", metavar="FILE", help="also write the summary here")
    parser.add_argument("--events", type=int, help="preloaded events for the ingest run")
    parser.add_argument("--rate", type=int, help="background events/s during the probes")
    parser.add_argument("--probes", type=int, help="freshness probes")
    parser.add_argument("--users", type=int, help="simulated users")
    parser.add_argument("--items", type=int, help="simulated catalogue size")
    parser.add_argument("--partitions", type=int, help="partitions of the private broker")
    parser.add_argument("--markdown", action="store_true", help="print the budget table too")
    args = parser.parse_args(argv)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    result = run_engagement_bench(
        quick=args.quick,
        events=args.events,
        rate=args.rate,
        probes=args.probes,
        users=args.users,
        items=args.items,
        partitions=args.partitions,
        command=f"python -m feedflow.bench.engagement_bench {shown}".strip(),
    )
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if args.out:
        Path(args.out).write_bytes(text)
    sys.stdout.write(text.decode() + "\n")
    if args.markdown:
        sys.stdout.write(markdown_table(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
