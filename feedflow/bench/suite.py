"""`feedflow bench`: every budget measured in one run, each next to a reference.

Three parts, each also runnable on its own (see its module):

- **engagement** (:mod:`feedflow.bench.engagement_bench`): ingest of one worker process,
  broker → Redis; event → feature-in-Redis freshness at a fixed rate; bytes per active user
  in operator state and in Redis. References: a bare consumer reading the same topic, the
  broker round trip of the same probes, the feature record's own length.
- **index** (:mod:`feedflow.bench.index_bench`): retrieval k=500 P99 and recall@500 at 1M
  and 3M items next to brute-force numpy on the same vectors; snapshot bytes per item next
  to raw float32; publish → searchable at a serving reader through the broker, next to the
  same path without the broker.
- **serving** (:mod:`feedflow.bench.serving_bench`): feed P50 / P99 at 100k and 1M items under
  concurrent clients, the per-stage breakdown and the req/s held, next to a naive
  per-candidate Redis read on the same requests.

Every figure becomes a row of one budget table (what, budget, measured, reference, ratio,
met). The full run writes that table and the serving section into BENCHMARKS.md; `--quick`
(small sizes, short runs) prints and writes JSON only unless `--write-md` is given.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from feedflow.bench.machine import cpu_model
from feedflow.bench.markdown import write_section
from feedflow.output import duration

ROOT: Final = Path(__file__).resolve().parents[2]
SECTION: Final = "## Summary: `feedflow bench`"
PARTS: Final = ("engagement", "index", "serving")

# The budgets, plus the ranking stage's own.
FEED_P99_MS: Final = 15.0
FEED_P50_MS: Final = 5.0
FEED_BUDGET_ITEMS: Final = 1_000_000
RETRIEVAL_P99_MS: Final = 3.0
RETRIEVAL_BUDGET_ITEMS: Final = 3_000_000
RECALL_AT_500: Final = 0.95
SEARCHABLE_P99_S: Final = 2.0
RANKING_P99_MS: Final = 2.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class SuiteConfig:
    """What one `feedflow bench` run measures."""

    quick: bool = False
    parts: tuple[str, ...] = PARTS
    index_sizes: tuple[int, ...] = (1_000_000, 3_000_000)
    serving_sizes: tuple[int, ...] = (100_000, 1_000_000)
    keep: Path | None = None  # where index snapshots are kept between runs

    @classmethod
    def for_mode(cls, quick: bool, **overrides: Any) -> SuiteConfig:
        """The defaults of a mode; `quick` is CI-sized (minutes)."""
        small = cls(quick=True, index_sizes=(5_000,), serving_sizes=(5_000,))
        base = small if quick else cls()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def row(
    part: str,
    what: str,
    measured: float | None,
    *,
    budget: float | None = None,
    higher_is_better: bool = False,
    reference: float | None = None,
    reference_is: str = "",
) -> dict[str, Any]:
    """One line of the budget table; `met` is None when the row carries no budget.

    >>> r = row("serving", "feed P99 (ms)", 12.0, budget=15.0, reference=40.0, reference_is="naive")
    >>> r["met"], r["ratio"], r["budget"]
    (True, 0.3, '≤ 15')
    >>> row("index", "recall", 0.9, budget=0.95, higher_is_better=True)["met"]
    False
    """
    met = None
    if budget is not None and measured is not None:
        met = measured >= budget if higher_is_better else measured <= budget
    ratio = None
    if measured is not None and reference:
        ratio = round(measured / reference, 3)
    sign = "≥" if higher_is_better else "≤"
    return {
        "part": part,
        "what": what,
        "budget": "" if budget is None else f"{sign} {budget:,g}",
        "measured": measured,
        "reference": reference,
        "reference_is": reference_is,
        "ratio": ratio,
        "met": met,
    }


# -- rows of each part -----------------------------------------------------------------------


def engagement_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The engagement bench's own budget rows, tagged with the part."""
    out = []
    for r in result["budgets"]:
        measured, ref = r["measured"], r["reference"]
        ratio = None if r["ratio"] is None or math.isnan(r["ratio"]) else r["ratio"]
        out.append({**r, "part": "engagement", "measured": measured, "reference": ref,
                    "ratio": ratio})  # fmt: skip
    return out


