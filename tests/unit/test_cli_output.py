"""What the status commands print: a table for people, the same data as JSON with `--json`
(the keys scripts read), never a JSON blob inside the human output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from feedflow.cli import main

INDEX = {
    "active": "hashing-v1-d64.2",
    "writer_alive": True,
    "retired": ["hashing-v1-d64.1"],
    "versions": {
        "hashing-v1-d64.1": {
            "state": "retired", "encoder": "hashing-v1", "dim": 64, "log_entries": 0,
            "last_change_age_s": 86400.0, "live": None,
            "snapshot": {"items": 950, "deleted": 0, "age_s": 90000.0, "bytes": 10,
                         "log_id": "1-0"},
        },
        "hashing-v1-d64.2": {
            "state": "active", "encoder": "hashing-v1", "dim": 64, "log_entries": 40,
            "last_change_age_s": 0.4,
            "live": {"items": 1012, "deleted": 3, "log_id": "9-0", "age_s": 0.2},
            "snapshot": {"items": 1000, "deleted": 1, "age_s": 42.0, "bytes": 10, "log_id": "5-0"},
        },
    },
}  # fmt: skip


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("FEEDFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    return monkeypatch


def _column(lines: list[str], title: str, row: str) -> str:
    """The value under `title` (a right-aligned number column) in the row named `row`."""
    header = next(line for line in lines if title in line)
    end = header.index(title) + len(title)
    line = next(line for line in lines if line.startswith(row + " "))
    return line[:end].split()[-1]


def test_index_status_shows_the_live_count_beside_the_snapshots(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedflow import index_command

    env.setattr(index_command, "status", lambda *_a, **_k: INDEX)
    assert main(["index", "status"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "None" not in out
    lines = out.splitlines()
    assert lines[:2] == ["active   hashing-v1-d64.2", "writer   alive"]
    assert _column(lines, "live items", "hashing-v1-d64.2") == "1012"
    assert _column(lines, "snapshot items", "hashing-v1-d64.2") == "1000"
    assert _column(lines, "live items", "hashing-v1-d64.1") == "-"
    assert max(len(line) for line in lines) <= 100

    assert main(["index", "status", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == INDEX


def test_forget_verify_prints_one_row_per_store(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedflow import forget_command

    stores = {"redis": {"state": "clean", "detail": "features and weights gone"}}
    for name, why in forget_command.BY_CONSTRUCTION.items():
        stores[name] = {"state": "by design", "detail": why}
    report = {"user": "d1", "request_id": "r1", "complete": True, "stores": stores}
    env.setattr(forget_command, "verify", lambda *_a, **_k: report)
    assert main(["forget", "u1", "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("stores "))
    state_at = header.index("state")
    named = [line for line in lines[lines.index(header) + 1 :] if line[:state_at].strip()]
    assert [line[:state_at].strip() for line in named] == list(stores)
    assert all(line[state_at:].split()[0] in ("clean", "by") for line in named)

    assert main(["forget", "u1", "--verify", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == report


def test_weights_status_is_a_row_per_version(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from state.weights_registry import WeightsRegistry

    def version(n: int, state: str) -> dict[str, Any]:
        return {"version": f"2026-W0{n}.{n}", "week": f"2026-W0{n}", "state": state,
                "active": n == 2, "expired": False, "users": 100 * n, "events": 1000 * n,
                "cohorts": 4, "created_ms": 1_767_225_600_000 + n, "completed_ms": None,
                "expires_ms": 1_800_000_000_000, "source": "topic"}  # fmt: skip

    report = {"active": "2026-W02.2", "versions": [version(2, "complete"), version(1, "failed")]}
    env.setattr(WeightsRegistry, "status", lambda self: report)
    assert main(["weights", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "active  2026-W02.2"
    header = lines[3]
    assert header.split()[:4] == ["version", "state", "active", "users"]
    assert lines[4].split()[:4] == ["2026-W02.2", "complete", "yes", "200"]
    assert "2026-01-01 00:00Z" in lines[4]  # times for people, not epoch milliseconds

    assert main(["weights", "status", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == report


def test_ab_report_json_is_a_flag_and_out_writes_the_file(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from feedflow import ab_command

    env.setattr(ab_command, "collect", lambda *_a, **_k: {"srm": {"mismatch": False}})
    out = tmp_path / "ab.json"
    assert main(["ab", "report", "--json", "--out", str(out)]) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == orjson.loads(out.read_bytes()) == {"srm": {"mismatch": False}}
