"""A password-protected and a TLS-only Redis: real redis-servers started
here (and a plain one, the same test's reference), the content flow writing the catalogue and
index pointer through them, `feedflow behaviour` reading them; a wrong password fails loudly
without printing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from feedflow.bench.serving_world import PrivateRedis, RedisTls
from feedflow.simulator.writers import KafkaSink
from feedflow.stack import StackInfo
from operators.contracts import TOPIC_MEDIA
from tests.integration.processes import stop

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


def certificates(directory: Path) -> RedisTls:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=feedflow-test-ca", "-keyout", ca_key, "-out", ca],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "1", "-extfile", ext, "-out", cert],
    ]  # fmt: skip
    for argv in run:
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=60)
    return RedisTls(cert=cert, key=key, ca=ca)


@pytest.fixture(params=["plain", "password", "tls+password"])
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateRedis]:
    tls = certificates(tmp_path / "tls") if request.param.startswith("tls") else None
    password = "" if request.param == "plain" else PASSWORD
    with PrivateRedis(tmp_path / "redis", password=password, tls=tls) as server:
        yield server


def feedflow_env(stack: StackInfo, redis_url: str, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "REDIS_URL": redis_url,
        "FEEDFLOW_STATE_DIR": str(state), "FEEDFLOW_INDEX_DIR": str(state / "index"),
    }  # fmt: skip


def test_a_flow_and_a_job_work_through_a_secured_redis(
    stack: StackInfo, secured: PrivateRedis, tmp_path: Path
) -> None:
    assert "@" not in secured.url or redis_refuses_without_credentials(secured)
    media_id = f"secured-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(stack.bootstrap)
    published_at = int(time.time() * 1000)
    item = {"media_id": media_id, "creator_id": "c1", "content_type": "AUDIO",
            "title": "Night train", "category": "music", "duration_s": 120.0,
            "published_at": published_at}  # fmt: skip
    sink.write(TOPIC_MEDIA, media_id, published_at, orjson.dumps(item).decode())
    sink.close()
    env = feedflow_env(stack, secured.url, tmp_path)
    with (tmp_path / "content.log").open("wb") as log:
        flow = subprocess.Popen(
            [sys.executable, "-m", "feedflow.cli", "flow", "content", "--no-recovery"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis.from_url(secured.url)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not client.exists(f"ff:item:{{{media_id}}}"):
            assert flow.poll() is None, (tmp_path / "content.log").read_text()[-2000:]
            time.sleep(0.5)
        assert client.exists(f"ff:item:{{{media_id}}}"), "the item never reached Redis"
        assert client.get("ff:{idx}:active") is not None
    finally:
        stop(flow)
        client.close()
    status = subprocess.run(
        [sys.executable, "-m", "feedflow.cli", "behaviour", "status", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 3 and orjson.loads(status.stdout)["active"] is None

    wrong = secured.url.replace(PASSWORD, "not-the-password")
    denied = subprocess.run(
        [sys.executable, "-m", "feedflow.cli", "behaviour", "status"],
        cwd=ROOT, env=feedflow_env(stack, wrong, tmp_path), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert denied.returncode != 0
    assert "not-the-password" not in denied.stdout + denied.stderr


def redis_refuses_without_credentials(server: PrivateRedis) -> bool:
    bare = server.url.split("@", 1)[1]
    scheme = server.url.split("://", 1)[0]
    try:
        redis.Redis.from_url(f"{scheme}://{bare}", socket_timeout=2).ping()
    except redis.RedisError:
        return True
    return False