def index_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Retrieval P99 and recall per size, bytes per item, publish → searchable."""
    out = []
    for r in report.get("retrieval", []):
        n = r["items"]
        at = f"{n:,} items (M={r['m']}, ef {r['ef_search']})"
        budget = RETRIEVAL_P99_MS if n >= RETRIEVAL_BUDGET_ITEMS else None
        brute = r["numpy_brute_k500"]
        out += [
            row("index", f"retrieval k=500 P99, {at} (ms)", r["hnsw_k500"]["p99_ms"],
                budget=budget, reference=brute["p99_ms"], reference_is="numpy brute force P99"),
            row("index", f"retrieval k=500 P50, {at} (ms)", r["hnsw_k500"]["p50_ms"],
                reference=brute["p50_ms"], reference_is="numpy brute force P50"),
            row("index", f"recall@500 mean, {at}", r["recall_at_500"], budget=RECALL_AT_500,
                higher_is_better=True, reference=1.0, reference_is="exact search"),
            row("index", f"index bytes per item, {at}", r["snapshot_bytes_per_item"],
                reference=float(r["dim"] * 4), reference_is="raw float32 vector"),
        ]  # fmt: skip
    kafka, local = report.get("freshness_kafka"), report.get("freshness_in_process")
    if kafka:
        out.append(
            row("index", "publish → searchable at a reader, through the broker, P99 (s)",
                kafka["p99_s"], budget=SEARCHABLE_P99_S,
                reference=local["p99_s"] if local else None,
                reference_is="writer → Redis → reader in one process, P99")
        )  # fmt: skip
        out.append(
            row("index", "publish → searchable at a reader, through the broker, P50 (s)",
                kafka["p50_s"], reference=local["p50_s"] if local else None,
                reference_is="writer → Redis → reader in one process, P50")
        )  # fmt: skip
    return out


def serving_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size: feed P50/P99 over HTTP (one client and the best level held), req/s, stages."""
    out = []
    for size in result["sizes"]:
        n = size["items"]
        judged = n >= FEED_BUDGET_ITEMS
        naive = size["in_process"]["naive_per_candidate_redis"]["stages"]
        fast = size["in_process"]["pipeline"]["stages"]
        one = next((lv for lv in size["http"]["levels"] if lv["concurrency"] == 1), None)
        if one is not None:
            out += [
                row("serving", f"feed P99 over HTTP, {n:,} items, 1 client (ms)", one["p99_ms"],
                    budget=FEED_P99_MS if judged else None, reference=naive["total"]["p99_ms"],
                    reference_is="naive per-candidate Redis reads, in process, P99"),
                row("serving", f"feed P50 over HTTP, {n:,} items, 1 client (ms)", one["p50_ms"],
                    budget=FEED_P50_MS if judged else None, reference=naive["total"]["p50_ms"],
                    reference_is="naive per-candidate Redis reads, in process, P50"),
            ]  # fmt: skip
        best = size["http"]["held_at_p99_budget"]
        out.append(
            row("serving", f"req/s held at P99 ≤ {FEED_P99_MS:g} ms, {n:,} items",
                best["req_per_s"] if best else 0.0,  # no level held it: none
                reference=one["req_per_s"] if one else None,
                reference_is="req/s with 1 client")
        )  # fmt: skip
        for stage in ("features", "retrieval", "filters", "ranking", "rules", "total"):
            budget = RANKING_P99_MS if stage == "ranking" else None
            out.append(
                row("serving", f"stage {stage} P99 in process, {n:,} items (ms)",
                    fast[stage]["p99_ms"], budget=budget, reference=naive[stage]["p99_ms"],
                    reference_is="same stage, naive reference")
            )  # fmt: skip
    return out


# -- the run -----------------------------------------------------------------------------------


