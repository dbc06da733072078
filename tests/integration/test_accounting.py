"""Accounting that closes: every event the engagement flow reads is counted
once, as ok, invalid, duplicate, late or error, and the sum is what the simulator produced.

Simulated traffic with malformed payloads, then re-sends of some valid events (the same
`event_id`: duplicates) and events stamped far behind their users' newest (late), through
`feedflow flow engagement` on a real broker and Redis; the flow's own `/metrics` is read.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from feedflow.simulator.engine import SimConfig, Simulation
from feedflow.simulator.writers import ListSink
from feedflow.stack import StackInfo, free_port
from operators.contracts import TOPIC_ENGAGEMENT, TOPIC_MEDIA, EngagementEvent, decode_engagement
from tests.integration.processes import stop
from tests.integration.test_engagement_flow_kafka import START_MS, start_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTCOMES = ("ok", "invalid", "duplicate", "late", "error")
HOUR_MS = 3_600_000


def counted(port: int) -> dict[str, float]:
    """`feedflow_events_total` of the engagement topic by outcome, from the flow's /metrics."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("feedflow_events_total{") and f'topic="{TOPIC_ENGAGEMENT}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def test_events_read_equal_ok_invalid_duplicate_late_and_error(
    private_stack: StackInfo, tmp_path: Path
) -> None:
    sim = Simulation(
        SimConfig(users=150, items=300, rate=3_000, duration_s=1, seed=5, malformed=0.03,
                  start_ms=START_MS),
        now_ms=START_MS,
    )  # fmt: skip
    sink = ListSink()
    summary = sim.run(sink)
    engagement = [m for m in sink.messages if m[0] == TOPIC_ENGAGEMENT]
    valid = [(k, v) for _, k, _, v in engagement
             if isinstance(decode_engagement(v.encode()), EngagementEvent)]  # fmt: skip
    # The same event_id again, for users' newest events (an older one would count as late:
    # lateness is judged before duplication).
    newest = {key: (key, value) for key, value in valid}
    duplicates = list(newest.values())[:40]
    late = []
    for n, (key, value) in enumerate(valid[1 :: max(len(valid) // 25, 1)][:25]):
        event = orjson.loads(value)
        event["event_id"] = f"late-{n}"
        event["ts"] = START_MS - 24 * HOUR_MS  # a day behind: beyond the allowed lateness
        late.append((key, orjson.dumps(event).decode()))
    producer = Producer({"bootstrap.servers": private_stack.bootstrap, "linger.ms": 5})
    for topic, key, _, value in sink.messages:
        producer.produce(topic, key=key.encode(), value=value.encode())
    for key, value in [*duplicates, *late]:  # after everything: every user has newer events
        producer.produce(TOPIC_ENGAGEMENT, key=key.encode(), value=value.encode())
    assert producer.flush(60) == 0
    produced = len(engagement) + len(duplicates) + len(late)
    assert summary.topics[TOPIC_MEDIA] > 0 and summary.malformed > 0

    port = free_port()
    flow = start_flow("engagement", private_stack, tmp_path / "eng", "--no-recovery",
                      "--metrics-port", str(port))  # fmt: skip
    try:
        deadline, seen = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            assert flow.poll() is None, "the flow stopped"
            seen = counted(port)
            if sum(seen.values()) >= produced:
                break
            time.sleep(1.0)
        time.sleep(2.0)  # nothing is counted twice: the totals stay put
        final = counted(port)
    finally:
        stop(flow)
    assert sum(final.get(o, 0.0) for o in OUTCOMES) == produced, final
    assert set(final) <= set(OUTCOMES)
    assert final.get("invalid") == summary.malformed
    assert final.get("duplicate") == len(duplicates)
    assert final.get("late") == len(late)
    assert final.get("error", 0.0) == 0.0
