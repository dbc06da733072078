"""Fixtures of the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedflow.stack import LOOPBACK, LocalStack, StackInfo, free_port
from state.lake import Lake


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


@pytest.fixture
def stack_lake(private_stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A lake of the test's own, with the private stack's and its addresses in the
    environment (for the commands run in-process and the flows started from it)."""
    lake = Lake(str(tmp_path / "lake"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", private_stack.bootstrap)
    monkeypatch.setenv("REDIS_URL", private_stack.redis_url)
    monkeypatch.setenv("FEEDFLOW_LAKE_URL", lake.root)
    return lake


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free loopback port, with credentials in the environment."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://{LOOPBACK}:{port}"
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV | {"AWS_ENDPOINT_URL": endpoint})
    try:
        import s3fs

        deadline = time.monotonic() + 30
        while True:
            try:
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir("feedflow-test")
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "moto did not answer"
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ENV = {
    "AWS_ACCESS_KEY_ID": "feedflow",
    "AWS_SECRET_ACCESS_KEY": "feedflow",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": "",
}
