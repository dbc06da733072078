"""`feedflow serve`: the feed process (Starlette on uvicorn) on `--host`/`--port`.

BLAS is pinned to one thread before numpy loads: with its default of one thread per core,
ranking P99 went from 0.4 ms to 2.5-20 ms here (threads fighting the event loop).
"""

from __future__ import annotations

import os

# Before numpy is imported by anything below (the CLI does the same before any import).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging

from kernel.settings import Settings

log = logging.getLogger(__name__)


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


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow serve`: the feed API under uvicorn until stopped, then returns 0."""
    import uvicorn

    from serving.app import create_app
    from serving.protocol import JsonErrorsH11Protocol
    from serving.runtime import build_runtime

    del args  # --host/--port arrive through settings
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        log.warning("OPENBLAS_NUM_THREADS is not 1: expect ranking latency spikes")
    runtime = build_runtime(settings)
    app = create_app(runtime)
    log.info("serving on http://%s:%d", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
        http=JsonErrorsH11Protocol,
    )
    return 0
