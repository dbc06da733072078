"""`feedflow serve`: the feed process (Starlette on uvicorn) on `--host`/`--port`.

`--processes N` runs N replicas on the one port under a supervisor
(:mod:`feedflow.replicas`): each binds it with SO_REUSEPORT, so the kernel spreads new
connections over them; a replica that dies is replaced; SIGTERM/SIGINT stop them all. Each
replica loads its own index reader and caches: memory grows by one replica's footprint per
process. Their metrics are added up through a private multiprocess directory, so any replica
answers `/metrics` for all.

BLAS is pinned to one thread before numpy loads: with its default of one thread per core,
ranking P99 went from 0.4 ms to 2.5-20 ms here (threads fighting the event loop).
"""

from __future__ import annotations

import os

# Before numpy is imported by anything below (the CLI does the same before any import).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import shutil
import socket
import sys
import tempfile
from typing import Any, Final

import msgspec

from kernel.errors import ConfigError
from kernel.metrics import MULTIPROCESS_ENV
from kernel.settings import Settings

log = logging.getLogger(__name__)
# Added to feedflow.output.COMMON_EXIT_CODES in `--help` (None: never returned).
EXIT_CODES: Final[dict[int, str | None]] = {0: "stopped (Ctrl-C or SIGTERM)", 130: None}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow serve`."""
    p = sub.add_parser(
        "serve",
        description="Serve the feed API. Reads the index snapshots of <state_dir>/index (or "
        "FEEDFLOW_INDEX_DIR) and Redis at REDIS_URL; /readyz turns true once the index is "
        "loaded.",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8080)")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="replicas sharing the port, each with its own index reader (default 1; "
        "about one per core left free by the flows and Redis)",
    )
    p.add_argument(
        "--explore",
        action="store_true",
        help="also serve the feed explorer page at /explore (users' histories: internal "
        "ports only; FEEDFLOW_SERVING_EXPLORE=1 does the same)",
    )
    # Set by the supervisor on its replicas: bind with SO_REUSEPORT.
    p.add_argument("--replica", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow serve`: the feed API under uvicorn until stopped, then returns 0.

    Raises:
        ConfigError: `--processes` below 1, or above 1 with port 0.
    """
    import uvicorn

    from serving.protocol import JsonErrorsH11Protocol

    if args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    if args.explore:  # replicas inherit it
        os.environ["FEEDFLOW_SERVING_EXPLORE"] = "1"
        settings = msgspec.structs.replace(settings, serving_explore=True)
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        log.warning("OPENBLAS_NUM_THREADS is not 1: expect ranking latency spikes")
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "http": JsonErrorsH11Protocol,
    }
    if args.processes > 1:
        return _supervise(args.processes, settings)
    from serving.app import create_app
    from serving.runtime import build_runtime

    if args.replica is None:
        log.info("serving on http://%s:%d", settings.host, settings.port)
        uvicorn.run(create_app(build_runtime(settings)), **options)
        return 0
    config = uvicorn.Config(create_app(build_runtime(settings)), **options)
    uvicorn.Server(config).run(sockets=[_shared_socket(settings.host, settings.port)])
    return 0


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` that the other replicas bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named, not 0: asyncio sets TCP_NODELAY on accepted sockets only when their proto
    # says TCP (with 0, every response waited ~40 ms for the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _supervise(processes: int, settings: Settings) -> int:
    """Run `processes` replicas under :class:`feedflow.replicas.Supervisor`."""
    from feedflow.replicas import Supervisor

    port = settings.port
    if port == 0:
        raise ConfigError("--processes needs a fixed --port (every replica binds the same one)")
    metrics_dir = tempfile.mkdtemp(prefix="feedflow-serve-metrics-")
    os.environ[MULTIPROCESS_ENV] = metrics_dir  # the replicas inherit it

    def argvs() -> list[list[str]]:
        return [[sys.executable, "-m", "feedflow.cli", "serve", "--host", settings.host,
                 "--port", str(port), "--replica", str(i)] for i in range(processes)]  # fmt: skip

    log.info("serving on http://%s:%d (%d replicas)", settings.host, port, processes)
    try:
        return Supervisor(argvs).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
