"""The event lake's store: hour partitions, journals, compaction, versions, erasure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.contracts import EngagementEvent, Impression, ImpressionItem
from operators.emissions import Segment
from state.lake import HOUR_MS, Lake, LakeError, hour_dir, hour_of_dir, in_arrival_order, unique
from state.lake_schema import (
    EVENTS,
    IMPRESSIONS,
    VERSION_KEY,
    VIEWS,
    Arrived,
    feature_names,
    record_of,
)

T0 = 1_764_900_000_000 // HOUR_MS * HOUR_MS  # an hour's start


def event(n: int, user: str = "u1", ts: int = T0) -> EngagementEvent:
    return EngagementEvent(
        event_id=f"e{n}", event_type="media_progress", user_id=user, ts=ts, media_id=f"m{n % 5}",
        position_s=float(n), session_id="s1", content_type="VIDEO", country="DE",
    )  # fmt: skip


def view(user: str, end_ts: int) -> Segment:
    return Segment(
        user_id=user, media_id="m1", start_ts=end_ts - 60_000, end_ts=end_ts, consumed_s=55.0,
        dwell_s=60.0, max_position_s=58.0, last_position_s=58.0, duration_s=60.0,
        watch_fraction=55 / 60, completed=True, early_abandon=False, replays=0, signals=3,
        watch_score=0.8, content_type="VIDEO",
    )  # fmt: skip


def impression(user: str, ts: int) -> Impression:
    items = [
        ImpressionItem(media_id=f"m{n}", position=n, score=1.0 - n / 10, source="ann",
                       features=[0.5, float(n)])
        for n in range(3)
    ]  # fmt: skip
    return Impression(
        request_id=f"r-{user}-{ts}", user_id=user, ts=ts, arm="default", model_version="v1",
        index_version="i1", items=items,
    )  # fmt: skip


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_rows_land_in_the_hour_of_their_event_time_and_read_back_as_written(lake: Lake) -> None:
    events = [event(n, ts=T0 + n * 20 * 60_000) for n in range(7)]  # 0..120 min: 3 hours
    lake.write_epoch("engagement-0", "r1", 0, {EVENTS: events})
    assert lake.hours(EVENTS) == [T0 // HOUR_MS + h for h in range(3)]
    back = [record_of(EVENTS, row) for row in lake.read(EVENTS).to_pylist()]
    assert sorted(back, key=lambda e: e.ts) == events
    # A time range reads only what lies inside it, even within an hour's file.
    middle = lake.read(EVENTS, T0 + 30 * 60_000, T0 + 70 * 60_000)
    assert middle.column("event_id").to_pylist() == ["e2", "e3"]


def test_views_and_impressions_keep_their_fields(lake: Lake) -> None:
    v = view("u1", T0 + 1000)
    imp = impression("u2", T0 + 2000)
    lake.write_epoch("p", "r1", 0, {VIEWS: [v], IMPRESSIONS: [imp]})
    assert [record_of(VIEWS, row) for row in lake.read(VIEWS).to_pylist()] == [v]
    rows = lake.read(IMPRESSIONS)
    assert rows.column("media_id").to_pylist() == ["m0", "m1", "m2"]
    assert rows.column("position").to_pylist() == [0, 1, 2]
    assert rows.column("features").to_pylist()[2] == [0.5, 2.0]
    assert rows.column("request_id").to_pylist() == [imp.request_id] * 3
    assert feature_names(rows.schema)[:2] == ("similarity", "category_affinity")


def test_hour_directories_name_dates_in_utc() -> None:
    hour = T0 // HOUR_MS
    assert hour_of_dir(f"events/{hour_dir(hour)}") == hour
    assert hour_of_dir("events/date=x/hour=1") is None


def test_a_resumed_writer_deletes_what_uncommitted_epochs_wrote(lake: Lake) -> None:
    for seq in range(4):
        lake.write_epoch("p", "r1", seq, {EVENTS: [event(seq, ts=T0 + seq * HOUR_MS)]})
    lake.write_epoch("q", "r1", 3, {EVENTS: [event(9)]})  # another part: untouched
    # Resumed at epoch 2: epochs 2 and 3 were never committed; the replay writes them again.
    assert lake.settle("p", "r1", 2) == 2
    assert sorted(lake.read(EVENTS).column("event_id").to_pylist()) == ["e0", "e1", "e9"]
    assert not list((Path(lake.root) / "_journal" / "p").iterdir())


def test_a_part_without_a_committed_epoch_deletes_every_journaled_file(lake: Lake) -> None:
    lake.write_epoch("p", "old", 0, {EVENTS: [event(1)]})
    lake.write_epoch("p", "old", 1, {EVENTS: [event(2)]})
    lake.forget_journals("p", "old", below_seq=1)  # epoch 0 committed: its journal is gone
    assert lake.settle("p", "new", None) == 1
    assert lake.read(EVENTS).column("event_id").to_pylist() == ["e1"]


def test_compaction_merges_an_hour_into_one_file_with_the_same_rows(lake: Lake) -> None:
    for seq in range(5):
        lake.write_epoch("p", "r1", seq, {EVENTS: [event(seq), event(seq + 10, ts=T0 + HOUR_MS)]})
    lake.settle("p", "r1", 5)  # every epoch committed: no journal left
    before = sorted(lake.read(EVENTS).column("event_id").to_pylist())
    done = lake.compact(EVENTS, before_ms=T0 + HOUR_MS)  # the second hour is not over yet
    assert (done.hours, done.files, done.rows) == (1, 5, 5)
    assert [Path(f).name.startswith("compacted-") for f in lake.files(EVENTS)] == [True] + [
        False
    ] * 5
    assert sorted(lake.read(EVENTS).column("event_id").to_pylist()) == before
    # Late events reach a compacted hour; the next compaction merges them in.
    lake.write_epoch("p", "r2", 0, {EVENTS: [event(20)]})
    lake.settle("p", "r2", 1)
    assert lake.compact(EVENTS, before_ms=T0 + HOUR_MS).files == 2
    assert len(lake.files(EVENTS, T0, T0 + HOUR_MS)) == 1
    assert lake.read(EVENTS, T0, T0 + HOUR_MS).num_rows == 6


def test_a_compaction_stopped_before_deleting_its_sources_duplicates_nothing(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seq in range(3):
        lake.write_epoch("p", "r1", seq, {EVENTS: [event(seq)]})
    lake.settle("p", "r1", 3)

    def crash(path: str) -> int:
        raise OSError("killed")

    monkeypatch.setattr(lake, "_rm", crash)
    with pytest.raises(OSError):
        lake.compact(EVENTS, before_ms=T0 + HOUR_MS)
    monkeypatch.undo()
    assert len(list(Path(lake.root, "events", hour_dir(T0 // HOUR_MS)).iterdir())) == 4
    assert sorted(lake.read(EVENTS).column("event_id").to_pylist()) == ["e0", "e1", "e2"]
    lake.compact(EVENTS, before_ms=T0 + HOUR_MS)
    assert len(list(Path(lake.root, "events", hour_dir(T0 // HOUR_MS)).iterdir())) == 1


def test_compaction_leaves_files_of_epochs_that_may_not_be_committed(lake: Lake) -> None:
    for seq in range(3):
        lake.write_epoch("p", "r1", seq, {EVENTS: [event(seq)]})
    lake.forget_journals("p", "r1", below_seq=2)  # epoch 2's journal is still there
    done = lake.compact(EVENTS, before_ms=T0 + HOUR_MS)
    assert done.files == 2
    lake.settle("p", "r1", 2)  # the writer resumes at 2: its file goes, the replay rewrites it
    assert sorted(lake.read(EVENTS).column("event_id").to_pylist()) == ["e0", "e1"]


def test_journals_older_than_the_horizon_no_longer_hold_their_files_back(lake: Lake) -> None:
    for seq in range(3):
        lake.write_epoch("p", "r1", seq, {EVENTS: [event(seq)]})  # all journaled
    assert lake.compact(EVENTS, before_ms=T0 + HOUR_MS).files == 0
    # A quiet flow's last journals stay; an hour on, its files compact.
    assert lake.compact(EVENTS, before_ms=T0 + HOUR_MS, journal_horizon_ms=-1).files == 3
    assert sorted(lake.read(EVENTS).column("event_id").to_pylist()) == ["e0", "e1", "e2"]


def test_a_file_of_a_newer_schema_version_is_refused(lake: Lake) -> None:
    lake.write_epoch("p", "r1", 0, {EVENTS: [event(1)]})
    [path] = lake.files(EVENTS)
    table = pq.read_table(path)
    newer = table.replace_schema_metadata({**table.schema.metadata, VERSION_KEY: b"99"})
    out = io.BytesIO()
    pq.write_table(newer, out)
    Path(path).write_bytes(out.getvalue())
    with pytest.raises(LakeError, match="schema version 99"):
        lake.read(EVENTS)


def test_a_file_of_schema_version_1_reads_with_no_arrival_and_compacts_with_newer_ones(
    lake: Lake,
) -> None:
    lake.write_epoch("p", "r1", 0, {EVENTS: [event(1, ts=T0 + 5)]})
    [path] = lake.files(EVENTS)
    table = pq.read_table(path)
    old = table.drop_columns(["arrival"]).replace_schema_metadata(
        {**table.schema.metadata, VERSION_KEY: b"1"}
    )
    out = io.BytesIO()
    pq.write_table(old, out)
    Path(path).write_bytes(out.getvalue())
    lake.write_epoch("p", "r1", 1, {EVENTS: [Arrived(event(2, ts=T0 + 9), 7)]})
    rows = lake.read(EVENTS).to_pylist()
    assert [(r["event_id"], r["arrival"]) for r in rows] == [("e1", None), ("e2", 7)]
    assert [r["event_id"] for r in in_arrival_order(lake.read(EVENTS)).to_pylist()] == [
        "e2",
        "e1",
    ]  # fmt: skip  (7 µs after the epoch, before T0 + 5 ms)
    lake.compact(EVENTS, before_ms=T0 + 2 * HOUR_MS, journal_horizon_ms=0)
    assert lake.read(EVENTS).to_pylist() == rows


def test_forget_removes_every_row_of_a_user_and_nothing_else(lake: Lake) -> None:
    lake.write_epoch("p", "r1", 0, {
        EVENTS: [event(1, "u1"), event(2, "u2"), event(3, "u1", T0 + HOUR_MS)],
        VIEWS: [view("u1", T0 + 5), view("u2", T0 + 6)],
        IMPRESSIONS: [impression("u1", T0 + 7)],
    })  # fmt: skip
    assert lake.holds("u1")
    assert lake.forget("u1") == {"events": 2, "views": 1, "impressions": 3}
    assert not lake.holds("u1")
    assert lake.read(EVENTS).column("user_id").to_pylist() == ["u2"]
    assert lake.read(VIEWS).column("user_id").to_pylist() == ["u2"]
    assert lake.read(IMPRESSIONS).num_rows == 0


def test_retention_deletes_whole_hours_that_ended_before_it(lake: Lake) -> None:
    lake.write_epoch("p", "r1", 0, {EVENTS: [event(1), event(2, ts=T0 + 2 * HOUR_MS)]})
    assert lake.expire(before_ms=T0 + HOUR_MS) == 1
    assert lake.read(EVENTS).column("event_id").to_pylist() == ["e2"]


def test_readers_keep_one_row_per_key(lake: Lake) -> None:
    lake.write_epoch("p", "r1", 0, {
        EVENTS: [event(1), event(2), event(1)],
        VIEWS: [view("u1", T0 + 5), view("u2", T0 + 5), view("u1", T0 + 5)],
        IMPRESSIONS: [impression("u1", T0 + 7), impression("u1", T0 + 7)],
    })  # fmt: skip
    assert unique(EVENTS, lake.read(EVENTS)).column("event_id").to_pylist() == ["e1", "e2"]
    assert unique(VIEWS, lake.read(VIEWS)).column("user_id").to_pylist() == ["u1", "u2"]
    assert unique(IMPRESSIONS, lake.read(IMPRESSIONS)).num_rows == 3


def test_the_journal_lists_the_files_of_its_epoch(lake: Lake) -> None:
    files = lake.write_epoch("p", "r1", 7, {EVENTS: [event(1)], VIEWS: [view("u1", T0 + 9)]})
    journal = Path(lake.root, "_journal", "p", "r1-0000000007.json")
    assert json.loads(journal.read_text())["files"] == files
    assert all(Path(lake.root, f).exists() for f in files)


def test_an_empty_lake_reads_as_empty_tables_of_the_schema(lake: Lake) -> None:
    table = lake.read(EVENTS, columns=["user_id", "ts"])
    assert table.num_rows == 0 and table.schema.names == ["user_id", "ts"]
    assert isinstance(lake.read(VIEWS), pa.Table)
