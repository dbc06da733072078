"""A flow run as a two-process Bytewax cluster (`feedflow flow NAME --processes 2`) on a real
broker and a real Redis: both members read, a member killed with -9 takes the cluster down,
the supervisor starts it again as a whole, and the features equal a clean one-process run's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from feedflow.bench.machine import children, cmdline
from feedflow.stack import StackInfo, free_ports
from operators.contracts import TOPIC_ENGAGEMENT
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import (
    ALL_FEATURES,
    USERS,
    feature_digest,
    load_catalogue,
    publish,
    start_flow,
    wait_until_stable,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def members(supervisor: int) -> dict[int, int]:
    """Cluster member index -> pid, for the running children of `supervisor`."""
    found: dict[int, int] = {}
    for pid in children(supervisor):
        argv = cmdline(pid)
        if b"-i" in argv:
            found[int(argv[argv.index(b"-i") + 1])] = pid
    return found


def metric(port: int, name: str, *labels: str) -> float:
    """The sum of a member's series `name` whose labels include every one of `labels`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def events_read(port: int) -> float:
    """The member's valid events read from the engagement topic."""
    return metric(port, "feedflow_events_total", 'outcome="ok"', f'topic="{TOPIC_ENGAGEMENT}"')


def wait_members(supervisor: int, n: int, other_than: set[int], timeout_s: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = members(supervisor)
        if len(found) == n and not set(found.values()) & other_than:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{n} new cluster members did not appear within {timeout_s}s")


def test_a_killed_member_restarts_the_cluster_and_the_features_equal_a_clean_run(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    assert private_stack.partitions == 2  # one per member
    run = publish(private_stack, users=300, rate=40_000, duration=3, malformed=0.0)
    client = redis.Redis.from_url(private_stack.redis_url)
    content = load_catalogue(private_stack, tmp_path, client)
    users = run["users"]

    def done(d: dict[str, str]) -> bool:
        return sum(k.startswith("ff:{u:") for k in d) == len(users)

    port = free_ports(2)  # one metrics port per member
    started = [content]
    try:
        cluster = start_flow("engagement", private_stack, tmp_path / "crash",
                             "--processes", "2", "--metrics-port", str(port))  # fmt: skip
        started.append(cluster)
        first = wait_members(cluster.pid, 2, set(), 30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not feature_digest(client, (USERS,)):
            assert cluster.poll() is None, "the cluster's supervisor died"
            time.sleep(0.05)
        time.sleep(1.5)  # past at least one snapshot, well before the end of the stream
        read = [events_read(port), events_read(port + 1)]
        # Mid-stream, each member reports how far behind the topic it is (librdkafka's
        # statistics: Tansu's ListOffsets under-reports the high watermark, its fetches do not).
        lag = [metric(p, "bytewax_kafka_consumer_lag", f'topic="{TOPIC_ENGAGEMENT}"')
               for p in (port, port + 1)]  # fmt: skip
        partial = feature_digest(client, ALL_FEATURES)
        os.kill(first[1], signal.SIGKILL)
        second = wait_members(cluster.pid, 2, set(first.values()), 60)
        after_crash = wait_until_stable(lambda: feature_digest(client, ALL_FEATURES), done, 180)
        stop(cluster)
        assert not members(cluster.pid), "members outlived their supervisor"
        assert set(second.values()).isdisjoint(first.values()), "the survivor was not restarted"
        assert all(n > 0 for n in read), f"a member read nothing: {read}"
        assert sum(lag) > 0, f"no consumer lag reported mid-stream: {lag}"
        assert partial != after_crash, "the kill came after the stream was done: nothing tested"

        for key in after_crash:
            client.delete(key)
        clean = start_flow("engagement", private_stack, tmp_path / "clean")
        started.append(clean)
        clean_run = wait_until_stable(lambda: feature_digest(client, ALL_FEATURES), done, 180)
        stop(clean)
    finally:
        for proc in reversed(started):  # a failed check must not leave a cluster running
            stop(proc)
    assert after_crash == clean_run


def test_the_content_flow_as_a_cluster_has_exactly_one_index_writer(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    media = publish(private_stack, users=20, rate=1000, duration=1, malformed=0.0)["summary"]
    live = media["media"]
    catalogue = live["initial"] + live["published"] - live["removed"]
    port = free_ports(2)  # one metrics port per member
    cluster = start_flow("content", private_stack, tmp_path, "--processes", "2",
                         "--metrics-port", str(port))  # fmt: skip
    try:
        wait_members(cluster.pid, 2, set(), 30)
        deadline = time.monotonic() + 60
        writers: list[float] = []
        while time.monotonic() < deadline:
            assert cluster.poll() is None, "the cluster's supervisor died"
            with contextlib.suppress(urllib.error.URLError, ConnectionError):  # not serving yet
                writers = [
                    metric(p, "feedflow_index_items", 'role="writer"') for p in (port, port + 1)
                ]
                if max(writers) >= catalogue:
                    break
            time.sleep(0.2)
    finally:
        stop(cluster)
    assert sorted(writers) == [0, catalogue], f"index items by member: {writers}"
