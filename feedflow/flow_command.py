"""`feedflow flow engagement|content|learning`: run one dataflow as a long-lived worker.

Recovery is on by default: the Bytewax recovery store lives in `--recovery-dir` (default
`<state_dir>/recovery/<flow>`) and is created on first start. Kafka offsets and operator
state are snapshotted together every `FEEDFLOW_SNAPSHOT_INTERVAL_S`, so a killed worker
resumes where its last snapshot left off and replays at most one epoch.

Bytewax's own dataflow API (`BYTEWAX_DATAFLOW_API_ENABLED`) cannot be bound to an address:
it listens on every interface. It stays off unless `--public-dataflow-api` asks for it; the
flow's own metrics are served on `FEEDFLOW_HOST` (loopback by default) with `--metrics-port`.

`--rebuild` is for a feature store that lost its data (Redis restarted empty, persistence
off): the recovery store is moved aside (`<dir>.replaced-<epoch s>`, kept for inspection,
never read again) and a fresh one created, so the flow reads its topics from their first
retained offset and rewrites every feature, board and index entry those events produce. What
the topics no longer retain cannot come back: keep their retention above the longest-lived
feature (`FEEDFLOW_USER_TTL_DAYS`, `FEEDFLOW_ITEM_TTL_DAYS`: 35 days by default).

A flow scales with processes, not worker threads (threads share the GIL). `-i/-a` runs this
process as one member of a Bytewax cluster (every member gets the same address list);
`--processes N` launches the N members of a cluster on this host, on free loopback ports,
sharing the recovery store, under a supervisor (:mod:`feedflow.replicas`). Bytewax cluster
members are not independent: when one dies the others panic, and recovery is all or nothing,
so the supervisor stops the rest and starts them all again, and the cluster resumes from its
last snapshot. With `--metrics-port P`, member i serves its metrics on P + i. Input topics
should have a multiple of processes x workers partitions (each partition is read by one
worker; a warning says when they do not).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Final

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from confluent_kafka.admin import AdminClient
from prometheus_client import start_http_server

from kernel.errors import ConfigError
from kernel.settings import Settings

FLOWS = {
    "engagement": "flows.engagement",
    "content": "flows.content",
    "learning": "flows.learning",
}
RECOVERY_PARTITIONS = 4
API_ENV = "BYTEWAX_DATAFLOW_API_ENABLED"
EXIT_CODES: Final = {0: "the flow stopped (--processes: on Ctrl-C or SIGTERM, members stopped)"}
log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow flow`."""
    p = sub.add_parser(
        "flow",
        description="Run one Bytewax dataflow until stopped. Scale with processes (-i/-a), "
        "not threads: workers in one process share the GIL.",
    )
    p.add_argument("name", choices=sorted(FLOWS))
    p.add_argument("--workers", type=int, help="worker threads in this process (default 1)")
    p.add_argument("--recovery-dir", help="recovery store (default <state_dir>/recovery/<flow>)")
    p.add_argument("--no-recovery", action="store_true", help="run without a recovery store")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="start over from the topics' start (after losing Redis): the recovery store is "
        "moved aside and a new one created",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="launch a cluster of N processes on this host (loopback ports chosen here); "
        "restarted together when one dies",
    )
    p.add_argument("--process-id", "-i", type=int, help="this process's index in a cluster")
    p.add_argument("--addresses", "-a", help='cluster addresses, "h0:p0;h1:p1;..."')
    p.add_argument(
        "--public-dataflow-api",
        action="store_true",
        help="let BYTEWAX_DATAFLOW_API_ENABLED start Bytewax's API, which listens on every "
        "interface (off otherwise, whatever the environment says)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Feedflow's metrics here (or set BYTEWAX_DATAFLOW_API_ENABLED for Bytewax's)",
    )


