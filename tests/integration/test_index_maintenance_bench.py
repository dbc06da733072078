"""The index maintenance benchmark, small: every item published while the writer snapshots or
compacts becomes searchable at a reader in another process, and the compaction is adopted."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedflow.bench.index_maintenance import run
from state.index_replica import IndexParams

pytestmark = pytest.mark.integration


def test_items_published_during_snapshots_and_a_compaction_all_become_searchable(
    redis_url: str, tmp_path: Path
) -> None:
    params = IndexParams(m=8, ef_construction=40, snapshot_every_s=3600.0, threads=2)
    result = run(redis_url, 3000, tmp_path / "cache", params, rate=50.0, phase_s=1.5)
    for phase in ("quiet", "snapshots", "compaction"):
        assert result[phase]["published"] > 0
        assert result[phase]["searchable"] == result[phase]["published"], phase
    assert result["snapshots"]["completed"] >= 1
    compaction = result["compaction"]
    assert compaction["writer_adopted_after_s"] is not None
    assert compaction["reader_adopted_after_s"] >= compaction["writer_adopted_after_s"]
