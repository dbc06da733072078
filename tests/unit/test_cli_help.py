"""Every command's `--help` ends with its exit codes, and the commands exit with the codes
their help documents (run here on stand-ins for Redis and the broker)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feedflow.cli import COMMANDS, main


def documented(command: str, capsys: pytest.CaptureFixture[str]) -> dict[int, str]:
    """The exit codes `feedflow COMMAND --help` lists, with what each means."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "\nexit codes:\n" in text, f"{command} --help lists no exit codes"
    listing = text.split("\nexit codes:\n", 1)[1]
    return {int(m[1]): m[2] for m in re.finditer(r"^  (\d+) +(.+)$", listing, re.M)}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_lists_success_failure_and_its_own_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = documented(name, capsys)
    assert 0 in codes and 2 in codes
    module = __import__(COMMANDS[name][0], fromlist=["_"])
    own = getattr(module, "EXIT_CODES", {})
    assert {c for c, text in own.items() if text is not None} <= set(codes)
    assert all(text for text in codes.values())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Settings that name a Redis and a broker nobody listens on (nothing connects)."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("FEEDFLOW_STATE_DIR", str(tmp_path))
    return monkeypatch


def _no_active_index(m: pytest.MonkeyPatch) -> None:
    from feedflow import index_command

    report = {"active": None, "writer_alive": False, "retired": [], "versions": {}}
    m.setattr(index_command, "status", lambda *_a, **_k: report)


def _no_active_weights(m: pytest.MonkeyPatch) -> None:
    from state.weights_registry import WeightsRegistry

    m.setattr(WeightsRegistry, "status", lambda self: {"active": None, "versions": []})


def _no_weights_for_the_user(m: pytest.MonkeyPatch) -> None:
    from state.weights_registry import WeightsRegistry

    m.setattr(WeightsRegistry, "user_weights", lambda self, user, version=None: None)


def _no_active_behaviour(m: pytest.MonkeyPatch) -> None:
    from state.behaviour_store import BehaviourStore

    m.setattr(BehaviourStore, "active", lambda self: None)
    m.setattr(BehaviourStore, "versions", lambda self: {})


def _nothing_stored(m: pytest.MonkeyPatch) -> None:
    from feedflow import inspect_command

    class Empty:
        def __init__(self, client: Any) -> None:
            pass

        def get_many(self, kind: str, ids: list[str]) -> list[None]:
            return [None] * len(ids)

    class Client:
        def ttl(self, key: str) -> int:
            return -2

    m.setattr(inspect_command, "RedisFeatureStore", Empty)
    m.setattr(inspect_command, "connect", lambda url, role: Client())


def _sample_ratio_mismatch(m: pytest.MonkeyPatch) -> None:
    from feedflow import ab_command

    m.setattr(ab_command, "collect", lambda *_a, **_k: {"srm": {"mismatch": True}})


def _erasure_pending(m: pytest.MonkeyPatch) -> None:
    from feedflow import forget_command

    report = {"user": "d1", "request_id": None, "complete": False, "stores": {}}
    m.setattr(forget_command, "verify", lambda *_a, **_k: report)


def _lake_off(m: pytest.MonkeyPatch) -> None:
    m.setenv("FEEDFLOW_LAKE_ENABLED", "false")


def _ctrl_c(m: pytest.MonkeyPatch) -> None:
    from feedflow import lake_command

    def interrupted(*_a: Any) -> int:
        raise KeyboardInterrupt

    m.setattr(lake_command, "run", interrupted)


def _nothing(m: pytest.MonkeyPatch) -> None:
    pass


CASES: list[tuple[list[str], Callable[[pytest.MonkeyPatch], None], int]] = [
    (["stack", "status", "--state-dir", "{tmp}/stack"], _nothing, 3),
    (["index", "status"], _no_active_index, 3),
    (["index", "retire"], _nothing, 2),
    (["weights", "status"], _no_active_weights, 3),
    (["weights", "user", "u1"], _no_weights_for_the_user, 3),
    (["behaviour", "status"], _no_active_behaviour, 3),
    (["inspect", "user", "u1"], _nothing_stored, 1),
    (["ab", "report", "--json"], _sample_ratio_mismatch, 3),
    (["forget", "u1", "--verify"], _erasure_pending, 1),
    (["bench", "--only", "no-such-part"], _nothing, 2),
    (["lake", "status"], _lake_off, 2),
    (["lake", "status"], _ctrl_c, 130),
    (["features", "catalogue"], _nothing, 0),
]


@pytest.mark.parametrize(
    ("argv", "setup", "code"), CASES, ids=[f"{' '.join(a[:2])}-{c}" for a, _, c in CASES]
)
def test_commands_exit_with_the_codes_their_help_documents(
    argv: list[str],
    setup: Callable[[pytest.MonkeyPatch], None],
    code: int,
    env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup(env)
    assert main([a.format(tmp=tmp_path) for a in argv]) == code
    capsys.readouterr()
    assert code in documented(argv[0], capsys)
