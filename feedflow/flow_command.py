"""`feedflow flow engagement|content|learning`: run one dataflow as a long-lived worker.

Recovery is on by default: the Bytewax recovery store lives in `--recovery-dir` (default
`<state_dir>/recovery/<flow>`) and is created on first start. Kafka offsets and operator
state are snapshotted together every `FEEDFLOW_SNAPSHOT_INTERVAL_S`, so a killed worker
resumes where its last snapshot left off and replays at most one epoch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from prometheus_client import start_http_server

from operators.errors import ConfigError
from operators.settings import Settings

FLOWS = {
    "engagement": "flows.engagement",
    "content": "flows.content",
    "learning": "flows.learning",
}
RECOVERY_PARTITIONS = 4
log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "flow",
        help="run a dataflow (engagement, content, learning)",
        description="Run one Bytewax dataflow until stopped. Scale with processes (-i/-a), "
        "not threads: workers in one process share the GIL.",
    )
    p.add_argument("name", choices=sorted(FLOWS))
    p.add_argument("--workers", type=int, help="worker threads in this process (default 1)")
    p.add_argument("--recovery-dir", help="recovery store (default <state_dir>/recovery/<flow>)")
    p.add_argument("--no-recovery", action="store_true", help="run without a recovery store")
    p.add_argument("--process-id", "-i", type=int, help="this process's index in a cluster")
    p.add_argument("--addresses", "-a", help='cluster addresses, "h0:p0;h1:p1;..."')
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Feedflow's metrics here (or set BYTEWAX_DATAFLOW_API_ENABLED for Bytewax's)",
    )


def recovery_config(settings: Settings, name: str) -> RecoveryConfig:
    """The recovery store of flow `name`, created with fixed partitions if new."""
    directory = Path(settings.recovery_dir or Path(settings.state_dir) / "recovery" / name)
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, RECOVERY_PARTITIONS)
        log.info("created recovery store with %d partitions", RECOVERY_PARTITIONS)
    return RecoveryConfig(directory, timedelta(seconds=settings.recovery_backup_s))


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("kafka_bootstrap_servers", "redis_url")
    if (args.process_id is None) != (args.addresses is None):
        raise ConfigError("--process-id and --addresses go together")
    module = importlib.import_module(FLOWS[args.name])
    flow = module.build_flow(settings)
    recovery = None if args.no_recovery else recovery_config(settings, args.name)
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
