"""Kafka client properties reach every client the project creates.

A property librdkafka does not know makes any client refuse to start, naming it: set through
`KAFKA_FEEDFLOW_PROBE` (→ `feedflow.probe`), every process that talks to Kafka must fail
loudly with that name — which it can only do if the property reached its client. The same
processes run normally without it (the rest of the suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feedflow.stack import StackInfo
from kernel.settings import load_settings
from serving.impressions import impression_sink

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROBE = {"KAFKA_FEEDFLOW_PROBE": "1"}


def feedflow(stack: StackInfo, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, **PROBE,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "REDIS_URL": stack.redis_url,
        "FEEDFLOW_STATE_DIR": str(tmp_path), "FEEDFLOW_INDEX_DIR": str(tmp_path / "index"),
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "feedflow.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ("flow", "engagement", "--no-recovery"),
        ("flow", "content", "--no-recovery"),
        ("flow", "learning", "--no-recovery"),
        ("weights", "run"),
        ("behaviour", "run"),
        ("simulate", "--users", "10", "--duration", "1"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_kafka_client_honours_the_client_properties(
    stack: StackInfo, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    done = feedflow(stack, tmp_path, *argv)
    assert done.returncode != 0
    assert "feedflow.probe" in done.stderr + done.stdout


def test_serving_impressions_honour_the_client_properties(stack: StackInfo) -> None:
    settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, **PROBE})
    with pytest.raises(Exception, match=r"feedflow\.probe"):
        impression_sink(settings)
