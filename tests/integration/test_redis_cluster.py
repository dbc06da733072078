"""A real 3-node Redis Cluster from `feedflow stack up --redis-cluster`: what a plain client
gets wrong there, and what the client factory does instead."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.connection import Connection

from feedflow import cli
from feedflow.stack import redis_answers
from state.feature_store import USER, feature_key
from state.redis_client import JOB, connect, mget, nodes

pytestmark = pytest.mark.integration


def test_stack_up_starts_a_cluster_the_factory_reads_by_slot_in_one_trip_per_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    state = ["--state-dir", str(tmp_path)]
    assert cli.main(["stack", "up", "--redis-cluster", "--json", *state]) == 0
    info = json.loads(capsys.readouterr().out)
    try:
        url = info["redis_url"]
        assert url.startswith("redis+cluster://") and info["redis_cluster"]
        assert sorted(p["name"] for p in info["processes"]) == [
            "broker", "redis-0", "redis-1", "redis-2"]  # fmt: skip
        client = connect(url, JOB)
        keys = [feature_key(USER, f"u{n}") for n in range(300)]
        client.mset_nonatomic({k: k.encode() for k in keys[::2]})
        assert [len(n.keys("*")) > 0 for n in nodes(client)] == [True, True, True]

        # A plain client on one node refuses keys of other slots.
        host, port = url.split("://")[1].rsplit(":", 1)
        plain = redis.Redis(host=host, port=int(port))
        with pytest.raises(redis.ResponseError, match="same slot"):
            plain.mget(keys[:10])
        plain.close()

        sent: Counter[int] = Counter()
        original = Connection.send_packed_command

        def counted(self: Connection, command: Any, check_health: bool = True) -> None:
            sent[self.port] += 1
            original(self, command, check_health)

        monkeypatch.setattr(Connection, "send_packed_command", counted)
        values = mget(client, keys)
        monkeypatch.undo()
        assert values == [k.encode() if n % 2 == 0 else None for n, k in enumerate(keys)]
        assert len(sent) == 3 and set(sent.values()) == {1}, sent  # one trip per node
        client.close()

        assert cli.main(["stack", "up", "--redis-cluster", "--json", *state]) == 0
        again = json.loads(capsys.readouterr().out)
        assert [p["pid"] for p in again["processes"]] == [p["pid"] for p in info["processes"]]
    finally:
        assert cli.main(["stack", "down", "--json", *state]) == 0
    assert not redis_answers(f"redis://{url.split('://')[1]}/0")
    status = json.loads(capsys.readouterr().out)
    assert sorted(status["stopped"]) == ["broker", "redis-0", "redis-1", "redis-2"]


def test_a_cluster_node_whose_port_was_taken_meanwhile_starts_again_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedflow import stack

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((stack.LOOPBACK, 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        ports = iter([busy])
        real = stack.free_port
        monkeypatch.setattr(stack, "free_port", lambda: next(ports, None) or real())
        local = stack.LocalStack(tmp_path, redis_cluster=True)
        node = local._start_cluster_node("redis-0")
    try:
        assert node.port != busy
        assert redis_answers(f"redis://{stack.LOOPBACK}:{node.port}/0")
    finally:
        stack._terminate([node], 5.0)
