"""How commands talk to people: JSON for machines, aligned tables for people, progress on
stderr, exit codes in `--help`.

`emit` prints a command's result: with `--json` the data as indented JSON on stdout, else
:func:`render`ed as plain aligned text (no colour, no dependency). Records keyed by name, a
list of records, or sibling records with the same fields become one table; other nested
mappings become titled sections; nothing is printed as a JSON blob.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

GAP: Final = "  "
DEFAULT_WIDTH: Final = 100  # when stdout is not a terminal
LIST_SHOWN: Final = 8  # items of a list shown before "… (N in all)"
MIN_WRAP: Final = 16  # text columns wrap down to this width, then rows become blocks
BAR: Final = 20
TTY_EVERY_S: Final = 0.25
PLAIN_EVERY_S: Final = 10.0
_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$")

# Exit codes every command shares (see cli.main). A command's EXIT_CODES adds its own, or
# leaves one of these out with None.
COMMON_EXIT_CODES: Final = {
    0: "done",
    2: "a Feedflow error (said on stderr) or bad arguments",
    130: "interrupted (Ctrl-C)",
}

Row = Mapping[str, Any]


def add_json_flag(parser: argparse.ArgumentParser, out: str = "") -> None:
    """`--json`, the same flag on every command: JSON on stdout instead of the table.

    `out` (a report's commands: eval, bench, ab report): the command also takes `--out FILE`,
    to print the table and write the JSON to FILE; `--json FILE` means the same (the
    spelling of the command-line contract, so scripts written for it keep working).
    """
    if not out:
        parser.add_argument(
            "--json", action="store_true", help="print the result as JSON on stdout, not a table"
        )
        return
    parser.add_argument(
        "--json",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        action=_JsonOrFile,
        help="print the result as JSON on stdout, not a table; with FILE: as --out FILE",
    )
    parser.add_argument("--out", metavar="FILE", type=Path, help=out)


class _JsonOrFile(argparse.Action):
    """`--json` alone sets `json`; `--json FILE` sets `out` (and leaves the table on)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, str):
            namespace.out = Path(values)
        else:
            namespace.json = True


def emit(data: Any, as_json: bool, view: Any = None) -> None:
    """Print a command's result: `data` as indented JSON with `--json`, else `view` (by
    default `data`) rendered for people."""
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(data if view is None else view))