def _stderr(line: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
    sys.stderr.flush()


def run_engagement(cfg: SuiteConfig, log: Log) -> dict[str, Any]:
    """The engagement part: the engagement benchmark's result (progress on stderr by itself)."""
    from feedflow.bench.engagement_bench import run_engagement_bench

    log("engagement: ingest, freshness, bytes per user (private broker + Redis)")
    return run_engagement_bench(quick=cfg.quick, command="feedflow bench")


def run_index(cfg: SuiteConfig, log: Log) -> dict[str, Any]:
    """The index part: retrieval benchmarks on a private stack, torn down after."""
    from feedflow.bench.index_bench import run_index_bench
    from feedflow.stack import LocalStack

    log(f"index: retrieval at {', '.join(f'{n:,}' for n in cfg.index_sizes)} items, "
        "publish → searchable (private broker + Redis)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="feedflow-bench-index-") as tmp:
        stack = LocalStack(Path(tmp), partitions=1, redis_url=None)
        info = stack.up()
        try:
            return run_index_bench(
                cfg.index_sizes,
                quick=cfg.quick,
                keep=cfg.keep,
                redis_url=info.redis_url,
                bootstrap=info.bootstrap,
            )
        finally:
            stack.down()


def run_serving(cfg: SuiteConfig, log: Log) -> dict[str, Any]:
    """The serving part: feed latency at the configured catalogue sizes (shorter when quick)."""
    from feedflow.bench.serving_bench import run_serving_bench

    log(f"serving: feed latency at {', '.join(f'{n:,}' for n in cfg.serving_sizes)} items")
    if cfg.quick:
        return run_serving_bench(sizes=cfg.serving_sizes, users=2_000, levels=(1, 2),
                                 duration_s=3.0, requests=300, warm_s=2.0, log=log)  # fmt: skip
    return run_serving_bench(sizes=cfg.serving_sizes, log=log)


RUNNERS: Final[dict[str, Callable[[SuiteConfig, Log], dict[str, Any]]]] = {
    "engagement": run_engagement,
    "index": run_index,
    "serving": run_serving,
}
ROWS: Final[dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]] = {
    "engagement": engagement_rows,
    "index": index_rows,
    "serving": serving_rows,
}


def machine() -> dict[str, Any]:
    """CPU model, cores, Python, load: what the figures were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def in_part(say: Log, which: str, started: float) -> Log:
    """`say` with the part running (`2/3`) and its time so far in front of each line."""
    return lambda line: say(f"[part {which}, {duration(time.monotonic() - started)}] {line}")


def run_suite(cfg: SuiteConfig, command: str, log: Log | None = None) -> dict[str, Any]:
    """Run the chosen parts in order; one failing part is recorded and the others still run."""
    say = log or _stderr
    result: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "quick": cfg.quick,
        "machine": machine(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "parts": {},
        "errors": {},
        "budgets": [],
    }
    started = time.monotonic()
    for n, part in enumerate(cfg.parts, 1):
        t0 = time.monotonic()
        said = in_part(say, f"{n}/{len(cfg.parts)}", t0)
        try:
            data = RUNNERS[part](cfg, said)
        except Exception as exc:  # a broken part must not hide the others' figures
            said(f"{part}: FAILED: {exc!r}")
            result["errors"][part] = repr(exc)
            continue
        result["parts"][part] = data
        result["budgets"] += ROWS[part](data)
        said(f"{part}: done")
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


# -- report ------------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The summary section of BENCHMARKS.md: the machine, the command and every row."""
    m = result["machine"]
    lines = [
        SECTION,
        "",
        f"Command: `{result['command']}` on {result['date']} ({result['wall_s']:,.0f} s"
        f"{', quick mode' if result['quick'] else ''}). Machine: {m['cpu']}, {m['cores']}"
        f" cores shared with other work (1-minute load {result['load_before'][0]} before,"
        f" {result['load_after'][0]} after), Python {m['python']}. Each figure stands next to"
        " a simple reference measured in the same run: ratios hold where absolute times"
        " wobble on a shared machine. Parts are detailed in the sections below.",
        "",
        "| part | what | budget | measured | reference | ratio | met |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for r in result["budgets"]:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        ref = f"{_num(r['reference'])} ({r['reference_is']})" if r["reference"] else "—"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:g}"
        lines.append(
            f"| {r['part']} | {r['what']} | {r['budget']} | {_num(r['measured'])} | {ref} |"
            f" {ratio} | {met} |"
        )
    for part, error in result["errors"].items():
        lines.append(f"| {part} | **not measured: the part failed** ({error[:120]}) | | | | | |")
    missing = [p for p in PARTS if p not in result["parts"] and p not in result["errors"]]
    if missing:
        lines += ["", f"Not run this time: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def write_benchmarks(result: dict[str, Any], path: Path) -> None:
    """The summary (first section) and the serving section, when serving ran."""
    write_section(path, markdown(result), first=True)
    serving = result["parts"].get("serving")
    if serving is not None:
        from feedflow.bench.serving_bench import markdown as serving_markdown

        write_section(path, serving_markdown(serving))


def parse_sizes(text: str) -> tuple[int, ...]:
    """`1000000,3000000` or `1M,3M` or `100k` → sizes.

    >>> parse_sizes("100k,1M")
    (100000, 1000000)
    """
    out = []
    for given in text.split(","):
        size = given.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(size[-1:], 1)
        out.append(int(float(size.rstrip("km")) * scale))
    return tuple(out)
