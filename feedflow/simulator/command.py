"""`feedflow simulate`: synthetic catalogue and playback traffic, to the broker or a JSONL file.

The CLI wires :func:`add_parser` into its subcommands and calls :func:`run` with the parsed
arguments and the process's settings. See :mod:`feedflow.simulator.clock` for how `--rate`,
`--duration`, `--speedup` and `--start-ms` map to event time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Final

import orjson

from feedflow.output import Progress, add_json_flag, emit
from feedflow.simulator.engine import SimConfig, Simulation, Summary
from feedflow.simulator.errors import SimulatorError
from feedflow.simulator.writers import JsonlSink, KafkaSink, Sink
from kernel.settings import Settings

INTERRUPTED: Final = 130
EXIT_CODES: Final = {INTERRUPTED: "interrupted (Ctrl-C): what was made is delivered and summed up"}

_EPILOG = """\
By default the simulated span ends now and its length is duration × speedup; the speedup is
chosen so the run yields about rate × duration events. The same arguments with the same
--start-ms give byte-identical output. Messages go to the broker (KAFKA_BOOTSTRAP_SERVERS),
paced to event time, unless --out names a JSONL file, which is written as fast as possible.
For a live feed whose timestamps follow the wall clock: --start-ms now --speedup 1.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `simulate` subcommand to an argparse subparsers object and return it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        description="Simulate a video and audio catalogue and users' second-level playback.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=1000, help="number of users (default 1000)")
    p.add_argument("--items", type=int, default=5000, help="initial catalogue size (default 5000)")
    p.add_argument("--rate", type=float, default=1000.0, help="target events/s (default 1000)")
    p.add_argument("--duration", type=float, default=60.0, help="wall seconds (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--malformed", type=float, default=0.0, help="share of bad engagement payloads, 0..1"
    )
    p.add_argument("--out", metavar="FILE.jsonl", help="write JSONL here instead of the broker")
    p.add_argument("--truth", metavar="FILE.json", help="export the users' planted tastes")
    p.add_argument(
        "--start-ms",
        type=_start_ms,
        help="epoch ms where the span starts, or 'now' for a live feed (default: span ends now)",
    )
    p.add_argument(
        "--speedup", type=_speedup, default=None, help="event time per wall time (default auto)"
    )
    p.add_argument(
        "--pace",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send at event time / speedup (default: on for the broker, off for a file)",
    )
    p.add_argument(
        "--catalogue-changes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish and remove items during the span (default on)",
    )
    add_json_flag(p)
    return p


def _start_ms(text: str) -> int | str:
    if text == "now":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'now' or epoch ms, got {text!r}") from None


def _speedup(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"speedup must be > 0, got {value}")
    return value


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the simulation the arguments describe; print the summary. Returns the exit code.

    Raises:
        SimulatorError: on impossible arguments, an unwritable file or failed deliveries.
    """
    now_ms = time.time_ns() // 1_000_000
    config = SimConfig(
        users=args.users,
        items=args.items,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        malformed=args.malformed,
        start_ms=now_ms if args.start_ms == "now" else args.start_ms,
        speedup=args.speedup,
        catalogue_changes=args.catalogue_changes,
    )
    sim = Simulation(config, now_ms=now_ms)
    try:
        if args.truth:
            Path(args.truth).write_bytes(orjson.dumps(sim.truth(), option=orjson.OPT_INDENT_2))
        summary, destination = _play(sim, args, settings)
    except OSError as exc:
        raise SimulatorError(f"simulate: {exc}") from exc
    emit({"out": destination, **summary.as_dict()}, args.json)
    return INTERRUPTED if summary.interrupted else 0


def _play(sim: Simulation, args: argparse.Namespace, settings: Settings) -> tuple[Summary, str]:
    pace = args.pace if args.pace is not None else args.out is None
    progress = Progress("simulate", total=round(sim.plan.expected_events))
    if args.out is None:
        sink: Sink = KafkaSink(settings.kafka_bootstrap_servers, settings.kafka_client)
        summary = sim.run(sink, pace=pace, progress=progress)
        return summary, f"broker {settings.kafka_bootstrap_servers}"
    with open(args.out, "wb", buffering=1 << 20) as stream:
        return sim.run(JsonlSink(stream), pace=pace, progress=progress), args.out
