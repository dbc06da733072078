"""`feedflow bench`: the benchmarks behind BENCHMARKS.md (see :mod:`feedflow.bench.suite`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Final

import orjson

from feedflow.output import add_json_flag
from kernel.settings import Settings

PART_FAILED: Final = 1
EXIT_CODES: Final = {
    PART_FAILED: "a part failed (said on stderr; the others still ran and are reported)",
    2: "an unknown part in --only, a Feedflow error, or bad arguments",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow bench`."""
    from feedflow.bench.suite import PARTS

    p = sub.add_parser(
        "bench",
        description="Run the benchmarks on private local stacks (loopback only). The full run "
        "takes over an hour on 2 cores (index builds at 1M and 3M items) and rewrites the "
        "summary and serving sections of BENCHMARKS.md; --quick takes a few minutes and "
        "writes nothing unless --write-md. Progress goes to stderr, the table to stdout "
        "(with --json every measurement instead).",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short runs")
    add_json_flag(p, out="also write every measurement here")
    p.add_argument(
        "--only", metavar="PARTS", help=f"comma-separated parts to run (of {', '.join(PARTS)})"
    )
    p.add_argument("--index-sizes", metavar="N,N", help="retrieval catalogue sizes (1M,3M)")
    p.add_argument("--serving-sizes", metavar="N,N", help="feed catalogue sizes (100k,1M)")
    p.add_argument("--keep", type=Path, help="keep and reuse index snapshots in this folder")
    md = p.add_mutually_exclusive_group()
    md.add_argument("--write-md", action="store_true", help="update BENCHMARKS.md (quick too)")
    md.add_argument("--no-write-md", action="store_true", help="leave BENCHMARKS.md alone")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow bench`; returns the exit code (see EXIT_CODES)."""
    from feedflow.bench.suite import (
        PARTS,
        ROOT,
        SuiteConfig,
        markdown,
        parse_sizes,
        run_suite,
        write_benchmarks,
    )

    del settings  # every part starts its own private stack
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    parts = tuple(p.strip() for p in args.only.split(",")) if args.only else None
    unknown = set(parts or ()) - set(PARTS)
    if unknown:
        sys.stderr.write(f"feedflow bench: unknown part(s) {sorted(unknown)}; parts: {PARTS}\n")
        return 2
    cfg = SuiteConfig.for_mode(
        args.quick,
        parts=parts,
        index_sizes=parse_sizes(args.index_sizes) if args.index_sizes else None,
        serving_sizes=parse_sizes(args.serving_sizes) if args.serving_sizes else None,
        keep=args.keep,
    )
    result = run_suite(cfg, _shown(args))
    body = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    if args.out:
        args.out.write_bytes(body)
    if args.write_md or (not args.quick and not args.no_write_md):
        write_benchmarks(result, ROOT / "BENCHMARKS.md")
    sys.stdout.write(body.decode() if args.json else markdown(result))
    return PART_FAILED if result["errors"] else 0


def _shown(args: argparse.Namespace) -> str:
    """The command as BENCHMARKS.md shows it: options kept, local paths as placeholders.

    >>> _shown(argparse.Namespace(quick=True, only=None, index_sizes="1M", serving_sizes=None,
    ...                           keep="x", out="y", write_md=False, no_write_md=False))
    'feedflow bench --quick --index-sizes 1M --keep DIR --out FILE'
    """
    parts = ["feedflow bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--only", args.only), ("--index-sizes", args.index_sizes),
                        ("--serving-sizes", args.serving_sizes)):  # fmt: skip
        if value:
            parts.append(f"{flag} {value}")
    if args.keep:
        parts.append("--keep DIR")
    if args.out:
        parts.append("--out FILE")
    return " ".join(parts)
