"""`feedflow serve` as a process: requests its HTTP parser refuses still get a JSON 400.

A raw NUL byte in the request line and a query string past the parser's size limit never
reach the app; they are answered by the server's protocol, which must speak the API's JSON
error body like every other 4xx.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from feedflow.stack import StackInfo, free_port
from tests.integration.processes import stop

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        # Sent from a thread while this one reads: a server that refuses a request midway
        # answers and closes before it has read the rest.
        sender = threading.Thread(target=_send, args=(conn, request), daemon=True)
        sender.start()
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # after the answer: the rest of the request was refused
        sender.join(10)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _send(conn: socket.socket, request: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(request)


@pytest.fixture(scope="module")
def serving(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    state = tmp_path_factory.mktemp("serve-protocol")
    env = {
        **os.environ, "REDIS_URL": stack.redis_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "FEEDFLOW_INDEX_DIR": str(state / "index"), "FEEDFLOW_STATE_DIR": str(state),
    }  # fmt: skip
    with (state / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (state / "serve.log").read_text()
            try:
                if raw_request(port, HEALTHZ)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("feedflow serve did not answer /healthz within 60 s")
        yield port
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /api/v1/content/feed?user_id=a\x00b HTTP/1.1",  # a raw NUL byte
        b"GET /api/v1/content/feed?user_id=" + b"u" * 200_000 + b" HTTP/1.1",  # past h11's limit
    ],
    ids=["nul-byte", "200-kb-query"],
)
def test_requests_the_parser_refuses_get_a_json_400(serving: int, request_line: bytes) -> None:
    status, headers, body = raw_request(serving, request_line + b"\r\nHost: x\r\n\r\n")
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)
    assert error["error"] == "bad_request" and error["message"]


def test_a_well_formed_request_is_served_by_the_same_protocol(serving: int) -> None:
    status, headers, body = raw_request(serving, HEALTHZ)
    assert status == 200 and headers["content-type"].startswith("application/json"), body