def render(data: Any, width: int | None = None) -> str:
    """`data` as aligned text, at most `width` columns where it can (default: the terminal).

    Example:
        >>> data = {"active": "v2", "retired": ["v0"], "versions": {
        ...     "v1": {"state": "retired", "items": 950},
        ...     "v2": {"state": "active", "items": 1204}}}
        >>> print(render(data, 80), end="")
        active   v2
        retired  v0
        <BLANKLINE>
        versions  state    items
        v1        retired    950
        v2        active    1204
    """
    lines = _lines(data, width or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
    return "\n".join(lines) + "\n"


def table(rows: Mapping[str, Row] | Sequence[Row], width: int | None = None, key: str = "") -> str:
    """Records as one aligned table: keyed records get a first column headed `key`.

    Example:
        >>> print(table({"control": {"users": 1200, "CTR": "4.10%"},
        ...              "b": {"users": 98, "CTR": "4.52%"}}, key="arm"), end="")
        arm      users    CTR
        control   1200  4.10%
        b           98  4.52%
    """
    given = width or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    return "\n".join(_table(rows, given, key)) + "\n"


def cell(value: Any) -> str:
    """A value as people read it in a table: no JSON, long lists shortened.

    Example:
        >>> cell(None), cell(True), cell(0.123456), cell(12345.67), cell([1, 2]), cell({"a": 1})
        ('-', 'yes', '0.1235', '12,345.7', '1, 2', 'a=1')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        shown = ", ".join(cell(v) for v in value[:LIST_SHOWN])
        more = f", … ({len(value)} in all)" if len(value) > LIST_SHOWN else ""
        return shown + more or "-"
    return str(value)


def _scalar(value: Any) -> bool:
    """Fits in one cell: not a mapping, not a list of mappings."""
    if isinstance(value, list | tuple):
        return not any(isinstance(v, Mapping) for v in value)
    return not isinstance(value, Mapping)


def _record(value: Any) -> Mapping[str, Any] | None:
    """A non-empty mapping of cell values (a table row), else None."""
    if isinstance(value, Mapping) and value and all(_scalar(v) for v in value.values()):
        return value
    return None


def _rows(data: Any) -> dict[str, Row] | list[Row] | None:
    """`data` as table rows when it is records keyed by name or a list of records."""
    if isinstance(data, Mapping) and data:
        keyed = {str(k): _record(v) for k, v in data.items()}
        if all(r is not None for r in keyed.values()):
            return {k: r for k, r in keyed.items() if r is not None}
    if isinstance(data, list | tuple) and data:
        listed = [_record(v) for v in data]
        if all(r is not None for r in listed):
            return [r for r in listed if r is not None]
    return None


def _lines(data: Any, width: int) -> list[str]:
    rows = _rows(data)
    if rows is not None:
        return _table(rows, width)
    if not isinstance(data, Mapping):
        return textwrap.wrap(cell(data), max(width, MIN_WRAP)) or ["-"]
    blocks: list[list[str]] = []
    pairs: list[tuple[str, Any]] = []
    items = [(str(k), v) for k, v in data.items()]
    at = 0
    while at < len(items):
        key, value = items[at]
        if _scalar(value):
            pairs.append((key, value))
            at += 1
            continue
        if pairs:
            blocks.append(_pairs(pairs, width))
            pairs = []
        run = _sibling_records(items, at)
        if len(run) > 1:  # datasets, stores, …: one table
            blocks.append(_table(run, width))
            at += len(run)
            continue
        blocks.append(_section(key, value, width))
        at += 1
    if pairs:
        blocks.append(_pairs(pairs, width))
    return [line for n, block in enumerate(blocks) for line in ([""] if n else []) + block]


def _sibling_records(items: list[tuple[str, Any]], at: int) -> dict[str, Row]:
    """The records from `at` on that share the fields of the first one."""
    run: dict[str, Row] = {}
    for key, value in items[at:]:
        record = _record(value)
        if record is None or (run and record.keys() != next(iter(run.values())).keys()):
            break
        run[key] = record
    return run


def _section(key: str, value: Any, width: int) -> list[str]:
    rows = _rows(value)
    if isinstance(rows, dict):  # records keyed by name: the title heads their column
        return _table(rows, width, key)
    return [key, *(f"{GAP}{line}" if line else "" for line in _lines(value, width - len(GAP)))]


def _pairs(pairs: list[tuple[str, Any]], width: int) -> list[str]:
    """`key  value` lines, values aligned and wrapped under themselves."""
    key_width = max(len(k) for k, _ in pairs)
    room = max(width - key_width - len(GAP), MIN_WRAP)
    out = []
    for key, value in pairs:
        first, *rest = textwrap.wrap(cell(value), room, break_on_hyphens=False) or [""]
        out.append(f"{key:<{key_width}}{GAP}{first}".rstrip())
        out += [" " * (key_width + len(GAP)) + line for line in rest]
    return out


def _numbers(column: list[Any]) -> bool:
    """A column to right-align: numbers (or numbers as text), blanks aside."""
    given = [v for v in column if v is not None]
    return bool(given) and all(
        bool(_NUMBER.match(v)) if isinstance(v, str) else type(v) in (int, float) for v in given
    )


def _table(rows: Mapping[str, Row] | Sequence[Row], width: int, key: str = "") -> list[str]:
    """Rows under a header, numbers right-aligned. Too wide, the widest columns wrap (titles
    at spaces, text down to MIN_WRAP); when even that does not fit, a block of
    `field  value` lines per row."""
    keyed = isinstance(rows, Mapping)
    names = [str(k) for k in rows] if keyed else []
    records = list(rows.values()) if isinstance(rows, Mapping) else list(rows)
    columns = list(dict.fromkeys(c for r in records for c in r))
    header = [key] * keyed + columns
    body = [names[i : i + 1] + [cell(r.get(c)) for c in columns] for i, r in enumerate(records)]
    right = [False] * keyed + [_numbers([r.get(c) for r in records]) for c in columns]
    cells = [max(len(row[i]) for row in body) for i in range(len(header))]
    widths = [max(len(title), c) for title, c in zip(header, cells, strict=True)]
    # How narrow a column may get: its titles' words, its numbers, text down to MIN_WRAP.
    floor = [
        max([len(word) for word in title.split()] + [c if r else min(c, MIN_WRAP)])
        for title, c, r in zip(header, cells, right, strict=True)
    ]
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
    while excess > 0:  # narrow the widest column that can be, a character at a time
        narrower = [i for i, w in enumerate(widths) if w > floor[i]]
        if not narrower:
            return _blocks(names, records, width)
        widths[max(narrower, key=lambda i: widths[i])] -= 1
        excess -= 1
    out = []
    for row in [header, *body]:
        wrapped = [
            textwrap.wrap(c, w, break_on_hyphens=False) or [""]
            for c, w in zip(row, widths, strict=True)
        ]
        for n in range(max(len(parts) for parts in wrapped)):
            line = [parts[n] if n < len(parts) else "" for parts in wrapped]
            aligned = zip(line, widths, right, strict=True)
            out.append(GAP.join(c.rjust(w) if r else c.ljust(w) for c, w, r in aligned).rstrip())
    return out


def _blocks(names: list[str], records: list[Row], width: int) -> list[str]:
    """Rows too wide for a table: a `field  value` block per row (under its name)."""
    out: list[str] = []
    for n, record in enumerate(records):
        pairs = _pairs(list(record.items()), width - (len(GAP) if names else 0))
        out += ([""] if n else []) + ([names[n]] if names else [])
        out += [f"{GAP}{line}" if names else line for line in pairs]
    return out


def when(ms: int | None) -> str | None:
    """Epoch milliseconds as a UTC time to the minute.

    Example:
        >>> when(1700000000000), when(None)
        ('2023-11-14 22:13Z', None)
    """
    return None if ms is None else time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(ms / 1000))


# -- progress -----------------------------------------------------------------------------


class Progress:
    """A long job's progress on stderr (or `stream`).

    On a terminal, one line redrawn in place: `label: [#####     ] 52% 1,234/2,400 3.1k/s
    eta 4s` (without a total: `label: 1,234 3.1k/s 12s`). Elsewhere (a pipe, a log file) the
    same figures without the bar as a plain line at most every `every_s` seconds (10 by
    default), and always the final line from :meth:`close`.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        every_s: float | None = None,
    ) -> None:
        self.label, self.total, self.done = label, total, 0
        self._stream = stream or sys.stderr
        self._tty = _isatty(self._stream)
        self._every = (
            every_s if every_s is not None else TTY_EVERY_S if self._tty else PLAIN_EVERY_S
        )
        self._clock = clock
        self._start = self._last = clock()
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def expect(self, total: int) -> None:
        """Set the total once the job knows it."""
        self.total = total

    def advance(self, n: int = 1) -> None:
        """Count `n` more done; redraws once `every_s` has passed since the last draw."""
        self.done += n
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._draw(self.line(now))

    def close(self) -> None:
        """Draw the final line (rate and time taken) and end it; once."""
        if not self._closed:
            self._closed = True
            self._draw(self.line(self._clock(), final=True), final=True)

    def line(self, now: float, final: bool = False) -> str:
        """The progress line at `now` (with the bar on a terminal).

        Example:
            >>> import io
            >>> p = Progress("items", 2400, stream=io.StringIO(), clock=lambda: 0.0)
            >>> p.done = 1248
            >>> p.line(0.4)
            'items: 52% 1,248/2,400 3.1k/s eta 0s'
        """
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.label}:"]
        if self.total:
            share = min(self.done / self.total, 1.0)
            if self._tty:
                filled = round(share * BAR)
                parts.append("[" + "#" * filled + " " * (BAR - filled) + "]")
            parts += [f"{share:.0%}", f"{self.done:,}/{self.total:,}"]
        else:
            parts.append(f"{self.done:,}")
        parts.append(f"{_si(rate)}/s")
        if final:
            parts.append(f"in {duration(elapsed)}")
        elif self.total:
            parts.append(f"eta {duration(max(self.total - self.done, 0) / rate if rate else 0)}")
        else:
            parts.append(duration(elapsed))
        return " ".join(parts)

    def _draw(self, text: str, final: bool = False) -> None:
        if self._tty:
            columns = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
            # Clipped to the terminal: a wrapped line could not be redrawn in place.
            self._stream.write("\r" + text[: columns - 1] + "\x1b[K" + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or closed
        return False


def _si(rate: float) -> str:
    """A rate in k and M.

    Example:
        >>> _si(950.4), _si(3140), _si(2_500_000)
        ('950', '3.1k', '2.5M')
    """
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.1f}{unit}"
    return f"{rate:.0f}"


def duration(seconds: float) -> str:
    """Seconds as people read them.

    Example:
        >>> duration(4.2), duration(192), duration(3725)
        ('4s', '3m12s', '1h02m')
    """
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# -- help ---------------------------------------------------------------------------------


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a paragraph with indented lines (the exit codes) is
    kept as written, and blank lines still separate paragraphs."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


def exit_codes(own: Mapping[int, str | None]) -> dict[int, str]:
    """A command's exit codes: the common ones with its own added (None leaves one out).

    Example:
        >>> list(exit_codes({3: "no version is active", 130: None}).items())[1:]
        [(2, 'a Feedflow error (said on stderr) or bad arguments'), (3, 'no version is active')]
    """
    merged = {**COMMON_EXIT_CODES, **own}
    return {code: text for code, text in sorted(merged.items()) if text is not None}


def document_exit_codes(parser: argparse.ArgumentParser, own: Mapping[int, str | None]) -> None:
    """End a command's `--help` with its exit codes (after its own epilog, if any)."""
    listing = "\n".join(f"  {code:<4} {text}" for code, text in exit_codes(own).items())
    parser.epilog = "\n\n".join(p for p in (parser.epilog, f"exit codes:\n{listing}") if p)
    parser.formatter_class = HelpFormatter
