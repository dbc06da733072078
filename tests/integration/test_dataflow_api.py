"""Bytewax's dataflow API listens on every interface and cannot be told otherwise: a flow
keeps it off unless `--public-dataflow-api` asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from feedflow.flow_command import API_ENV, guard_dataflow_api
from feedflow.stack import StackInfo, free_port
from tests.integration.processes import stop

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_guard_drops_the_switch_unless_asked() -> None:
    env = {API_ENV: "1", "OTHER": "x"}
    guard_dataflow_api(False, env)
    assert env == {"OTHER": "x"}
    env = {API_ENV: "1"}
    guard_dataflow_api(True, env)
    assert env == {API_ENV: "1"}


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("public", [False, True], ids=["default", "asked"])
def test_a_flow_process_starts_the_api_only_when_asked(
    stack: StackInfo, tmp_path: Path, public: bool
) -> None:
    port = free_port()
    env = {
        **os.environ, API_ENV: "1", "BYTEWAX_DATAFLOW_API_PORT": str(port),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "REDIS_URL": stack.redis_url,
        "FEEDFLOW_STATE_DIR": str(tmp_path),
    }  # fmt: skip
    argv = ["flow", "content", "--no-recovery", *(["--public-dataflow-api"] if public else [])]
    with (tmp_path / "flow.log").open("wb") as log:
        flow = subprocess.Popen([sys.executable, "-m", "feedflow.cli", *argv], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        # Asked: until it answers. Not asked: long enough for it to have answered (it comes
        # up in about a second once the flow runs).
        deadline, seen = time.monotonic() + (30 if public else 8), False
        while time.monotonic() < deadline and not seen:
            assert flow.poll() is None, (tmp_path / "flow.log").read_text()[-2000:]
            seen = answers(port)
            time.sleep(0.5)
        assert seen == public
        if not public:
            assert f"{API_ENV} ignored" in (tmp_path / "flow.log").read_text()
    finally:
        stop(flow)
