"""How commands talk to people: JSON for machines, short lines for humans, progress on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson


def emit(data: Any, as_json: bool) -> None:
    """Print a command's result: indented JSON with `--json`, else `key: value` lines."""
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if isinstance(data, dict):
        for key, value in data.items():
            shown = orjson.dumps(value).decode() if isinstance(value, dict | list) else value
            sys.stdout.write(f"{key}: {shown}\n")
    else:
        sys.stdout.write(f"{data}\n")


class Progress:
    """A one-line progress meter on stderr, redrawn at most every half second."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._start = self._last = time.monotonic()
        self._tty = sys.stderr.isatty()

    def advance(self, n: int = 1) -> None:
        """Count `n` more done; redraws when half a second has passed since the last draw."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            self._draw(now)

    def close(self) -> None:
        """Draw the final line (rate and elapsed time) and end it."""
        self._draw(time.monotonic(), final=True)

    def _draw(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        line = f"{self.label}: {self.done}{of} ({self.done / elapsed:,.0f}/s, {elapsed:.1f}s)"
        end = "\n" if final or not self._tty else ""
        sys.stderr.write(("\r" if self._tty else "") + line + end)
        sys.stderr.flush()
