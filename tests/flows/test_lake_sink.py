"""The engagement flow's lake: every valid event and every closed view, exactly once, also
when the flow crashes and resumes anywhere."""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import engagement
from flows.lake_sink import LakeSink
from kernel.settings import Settings
from operators.contracts import TOPIC_ENGAGEMENT, EngagementEvent, decode_engagement
from operators.emissions import Segment
from operators.erasure import Tombstones
from operators.item_info import lookup_from
from state.lake import Lake, in_arrival_order
from state.lake_schema import EVENTS, VIEWS, record_of
from tests.flows.test_engagement_flow import catalogue, simulate

SETTINGS = Settings(kafka_bootstrap_servers="unused", redis_url="unused")


@functools.cache
def simulated() -> dict[str, Any]:
    _sim, messages = simulate(users=25, items=120, rate=800, duration=8, malformed=0.02)
    inputs = [
        KafkaSourceMessage(key.encode(), value.encode(), topic=topic, partition=0, offset=n)
        for n, (topic, key, _ts, value) in enumerate(messages)
        if topic == TOPIC_ENGAGEMENT
    ]
    valid = [e for m in inputs if isinstance(e := decode_engagement(m.value), EngagementEvent)]
    return {"inputs": inputs, "valid": valid, "items": catalogue(messages)}


@pytest.fixture(scope="module")
def traffic() -> dict[str, Any]:
    return simulated()


def run(
    traffic: dict[str, Any],
    inputs: list[Any],
    lake: Lake,
    recovery: RecoveryConfig | None = None,
    erased: Tombstones | None = None,
    batch_size: int = 100,
) -> list[Any]:
    writes: list[Any] = []
    flow = engagement.build_flow(
        SETTINGS,
        source=TestingSource(inputs, batch_size=batch_size),
        deadletters=TestingSink([]),
        features=TestingSink(writes),
        items=lambda: lookup_from(traffic["items"]),
        erased=erased or Tombstones(),
        lake=LakeSink("engagement", 3, lake, erased),
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    return writes


def views_of(lake: Lake) -> list[Segment]:
    views = [record_of(VIEWS, row) for row in lake.read(VIEWS).to_pylist()]
    return sorted(views, key=lambda v: (v.user_id, v.media_id, v.start_ts))


def ids_of(lake: Lake) -> Counter[str]:
    return Counter(lake.read(EVENTS).column("event_id").to_pylist())


@functools.cache
def clean_run() -> tuple[Counter[str], list[Segment]]:
    """Event ids and views of a run without a crash."""
    work = tempfile.mkdtemp()
    try:
        lake = Lake(f"{work}/lake")
        run(simulated(), simulated()["inputs"], lake)
        return ids_of(lake), views_of(lake)
    finally:
        shutil.rmtree(work)


@pytest.fixture(scope="module")
def clean(traffic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(str(tmp_path_factory.mktemp("clean") / "lake"))
    run(traffic, traffic["inputs"], lake)
    return lake


def test_the_lake_holds_every_valid_event_as_it_arrived(traffic, clean: Lake) -> None:
    assert ids_of(clean) == Counter(e.event_id for e in traffic["valid"])
    table = clean.read(EVENTS)
    by_id = {row["event_id"]: row for row in table.to_pylist()}
    for ev in traffic["valid"][:200]:
        row = by_id[ev.event_id]
        assert (row["user_id"], row["ts"], row["media_id"], row["position_s"]) == (
            ev.user_id, ev.ts, ev.media_id, ev.position_s,
        )  # fmt: skip


def test_read_back_in_arrival_order_each_users_events_come_as_the_flow_read_them(
    traffic, tmp_path: Path
) -> None:
    # One user's first event arrives last (a phone that was offline): the lake files it in
    # its hour, hours before the rest, and the arrival order still puts it last.
    inputs = list(traffic["inputs"])
    first = next(n for n, m in enumerate(inputs) if isinstance(decode_engagement(m.value),
                                                               EngagementEvent))  # fmt: skip
    late = decode_engagement(inputs[first].value)
    assert isinstance(late, EngagementEvent)
    inputs.append(inputs.pop(first))
    lake = Lake(str(tmp_path / "lake"))
    run(traffic, inputs, lake)
    table = in_arrival_order(lake.read(EVENTS))
    assert table.column("arrival").null_count == 0
    read: dict[str, list[str]] = {}
    for row in table.select(["user_id", "event_id"]).to_pylist():
        read.setdefault(row["user_id"], []).append(row["event_id"])
    sent: dict[str, list[str]] = {}
    for m in inputs:
        if isinstance(ev := decode_engagement(m.value), EngagementEvent):
            sent.setdefault(ev.user_id, []).append(ev.event_id)
    assert read == sent
    assert read[late.user_id][-1] == late.event_id
    by_time = lake.read(EVENTS).sort_by("ts").column("event_id").to_pylist()
    assert by_time.index(late.event_id) < by_time.index(read[late.user_id][0])


def test_closed_views_reach_the_lake_with_their_consumption(clean: Lake) -> None:
    views = views_of(clean)
    assert len(views) > 50
    assert all(v.final and v.consumed_s >= 0 and v.end_ts >= v.start_ts for v in views)
    assert any(v.completed for v in views) and any(v.early_abandon for v in views)


class CrashError(Exception):
    """The process died between writing an epoch's files and committing the epoch."""


class CrashingLake(Lake):
    """A lake whose writer dies right after its `after`-th epoch's files are written."""

    def __init__(self, root: str, after: int) -> None:
        super().__init__(root)
        self.left = after

    def write_epoch(self, *args: Any, **kwargs: Any) -> list[str]:
        files = super().write_epoch(*args, **kwargs)
        self.left -= 1
        if self.left == 0:
            raise CrashError
        return files


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crashes=st.lists(st.integers(1, 40), min_size=1, max_size=2),
    batches=st.lists(st.integers(20, 200), min_size=3, max_size=3),
)
def test_a_flow_crashed_after_writing_and_resumed_writes_each_row_once(
    crashes: list[int], batches: list[int]
) -> None:
    # A crash after an epoch's files are written and before Bytewax commits the epoch; each
    # run cuts its epochs (one per batch) differently, as a real restart does, so the
    # replayed epoch may end before or after the one that crashed.
    traffic = simulated()
    work = Path(tempfile.mkdtemp())
    try:
        (work / "recovery").mkdir()
        init_db_dir(work / "recovery", 1)
        recovery = RecoveryConfig(str(work / "recovery"))
        root = str(work / "lake")
        for n, after in enumerate(crashes):
            with contextlib.suppress(BytewaxRuntimeError):  # CrashError, as Bytewax reports it
                run(
                    traffic,
                    traffic["inputs"],
                    CrashingLake(root, after),
                    recovery,
                    batch_size=batches[n],
                )
        lake = Lake(root)
        run(traffic, traffic["inputs"], lake, recovery, batch_size=batches[-1])
        assert (ids_of(lake), views_of(lake)) == clean_run()
    finally:
        shutil.rmtree(work)


def test_rows_of_an_erased_user_are_not_written(traffic, tmp_path: Path) -> None:
    from operators.contracts import ErasureRequest

    user = traffic["valid"][0].user_id
    erased = Tombstones([ErasureRequest(user_id=user, ts=2**62, request_id="r1")])
    lake = Lake(str(tmp_path / "lake"))
    run(traffic, traffic["inputs"], lake, erased=erased)
    assert lake.read(EVENTS).num_rows > 0
    assert not lake.holds(user)
