"""The command line: every command answers `--help`, and the top-level help stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from feedflow.cli import COMMANDS, command_in, main

HEAVY = ("bytewax", "hnswlib", "river", "scipy", "starlette", "confluent_kafka", "redis")


def test_top_level_help_lists_every_command_without_importing_the_heavy_libraries() -> None:
    probe = (
        "import sys\nfrom feedflow.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    *listing, loaded = done.stdout.strip().splitlines()
    assert loaded == "[]"
    for name, (_, summary) in COMMANDS.items():
        assert any(line.split()[:1] == [name] for line in listing), name
        assert summary.split()[0] in "\n".join(listing)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["-v", name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: feedflow {name}")


def test_the_command_is_the_first_positional_argument() -> None:
    assert command_in(["-v", "flow", "engagement"]) == "flow"
    assert command_in(["--help"]) is None
