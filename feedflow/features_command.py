"""`feedflow features catalogue`: every feature's definition under the platform's names.

`--markdown` prints the page `docs/features.md` is (`feedflow features catalogue --markdown
> docs/features.md`); `--json` the same as JSON; plain, one aligned line per feature.
"""

from __future__ import annotations

import argparse
import sys

from feedflow.output import emit
from kernel.settings import Settings
from operators.feature_catalogue import CATALOGUE, markdown


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow features`."""
    p = sub.add_parser(
        "features",
        description="The feature catalogue: names, types, windows, sources and where each "
        "feature is stored.",
    )
    p.add_argument("action", choices=["catalogue"])
    p.add_argument("--markdown", action="store_true", help="print the docs/features.md page")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow features catalogue`; returns the exit code."""
    del settings
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    if args.json:
        fields = [k for k in CATALOGUE[0]._fields if k != "value"]
        emit({"features": [{k: getattr(f, k) for k in fields} for f in CATALOGUE]}, True)
        return 0
    width = max(len(f.name) for f in CATALOGUE)
    for f in CATALOGUE:
        sys.stdout.write(f"{f.name:<{width}}  {f.entity:<11}  {f.window:<28}  {f.description}\n")
    return 0
