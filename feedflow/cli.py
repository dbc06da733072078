"""The `feedflow` console script: one entry point, a subcommand per job, `--help` everywhere.

Each subcommand lives in its own module exposing `add_parser(subparsers)` and
`run(args, settings) -> int`. Settings are read once here, from the environment and flags.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from kernel.errors import FeedflowError
from kernel.settings import load_settings

# name -> module; imported lazily so `feedflow --help` and light commands start fast.
COMMANDS = {
    "stack": "feedflow.stack_command",
    "flow": "feedflow.flow_command",
    "simulate": "feedflow.simulator.command",
    "index": "feedflow.index_command",
    "weights": "feedflow.weights_command",
    "behaviour": "feedflow.behaviour_command",
    "demo": "feedflow.demo",
    "inspect": "feedflow.inspect_command",
    "serve": "feedflow.serve_command",
    "ab": "feedflow.ab_command",
    "eval": "feedflow.evaluation.command",
    "bench": "feedflow.bench_command",
    "forget": "feedflow.forget_command",
}

# Flags that map one-to-one onto Settings fields.
SETTING_FLAGS = ("partitions", "workers", "recovery_dir", "host", "port", "metrics_port")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedflow",
        description="Feedflow: fresh recommendation features and feeds from playback telemetry.",
        epilog="Settings also come from FEEDFLOW_* variables, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before numpy loads: BLAS threads would fight workers and request threads for the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(os.environ, flags)
        module = importlib.import_module(COMMANDS[args.command])
        return int(module.run(args, settings))
    except FeedflowError as exc:
        sys.stderr.write(f"feedflow {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
