"""`feedflow index status` shows the items a reader holds now, not only the last snapshot's:
the index writer announces its live count with each heartbeat."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from operators.contracts import MediaPublished, encode
from state.index_keys import IndexKeys
from state.index_rebuild import status
from state.index_registry import IndexRegistry
from state.index_replica import IndexParams
from state.index_writer import Change, IndexWriter
from state.snapshots import DirSnapshotStore


class FakeRedis:
    """The strings, hashes and streams the index writer and `status` use, in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._ids = itertools.count(1)

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any, px: int | None = None) -> None:
        self.data[key] = value if isinstance(value, bytes) else str(value).encode()

    def exists(self, key: str) -> int:
        return int(key in self.data)

    def delete(self, *keys: str) -> int:
        return sum(self.data.pop(k, None) is not None for k in keys)

    def incr(self, key: str) -> int:
        self.data[key] = str(int(self.data.get(key, b"0")) + 1).encode()
        return int(self.data[key])

    def hset(self, key: str, field: str, value: bytes) -> None:
        self.data.setdefault(key, {})[field.encode()] = value

    def hget(self, key: str, field: str) -> bytes | None:
        return self.data.get(key, {}).get(field.encode())

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.data.get(key, {}))

    def xadd(self, key: str, fields: dict[bytes, bytes]) -> bytes:
        entry_id = f"{next(self._ids)}-0".encode()
        self.data.setdefault(key, []).append((entry_id, fields))
        return entry_id

    def xrange(self, key: str, start: str, end: str, count: int) -> list[Any]:
        after = int(start.lstrip("(").split("-")[0])
        return [e for e in self.data.get(key, []) if int(e[0].split(b"-")[0]) > after][:count]

    def xrevrange(self, key: str, end: str, start: str, count: int) -> list[Any]:
        return list(reversed(self.data.get(key, [])))[:count]

    def xlen(self, key: str) -> int:
        return len(self.data.get(key, []))

    def xtrim(self, key: str, minid: str, approximate: bool) -> None:
        floor = int(minid.split("-", maxsplit=1)[0])
        self.data[key] = [e for e in self.data.get(key, []) if int(e[0].split(b"-")[0]) >= floor]

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    """Queues calls and runs them in order on `execute`."""

    def __init__(self, client: FakeRedis) -> None:
        self._client, self._calls = client, list[tuple[str, tuple[Any, ...], dict[str, Any]]]()

    def __len__(self) -> int:
        return len(self._calls)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kw: self._calls.append((name, args, kw))

    def execute(self) -> list[Any]:
        return [getattr(self._client, n)(*a, **kw) for n, a, kw in self._calls]


def _changes(ids: range, offset: int = 0) -> list[Change]:
    events = [
        MediaPublished(media_id=f"m{i}", creator_id="c", content_type="AUDIO", category="x",
                       duration_s=30.0, published_at=1)
        for i in ids
    ]  # fmt: skip
    return [Change(e, encode(e), 0, offset + n) for n, e in enumerate(events)]


def test_status_shows_the_live_count_between_snapshots(tmp_path: Path) -> None:
    client, store, keys = FakeRedis(), DirSnapshotStore(tmp_path), IndexKeys()
    writer = IndexWriter.open(client, store, IndexParams(), keys, "hashing-v1", 16,
                              background=False)  # fmt: skip
    writer.apply(_changes(range(5)))
    writer.snapshot()
    writer.apply(_changes(range(5, 12), offset=5))  # after the snapshot
    writer.tick()  # the heartbeat, as the content flow's sink sends every half second

    report = status(client, store, keys)

    version = report["versions"][writer.version]
    assert version["snapshot"]["items"] == 5
    assert version["live"]["items"] == 12
    assert version["live"]["log_id"] == writer.replica.log_id
    assert report["writer_alive"]


def test_without_a_writer_there_is_no_live_count(tmp_path: Path) -> None:
    client, store, keys = FakeRedis(), DirSnapshotStore(tmp_path), IndexKeys()
    writer = IndexWriter.open(client, store, IndexParams(), keys, "hashing-v1", 16,
                              background=False)  # fmt: skip
    writer.apply(_changes(range(3)))
    client.delete(keys.writer)  # its heartbeat expired
    report = status(client, store, keys)
    assert report["versions"][writer.version]["live"] is None
    assert not report["writer_alive"]


def test_an_older_writers_bare_heartbeat_reads_as_no_status() -> None:
    client, keys = FakeRedis(), IndexKeys()
    registry = IndexRegistry(client, keys)
    registry.heartbeat(5.0)
    assert registry.writer_alive() and registry.writer_status() is None
