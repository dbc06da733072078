"""What serving reads of the catalogue: the index reader, seen through one small protocol.

:class:`ServingIndex` is the content flow's :class:`state.index_reader.IndexReader` with the
two batch reads serving needs (vectors of many items, every live record once at start-up);
:class:`MemoryCatalogue` is its exact in-memory twin for unit tests.

Example:
    >>> import numpy as np
    >>> from operators.content import ItemRecord, Stamp
    >>> cat = MemoryCatalogue(dim=2)
    >>> cat.put(ItemRecord(media_id="a", stamp=Stamp(0, 0)), np.array([1.0, 0.0]))
    >>> cat.query(np.array([1.0, 0.0], dtype=np.float32), 5), cat.items(["a", "b"])[1]
    ([('a', 1.0)], None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from operators.content import ItemRecord
from state.index_reader import IndexReader
from state.vector_index import ExactIndex, Hit

Vector = npt.NDArray[np.float32]


class Catalogue(Protocol):
    """The served index: nearest neighbours, vectors and mirrored item records."""

    @property
    def ready(self) -> bool:
        """Whether a version is loaded."""
        ...

    @property
    def version(self) -> str | None:
        """The served index version."""
        ...

    @property
    def dim(self) -> int:
        """Vector length of the served version (0 before one is loaded)."""
        ...

    def __len__(self) -> int: ...

    def query(self, vector: Vector, k: int) -> list[Hit]:
        """Up to `k` live items nearest to `vector`, best first."""
        ...

    def similar(self, media_id: str, k: int) -> list[Hit]:
        """Items most like `media_id`, itself excluded."""
        ...

    def items(self, ids: Sequence[str]) -> list[ItemRecord | None]:
        """Records of live items, None where unknown or removed."""
        ...

    def vectors(self, ids: Sequence[str]) -> dict[str, Vector]:
        """Vectors of the live items among `ids`."""
        ...

    def live_records(self) -> Iterator[ItemRecord]:
        """Every live record (a start-up scan; not for the request path)."""
        ...

    def live_ids(self) -> list[str]:
        """Every live id, as the very string objects ANN answers carry."""
        ...


class ServingIndex(IndexReader):
    """The index reader of a serving replica, plus batch reads under the reader's lock."""

    @property
    def dim(self) -> int:
        """Vector length of the served version (0 before one is loaded)."""
        replica = self._replica
        return replica.info.dim if replica else 0

    def items(self, ids: Sequence[str]) -> list[ItemRecord | None]:
        """Mirrored records of live items, None where unknown or removed (no lock needed)."""
        replica = self._replica
        if replica is None:
            return [None] * len(ids)
        found = map(replica.records.get, ids)
        return [r if r is not None and not r.removed else None for r in found]

    def vectors(self, ids: Sequence[str]) -> dict[str, Vector]:
        """Vectors of the live items among `ids`, under the lock that ANN queries need too:
        nanoseconds per item once read, ~3 µs the first time (hnswlib), so background work
        reads in small batches."""
        with self._lock:
            replica = self._replica
            if replica is None:
                return {}
            index = replica.index
            live = index.live_of(ids)
            if not live:
                return {}
            rows = index.vectors(live)
        return dict(zip(live, rows, strict=True))

    def live_ids(self) -> list[str]:
        """Every live id of the served version, the index's own string objects.

        Keying in-process tables by these objects lets a lookup with an ANN answer match by
        identity, one memory access fewer per candidate at millions of items.
        """
        with self._lock:
            replica = self._replica
            return list(replica.index.ids()) if replica else []

    def live_records(self) -> Iterator[ItemRecord]:
        """Every live record of the served version (a copy taken under the lock)."""
        with self._lock:
            replica = self._replica
            records = list(replica.records.values()) if replica else []
        return (r for r in records if not r.removed)


class MemoryCatalogue:
    """Exact in-memory twin of :class:`ServingIndex`, for unit tests."""

    def __init__(self, dim: int, version: str = "memory.1") -> None:
        self._index = ExactIndex(dim)
        self._records: dict[str, ItemRecord] = {}
        self.listeners: list[Callable[[list[ItemRecord]], None]] = []
        self._version, self._dim = version, dim

    def put(self, record: ItemRecord, vector: npt.ArrayLike) -> None:
        """Publish (or update) an item; a `removed` record takes it out. Listeners hear it."""
        self._records[record.media_id] = record
        if record.removed:
            self._index.remove([record.media_id])
        else:
            v = np.asarray(vector, dtype=np.float32)
            v = v / np.float32(np.linalg.norm(v))
            self._index.upsert([record.media_id], v.reshape(1, -1))
        for listener in self.listeners:
            listener([record])

    @property
    def ready(self) -> bool:
        """Always: the in-memory index needs no loading."""
        return True

    @property
    def version(self) -> str | None:
        """The version name given at construction."""
        return self._version

    @property
    def dim(self) -> int:
        """Vector length given at construction."""
        return self._dim

    def __len__(self) -> int:
        return len(self._index)

    def query(self, vector: Vector, k: int) -> list[Hit]:
        """Up to `k` live items nearest to `vector` (exact search), best first."""
        return self._index.query(vector, k)

    def similar(self, media_id: str, k: int) -> list[Hit]:
        """Up to `k` items most like `media_id`, itself excluded; empty when it is unknown."""
        vec = self._index.vector(media_id)
        if vec is None:
            return []
        return [h for h in self._index.query(vec, k + 1) if h[0] != media_id][:k]

    def items(self, ids: Sequence[str]) -> list[ItemRecord | None]:
        """Records of live items, None where unknown or removed."""
        out = []
        for media_id in ids:
            record = self._records.get(media_id)
            out.append(None if record is None or record.removed else record)
        return out

    def vectors(self, ids: Sequence[str]) -> dict[str, Vector]:
        """Vectors (normalised) of the live items among `ids`."""
        found = ((i, self._index.vector(i)) for i in ids)
        return {i: v for i, v in found if v is not None}

    def live_records(self) -> Iterator[ItemRecord]:
        """Every live record (a copy, so `put` may run meanwhile)."""
        return (r for r in list(self._records.values()) if not r.removed)

    def live_ids(self) -> list[str]:
        """Every live id in the index."""
        return list(self._index.ids())
