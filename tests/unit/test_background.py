"""Work in a forked child: the parent keeps its own memory, learns only how the child ended."""

from __future__ import annotations

import time
from pathlib import Path

from state.background import Forked


def test_the_child_works_on_a_copy_and_its_exit_says_how_it_went(tmp_path: Path) -> None:
    state = {"n": 1}

    def work() -> None:
        state["n"] = 2  # the child's copy only
        (tmp_path / "out").write_text(str(state["n"]))

    job = Forked.start(work)
    assert job.wait(10.0) and job.exit_code == 0
    assert state == {"n": 1} and (tmp_path / "out").read_text() == "2"


def test_a_failing_child_reports_failure_and_a_slow_one_is_still_running() -> None:
    def fail() -> None:
        raise OSError("disk full")

    failed = Forked.start(fail)
    assert not failed.wait(10.0) and failed.done() and failed.exit_code == 1
    slow = Forked.start(lambda: time.sleep(1.0))
    assert not slow.done() and not slow.wait(0.05)
    assert slow.wait(10.0)
