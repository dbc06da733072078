"""BENCHMARKS.md upkeep: each benchmark owns one `## ` section and rewrites only that one."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str, *, first: bool = False) -> None:
    """Replace the section headed by `section`'s first line, leaving every other one alone.

    A new section goes at the end, or before the first existing section when `first`.
    """
    title = section.splitlines()[0]
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    body = section.rstrip("\n") + "\n"
    start = text.find(title + "\n")
    if start >= 0:
        nxt = text.find("\n## ", start + len(title))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + body + ("\n" if nxt >= 0 else "") + text[end:]
    elif first and "\n## " in text:
        at = text.find("\n## ") + 1
        text = text[:at] + body + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text, encoding="utf-8")
