"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedflow.stack import LocalStack, StackInfo


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[StackInfo]:
    """A broker and Redis of the test's own (topics with 2 partitions), stopped after it."""
    local = LocalStack(tmp_path / "stack", partitions=2)
    info = local.up()
    try:
        yield info
    finally:
        # The in-memory broker has nothing to flush; it lingers ~5 s while a client of the
        # test is still connected, so it gets 1 s before SIGKILL.
        local.down(timeout_s=1.0)
