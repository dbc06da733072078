"""What the event lake keeps: its datasets, their Parquet schemas, and records → tables.

Three datasets, each a table of flat rows partitioned by the hour of its time column:

- `events`: validated engagement events as they arrived (client retries included: readers
  keep one row per `event_id`, :func:`state.lake.unique`), each with its `arrival`: a
  stamp that rises along what one flow worker read (microseconds of its clock, kept strictly
  increasing), so a user's events can be read back in the order the flow applied them
  (:func:`state.lake.in_arrival_order`; rows of schema version 1 have none).
- `views`: closed consumption segments, the sessionizer's output (seconds played, watch
  fraction, completion, early abandonment, replays, signals).
- `impressions`: one row per served item: the request, the item's place and score, and the
  feature row it was ranked with (columns in the order of :data:`feature_names`).

A file's key-value metadata names its dataset and schema version; a reader refuses a version
it does not know instead of guessing. Adding a nullable column is a new version that readers
of the old one fill with nulls; anything else needs a migration. Version 2 added
`events.arrival`.

Example:
    >>> from operators.contracts import EngagementEvent
    >>> ev = EngagementEvent(event_id="e1", event_type="media_started", user_id="u1", ts=7)
    >>> table = EVENTS.table([ev])
    >>> table.num_rows, table.column("user_id").to_pylist(), table.schema.metadata[VERSION_KEY]
    (1, ['u1'], b'2')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
import pyarrow as pa

from operators.contracts import EngagementEvent, Impression
from operators.emissions import Segment
from operators.ranking_contract import FEATURES

SCHEMA_VERSION: Final = 2
VERSION_KEY: Final = b"feedflow.schema_version"
DATASET_KEY: Final = b"feedflow.dataset"
FEATURES_KEY: Final = b"feedflow.features"


class Dataset:
    """One dataset: its name, Parquet schema, time column, the columns that identify a row
    (`key`: a row written again by a replay has the same), and how a record becomes a row."""

    def __init__(
        self, name: str, schema: pa.Schema, time_column: str, key: tuple[str, ...]
    ) -> None:
        self.name, self.time_column, self.key = name, time_column, key
        meta = {VERSION_KEY: str(SCHEMA_VERSION).encode(), DATASET_KEY: name.encode()}
        if "features" in schema.names:
            meta[FEATURES_KEY] = ",".join(FEATURES).encode()
        self.schema = schema.with_metadata(meta)

    def columns(self, records: Sequence[Any]) -> dict[str, list[Any]]:
        """The records' values, column by column (the struct fields of the schema's names)."""
        return {name: [getattr(r, name) for r in records] for name in self.schema.names}

    def table(self, records: Sequence[Any]) -> pa.Table:
        """The records as a table of this dataset's schema."""
        return pa.Table.from_pydict(self.columns(records), schema=self.schema)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"


class Arrived(msgspec.Struct, frozen=True, array_like=True):
    """An event as the lake sink keeps it: with its arrival stamp."""

    event: EngagementEvent
    arrival: int

    @property
    def user_id(self) -> str:
        """The event's user."""
        return self.event.user_id

    @property
    def ts(self) -> int:
        """The event's time."""
        return self.event.ts


class _Events(Dataset):
    def columns(self, records: Sequence[Any]) -> dict[str, list[Any]]:
        events = [r.event if type(r) is Arrived else r for r in records]
        out = {name: [getattr(e, name) for e in events] for name in self.schema.names[:-1]}
        out["arrival"] = [r.arrival if type(r) is Arrived else None for r in records]
        return out


class _Impressions(Dataset):
    def columns(self, records: Sequence[Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        for imp in records:
            n = len(imp.items)
            for name in ("request_id", "user_id", "ts", "arm", "model_version", "index_version"):
                rows[name].extend([getattr(imp, name)] * n)
            for item in imp.items:
                rows["media_id"].append(item.media_id)
                rows["position"].append(item.position)
                rows["score"].append(item.score)
                rows["source"].append(item.source)
                rows["features"].append(item.features)
        return rows


_str, _i64, _f64 = pa.string(), pa.int64(), pa.float64()

EVENTS: Final = _Events(
    "events",
    pa.schema(
        [
            ("event_id", _str),
            ("event_type", _str),
            ("user_id", _str),
            ("ts", _i64),
            ("media_id", _str),
            ("creator_id", _str),
            ("position_s", _f64),
            ("from_position_s", _f64),
            ("session_id", _str),
            ("content_type", _str),
            ("device", _str),
            ("country", _str),
            ("language", _str),
            ("arrival", _i64),  # last: _Events.columns takes the others from the event
        ]
    ),
    "ts",
    ("event_id",),
)
VIEWS: Final = Dataset(
    "views",
    pa.schema(
        [
            ("user_id", _str),
            ("media_id", _str),
            ("start_ts", _i64),
            ("end_ts", _i64),
            ("consumed_s", _f64),
            ("dwell_s", _f64),
            ("max_position_s", _f64),
            ("last_position_s", _f64),
            ("duration_s", _f64),
            ("watch_fraction", _f64),
            ("completed", pa.bool_()),
            ("early_abandon", pa.bool_()),
            ("replays", pa.int32()),
            ("signals", pa.int32()),
            ("watch_score", _f64),
            ("content_type", _str),
        ]
    ),
    "end_ts",
    ("user_id", "media_id", "start_ts"),
)
IMPRESSIONS: Final = _Impressions(
    "impressions",
    pa.schema(
        [
            ("request_id", _str),
            ("user_id", _str),
            ("ts", _i64),
            ("arm", _str),
            ("model_version", _str),
            ("index_version", _str),
            ("media_id", _str),
            ("position", pa.int32()),
            ("score", _f64),
            ("source", _str),
            ("features", pa.list_(pa.float32())),
        ]
    ),
    "ts",
    ("request_id", "media_id"),
)
DATASETS: Final = {d.name: d for d in (EVENTS, VIEWS, IMPRESSIONS)}
LakeRecord = EngagementEvent | Arrived | Segment | Impression


def dataset_of(record: LakeRecord) -> Dataset:
    """The dataset a record belongs to."""
    if isinstance(record, EngagementEvent | Arrived):
        return EVENTS
    if isinstance(record, Segment):
        return VIEWS
    return IMPRESSIONS


def feature_names(schema: pa.Schema) -> tuple[str, ...]:
    """The ranking features of an impressions file's `features` column, in column order."""
    raw = (schema.metadata or {}).get(FEATURES_KEY, b"")
    return tuple(raw.decode().split(",")) if raw else ()


def record_of(dataset: Dataset, row: dict[str, Any]) -> Any:
    """A row read back as the record it was written from (events and views)."""
    kind = EngagementEvent if dataset is EVENTS else Segment
    fields = {k: v for k, v in row.items() if v is not None and k != "arrival"}
    return msgspec.convert(fields, kind)


def impressions_of(table: pa.Table) -> list[Impression]:
    """Impression records from rows of the impressions dataset (one row per served item)."""
    by_request: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        imp = by_request.setdefault(row["request_id"], {
            k: row[k] for k in ("request_id", "user_id", "ts", "arm", "model_version",
                                "index_version")
        } | {"items": []})  # fmt: skip
        imp["items"].append({k: row[k] for k in ("media_id", "position", "score", "source",
                                                  "features")})  # fmt: skip
    return [msgspec.convert(v, Impression) for v in by_request.values()]
