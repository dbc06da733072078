"""The chaos suite on real processes: see :mod:`feedflow.bench.chaos`.

Redis, serving, the learning, content and engagement flows are each killed with SIGKILL in
turn under simulated traffic and restarted; every one recovers, feeds answer throughout
while serving runs, the learning flow resumes its model, and the features end byte-identical
to a clean run over the same topics (trending boards apart: their order of ties is the order
updates reach them). A failure prints which fields of which records differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feedflow.bench.chaos import run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.reliability]


def test_every_component_killed_in_turn_recovers_and_ends_as_a_clean_run(
    tmp_path: Path,
) -> None:
    report = run_chaos(tmp_path, duration_s=100, rate=150)
    faults = report["faults"]
    assert set(faults) == {"redis", "serving", "learning", "content", "engagement"}
    assert faults["learning"]["seq_after"] > faults["learning"]["seq_before"] > 0
    feeds = report["feeds"]
    assert feeds["while_serving_ran"] > 300
    assert feeds["not_200_or_empty"] == 0, feeds
    assert report["keys"] > 500
    assert report["identical_to_clean_run"], (
        report["differing_keys"],
        report["changed_after_settling"],
        report["differences"],
    )
