"""What people see from a command: aligned tables instead of JSON blobs, JSON only with
`--json`, and progress that redraws in place on a terminal and stays quiet in a log."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import orjson
import pytest

from feedflow.output import Progress, add_json_flag, emit, render

STATUS = {
    "active": "hashing-v1-d64.2",
    "writer_alive": True,
    "retired": ["hashing-v1-d64.1"],
    "versions": {
        "hashing-v1-d64.1": {"state": "retired", "live items": None, "snapshot items": 950},
        "hashing-v1-d64.2": {"state": "active", "live items": 1012, "snapshot items": 1000},
    },
}


def columns(header: str) -> dict[str, int]:
    """Where each column's title starts in a header line."""
    return {m.group(): m.start() for m in re.finditer(r"\S+", header)}


def test_records_keyed_by_name_are_one_aligned_table_not_json() -> None:
    text = render(STATUS, width=80)
    assert "{" not in text and '"' not in text
    lines = text.splitlines()
    assert lines[:3] == [  # scalars: aligned `key  value` lines
        "active        hashing-v1-d64.2",
        "writer_alive  yes",
        "retired       hashing-v1-d64.1",
    ]
    header, *rows = lines[4:]
    assert header.startswith("versions ")  # the title heads the column of names
    assert [r.split()[0] for r in rows] == ["hashing-v1-d64.1", "hashing-v1-d64.2"]
    at = columns(header)
    assert [r[at["state"] :].split()[0] for r in rows] == ["retired", "active"]
    # Numbers are right-aligned: they end where their title ends; a missing one is "-".
    end = header.index("live items") + len("live items")
    assert [r[:end].split()[-1] for r in rows] == ["-", "1012"]
    end = len(header)
    assert [r[:end].split()[-1] for r in rows] == ["950", "1000"]


def test_sibling_records_with_the_same_fields_share_one_table() -> None:
    lake = {
        "lake": "/data/lake",
        "events": {"hours": 3, "rows": 12000},
        "impressions": {"hours": 2, "rows": 800},
    }
    lines = render(lake, width=80).splitlines()
    assert lines[0] == "lake  /data/lake"
    header, events, impressions = lines[2:5]
    assert header.split() == ["hours", "rows"]
    assert events.split() == ["events", "3", "12000"]
    assert impressions.split() == ["impressions", "2", "800"]
    assert len({len(events), len(impressions), len(header)}) == 1  # right edges line up


def test_a_table_wider_than_the_terminal_wraps_its_text_then_falls_back_to_blocks() -> None:
    stores = {
        "redis": {"state": "clean", "detail": "features and weights gone"},
        "serving": {"state": "by design", "detail": "no store; its cache drops the user " * 3},
    }
    wrapped = render({"user": "3fa2", "stores": stores}, width=60).splitlines()
    assert max(len(line) for line in wrapped) <= 60
    header, *rows = wrapped[2:]
    assert header.split() == ["stores", "state", "detail"]
    assert len(rows) > 2  # the long detail took several lines, in its own column
    detail_at = header.index("detail")
    assert all(line[detail_at - 2 : detail_at] == "  " for line in rows)
    assert rows[1].startswith("serving ") and not rows[2][:detail_at].strip()

    narrow = render({"stores": stores}, width=30).splitlines()
    assert narrow[:3] == ["redis", "  state   clean", "  detail  features and weights"]


def test_long_lists_are_shortened_and_lists_of_records_are_tables() -> None:
    text = render({"vector": [0.5] * 64, "processes": [
        {"name": "broker", "pid": 101, "alive": True},
        {"name": "redis", "pid": 20202, "alive": False},
    ]}, width=80)  # fmt: skip
    assert "… (64 in all)" in text and text.count("0.5") == 8
    assert "  name      pid  alive\n" in text and "  redis   20202  no\n" in text


def test_emit_prints_json_only_with_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    emit(STATUS, as_json=True)
    assert orjson.loads(capsys.readouterr().out) == STATUS
    emit(STATUS, as_json=False, view={"active": STATUS["active"]})
    assert capsys.readouterr().out == "active  hashing-v1-d64.2\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_progress_is_one_bar_redrawn_in_place() -> None:
    screen, clock = Terminal(), Clock()
    progress = Progress("encoding", total=2400, stream=screen, clock=clock)
    for _ in range(24):
        clock.now += 0.5
        progress.advance(52)
    progress.close()
    out = screen.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, ended once
    frames = [f.removesuffix("\x1b[K") for f in out.rstrip("\n").split("\r")[1:]]
    assert len(frames) == 24 + 1
    assert frames[10] == "encoding: [#####               ] 24% 572/2,400 104/s eta 18s"
    assert frames[-1].startswith("encoding: [##########          ] 52% 1,248/2,400 104/s in 12s")


def test_in_a_log_progress_is_a_plain_line_every_ten_seconds_and_a_last_one() -> None:
    log, clock = io.StringIO(), Clock()
    progress = Progress("events", stream=log, clock=clock)
    for _ in range(480):  # a minute, ten events an eighth of a second
        clock.now += 0.125
        progress.advance(10)
    progress.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "[" not in log.getvalue()
    assert 6 <= len(lines) <= 7  # one per ten seconds, and the final one
    assert lines[0] == "events: 800 80/s 10s"
    assert lines[-1] == "events: 4,800 80/s in 1m00s"


def test_a_short_job_off_a_terminal_says_only_its_final_line() -> None:
    log, clock = io.StringIO(), Clock()
    with Progress("feed requests", total=50, stream=log, clock=clock) as progress:
        for _ in range(50):
            clock.now += 0.0625
            progress.advance()
    assert log.getvalue() == "feed requests: 100% 50/50 16/s in 3s\n"


def test_json_alone_prints_json_and_json_file_writes_it_beside_the_table() -> None:
    # eval, bench and ab report: `--json FILE` is the command-line contract's spelling.
    parser = argparse.ArgumentParser()
    add_json_flag(parser, out="also write the result as JSON here")
    plain = parser.parse_args([])
    assert (plain.json, plain.out) == (False, None)
    alone = parser.parse_args(["--json"])
    assert (alone.json, alone.out) == (True, None)
    to_file = parser.parse_args(["--json", "report.json"])
    assert (to_file.json, to_file.out) == (False, Path("report.json"))
    assert parser.parse_args(["--out", "r.json"]).out == Path("r.json")
