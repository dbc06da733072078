"""Pieces the flow benchmarks share: flow processes, Kafka probes and Redis reads.

Everything here talks to a private local stack on loopback and is bounded: every wait has a
deadline and raises :class:`BenchError` (with the tail of the process log) when it passes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from feedflow.bench.machine import tree_cpu_s
from flows.kafka_in import CONSUMER_CONFIG
from kernel.errors import FeedflowError
from operators.contracts import EngagementEvent, decode_engagement
from state.redis_client import RedisClient

# Inherited settings must not leak into the processes a benchmark starts.
_OWN_ENV = ("FEEDFLOW_", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
FEATURE_PATTERNS = ("ff:{u:*", "ff:{i:*", "ff:{t:*")


class BenchError(FeedflowError):
    """A benchmark could not be run to the end (a process died, a deadline passed)."""


def quantiles(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """Mean, P50, P99 and max by nearest rank.

    Example:
        >>> quantiles([1, 2, 3, 4])
        {'mean': 2.5, 'p50': 2, 'p99': 4, 'max': 4}
    """
    if not values:
        return {"mean": math.nan, "p50": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(math.ceil(q * len(ordered)) - 1, 0)], digits)

    mean = round(sum(ordered) / len(ordered), digits)
    return {"mean": mean, "p50": rank(0.5), "p99": rank(0.99), "max": round(ordered[-1], digits)}


@dataclass
class FlowProcess:
    """A `feedflow flow NAME` subprocess with its log, CPU time and a clean stop."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, name: str, state_dir: Path, env: dict[str, str], *extra: str) -> FlowProcess:
        """Start `feedflow flow NAME` with `env` on top of a cleaned environment."""
        state_dir.mkdir(parents=True, exist_ok=True)
        log = state_dir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV)}
        full_env = {**base, "FEEDFLOW_STATE_DIR": str(state_dir), **env}
        argv = [sys.executable, "-m", "feedflow.cli", *extra]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return cls(name, proc, log)

    def check_alive(self) -> None:
        """Raise with the log's tail when the process has exited."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the process's log ("" when it cannot be read)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process and its members so far (0 when gone)."""
        return tree_cpu_s(self.proc.pid)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT, then SIGKILL after `timeout_s`; always reaped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(
    what: str, check: Callable[[], bool], timeout_s: float, procs: Iterable[FlowProcess] = ()
) -> float:
    """Poll `check` every 10 ms until it holds; return the time it took."""
    start = time.perf_counter()
    deadline = start + timeout_s
    watched = list(procs)
    while not check():
        for p in watched:
            p.check_alive()
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter() - start


def count_keys(client: RedisClient, pattern: str) -> int:
    """How many keys match `pattern` (a SCAN, so it never blocks Redis)."""
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def clear_features(client: RedisClient) -> int:
    """Delete every feature key (users, items, trending), not the item store."""
    deleted = 0
    for pattern in FEATURE_PATTERNS:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            deleted += int(client.unlink(*keys[start : start + 1000]))
    return deleted


def wait_catalogue(
    client: RedisClient,
    at_least: int,
    timeout_s: float,
    procs: Sequence[FlowProcess],
    settle_s: float = 1.0,
) -> int:
    """Wait until the item store holds `at_least` items and stopped growing for `settle_s`."""
    last, stable_since = -1, time.perf_counter()
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        for p in procs:
            p.check_alive()
        n = count_keys(client, "ff:item:*")
        if n != last:
            last, stable_since = n, time.perf_counter()
        if n >= at_least and time.perf_counter() - stable_since >= settle_s:
            return n
        time.sleep(0.25)
    raise BenchError(f"the catalogue did not load: {last} of {at_least} items in {timeout_s} s")


def catalogue_ids(client: RedisClient, limit: int) -> list[str]:
    """Up to `limit` media ids from the item store."""
    ids: list[str] = []
    for key in client.scan_iter(match="ff:item:*", count=1000):
        text = key.decode()
        ids.append(text[text.index("{") + 1 : text.rindex("}")])
        if len(ids) >= limit:
            break
    return sorted(ids)


def redis_value_sizes(
    client: RedisClient, pattern: str, sample: int, skip: bytes | None = b"bench-"
) -> dict[str, Any]:
    """`MEMORY USAGE` (key + value + overhead) and raw value length over sampled keys; keys
    containing `skip` (the flow benchmarks' probes) are left out."""
    keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        if skip is None or skip not in key:
            keys.append(key)
        if len(keys) >= sample:
            break
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.strlen(key)
    replies = pipe.execute()
    usage = [float(r) for r in replies[0::2] if r]
    lengths = [float(r) for r in replies[1::2] if r]
    return {"sampled": len(keys), "memory_usage": quantiles(usage), "value_len": quantiles(lengths)}


def engagement_payload(event_id: str, user: str, media: str, ts: int) -> bytes:
    """One valid `media_liked` event (explicit feedback needs no position)."""
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_type": "media_liked",
            "user_id": user,
            "media_id": media,
            "ts": ts,
        }
    )


def read_all(
    bootstrap: str, topic: str, partitions: int, batch: int, timeout_s: float
) -> dict[str, Any]:
    """The broker/decoding ceiling: read `topic` from the start to its end and decode it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **CONSUMER_CONFIG,  # the flows' consumer settings: the same fetch behaviour
        }
    )
    messages = valid = 0
    eof: set[int] = set()
    wall, cpu = time.perf_counter(), time.process_time()
    first = 0.0
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    try:
        while len(eof) < partitions:
            if time.perf_counter() - wall > timeout_s:
                raise BenchError(f"read_all: {topic} not read to its end in {timeout_s} s")
            msgs = consumer.consume(batch, 0.1)
            first = first or (time.perf_counter() if msgs else 0.0)
            for msg in msgs:
                err = msg.error()
                if err is None:
                    messages += 1
                    valid += isinstance(decode_engagement(msg.value() or b""), EngagementEvent)
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition() or 0)
                else:
                    raise BenchError(f"read_all: consumer error {err}")
        end, cpu_s = time.perf_counter(), time.process_time() - cpu
    finally:
        consumer.close()
    return {
        "messages": messages,
        "valid": valid,
        "seconds_total": round(end - wall, 3),
        "seconds_steady": round(end - first, 3),
        "events_per_s_total": round(messages / (end - wall)),
        "events_per_s": round(messages / (end - first)),
        "events_per_cpu_s": round(messages / max(cpu_s, 1e-9)),
    }