def guard_dataflow_api(public: bool, environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep Bytewax's API (every interface, no address setting) off unless asked for."""
    if public or API_ENV not in environ:
        return
    del environ[API_ENV]
    log.warning(
        "%s ignored: Bytewax's API would listen on every interface; pass "
        "--public-dataflow-api to allow it, or use --metrics-port (on FEEDFLOW_HOST)",
        API_ENV,
    )


def recovery_dir(settings: Settings, name: str) -> Path:
    """Where flow `name` keeps its recovery store."""
    return Path(settings.recovery_dir or Path(settings.state_dir) / "recovery" / name)


def set_aside(directory: Path) -> Path | None:
    """Move a recovery store out of the way (for `--rebuild`); where it went, if it existed."""
    if not directory.exists():
        return None
    target = directory.with_name(f"{directory.name}.replaced-{int(time.time())}")
    directory.rename(target)
    log.warning("rebuild: recovery store moved to %s; reading the topics from their start", target)
    return target


def recovery_config(settings: Settings, name: str, create: bool = True) -> RecoveryConfig:
    """The recovery store of flow `name`; if new and `create`, made with fixed partitions
    (at least one per worker of the cluster, see :func:`create_store`)."""
    directory = recovery_dir(settings, name)
    if create:
        create_store(directory, RECOVERY_PARTITIONS)
    return RecoveryConfig(directory, timedelta(seconds=settings.recovery_backup_s))


def create_store(directory: Path, partitions: int) -> None:
    """Create a recovery store of `partitions` partitions in `directory` unless one is there.

    Partitions are fixed at creation: make them at least the most workers the flow will ever
    run with (each worker snapshots into partitions it can see).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, partitions)
        log.info("created recovery store with %d partitions", partitions)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one dataflow until it stops; returns the exit code.

    Raises:
        ConfigError: `--process-id` without `--addresses` (or the reverse), or `--rebuild`
            with `--no-recovery`.
    """
    settings.require("kafka_bootstrap_servers", "redis_url")
    if (args.process_id is None) != (args.addresses is None):
        raise ConfigError("--process-id and --addresses go together")
    if args.rebuild and args.no_recovery:
        raise ConfigError("--rebuild starts a new recovery store; it excludes --no-recovery")
    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    if args.processes > 1:
        if args.process_id is not None:
            raise ConfigError("--processes launches a whole cluster; it excludes -i/-a")
        return run_cluster(args, settings)
    module = importlib.import_module(FLOWS[args.name])
    flow = module.build_flow(settings)
    if args.rebuild:
        set_aside(recovery_dir(settings, args.name))
    # In a cluster, the first member creates a missing store: members sharing a directory
    # must not race to create it (and members on other hosts may see none of it).
    create = not args.process_id
    recovery = None if args.no_recovery else recovery_config(settings, args.name, create)
    guard_dataflow_api(args.public_dataflow_api)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
    log.info("running %s flow (%d worker(s) per process)", args.name, settings.workers)
    cli_main(
        flow,
        workers_per_process=settings.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if args.addresses else None,
        epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
        recovery_config=recovery,
    )
    return 0


def run_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """`--processes N`: the N members of a Bytewax cluster on this host, supervised as one."""
    from feedflow.replicas import Supervisor
    from feedflow.stack import LOOPBACK, free_port

    n, workers = args.processes, settings.workers
    check_partitions(settings, FLOWS[args.name], n * workers)
    if args.rebuild:
        set_aside(recovery_dir(settings, args.name))
    if not args.no_recovery:
        create_store(recovery_dir(settings, args.name), max(RECOVERY_PARTITIONS, n * workers))
    own = ["flow", args.name, "--workers", str(workers)]
    own += (
        ["--no-recovery"]
        if args.no_recovery
        else ["--recovery-dir", str(recovery_dir(settings, args.name))]
    )
    own += ["--public-dataflow-api"] if args.public_dataflow_api else []

    def argvs() -> list[list[str]]:
        addresses = ";".join(f"{LOOPBACK}:{free_port()}" for _ in range(n))
        members = []
        for i in range(n):
            metrics = (
                ["--metrics-port", str(settings.metrics_port + i)] if settings.metrics_port else []
            )
            members.append([sys.executable, "-m", "feedflow.cli", *own, *metrics,
                            "-i", str(i), "-a", addresses])  # fmt: skip
        return members

    log.info("running %s flow as a cluster of %d processes x %d worker(s)", args.name, n, workers)
    return Supervisor(argvs, unit=True).run()


def check_partitions(settings: Settings, module_name: str, workers: int) -> None:
    """Warn when an input topic's partitions are not a multiple of the cluster's workers
    (some workers would read more than others, or nothing)."""
    topics = importlib.import_module(module_name).INPUT_TOPICS
    admin = AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, **settings.kafka_client}
    )
    try:
        found = admin.list_topics(timeout=10).topics
    except Exception as exc:  # the flow itself reports an unreachable broker
        log.warning("could not read the input topics' partitions: %s", exc)
        return
    for topic in topics:
        count = len(found[topic].partitions) if topic in found else 0
        if count and count % workers:
            log.warning("%s has %d partitions, not a multiple of the cluster's %d workers: "
                        "the load is uneven", topic, count, workers)  # fmt: skip
