"""Vector indexes behind one small protocol: hnswlib for serving, an exact one as the oracle.

Both hold unit vectors keyed by `media_id` and score by inner product (cosine). Neither is
thread-safe; :class:`state.index_reader.IndexReader` serialises access with a lock.

Example:
    >>> import numpy as np
    >>> idx = ExactIndex(dim=2)
    >>> idx.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32))
    >>> idx.query(np.array([1, 0], dtype=np.float32), k=1)
    [('a', 1.0)]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import hnswlib
import msgspec
import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Hit = tuple[str, float]
INDEX_FILE = "hnsw.bin"
_GRAPH_HEADER = 96  # bytes before hnswlib's base layer in a saved graph (hnswlib 0.8)
LABELS_FILE = "labels.msgpack"


class VectorIndexError(FeedflowError):
    """A vector index was used wrongly (bad shape, unreadable snapshot)."""


class VectorIndex(Protocol):
    """Upsert, remove and k-NN query over unit vectors keyed by `media_id`."""

    @property
    def dim(self) -> int:
        """Vector length."""
        ...

    @property
    def deleted_count(self) -> int:
        """Removed items still occupying space (0 for indexes that free at once)."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, media_id: object) -> bool: ...

    def upsert(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Insert or replace the vectors of `ids` (rows of `vectors`)."""
        ...

    def remove(self, ids: Iterable[str]) -> None:
        """Take `ids` out of every later answer; unknown ids are ignored."""
        ...

    def query(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """Up to `k` `(media_id, score)` pairs, best first; never a removed item."""
        ...

    def vector(self, media_id: str) -> Vector | None:
        """The stored vector of a live item."""
        ...

    def ids(self) -> Iterator[str]:
        """Every live `media_id`."""
        ...


def _check(ids: Sequence[str], vectors: npt.NDArray[Any], dim: int) -> Vector:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (len(ids), dim):
        raise VectorIndexError(f"upsert: expected shape ({len(ids)}, {dim}), got {arr.shape}")
    if len(set(ids)) != len(ids):
        raise VectorIndexError("upsert: duplicate ids in one batch")
    return arr


class ExactIndex:
    """Brute-force inner-product search over a dict of vectors: the oracle."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors: dict[str, Vector] = {}
        self._matrix: tuple[list[str], Vector] | None = None

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._dim

    @property
    def deleted_count(self) -> int:
        """Always 0: removal frees at once."""
        return 0

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, media_id: object) -> bool:
        return media_id in self._vectors

    def upsert(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Insert or replace."""
        arr = _check(ids, vectors, self._dim)
        for media_id, row in zip(ids, arr, strict=True):
            self._vectors[media_id] = row.copy()
        self._matrix = None

    def remove(self, ids: Iterable[str]) -> None:
        """Forget `ids`."""
        for media_id in ids:
            self._vectors.pop(media_id, None)
        self._matrix = None

    def query(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """Exact top-k by inner product, ties broken by id."""
        if k <= 0 or not self._vectors:
            return []
        if self._matrix is None:
            keys = sorted(self._vectors)
            self._matrix = (keys, np.stack([self._vectors[i] for i in keys]))
        keys, matrix = self._matrix
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        k = min(k, len(keys))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
        order = sorted(top.tolist(), key=lambda i: (-scores[i], keys[i]))
        return [(keys[i], float(scores[i])) for i in order]

    def vector(self, media_id: str) -> Vector | None:
        """The stored vector."""
        return self._vectors.get(media_id)

    def ids(self) -> Iterator[str]:
        """Live ids."""
        return iter(list(self._vectors))


class HnswIndex:
    """hnswlib (space 'ip') with string ids, in-place updates, soft deletes and compaction.

    Labels are never reused for another id; a removed id that comes back is un-deleted in
    place. `compact()` rebuilds without the deleted points.

    Vectors read back (:meth:`vectors`) come from a label-ordered copy filled as items are
    upserted or first read: hnswlib's `get_items` costs ~3 µs per item, a row of the copy a
    few nanoseconds. The copy is zero-initialised memory the kernel maps only when written, so
    it costs what has been written or read (at most 4 × dim bytes per item), not the capacity.
    """

    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 800,
        capacity: int = 1024,
        threads: int = 1,
        seed: int = 100,
        graph_file: Path | None = None,
    ) -> None:
        self._dim, self._m, self._efc, self._ef = dim, m, ef_construction, ef_search
        self._threads, self._seed = threads, seed
        if graph_file is None:
            self._index = self._new_hnsw(max(capacity, 16))
        else:
            self._index = hnswlib.Index(space="ip", dim=dim)
            self._index.load_index(str(graph_file), max_elements=max(capacity, 16))
            self._index.set_ef(ef_search)
        self._labels: dict[str, int] = {}
        self._ids: list[str] = []
        self._deleted: set[int] = set()
        self._forget_copy()  # rows by label, see class doc

    def _new_hnsw(self, capacity: int) -> Any:
        index = hnswlib.Index(space="ip", dim=self._dim)
        index.init_index(
            max_elements=capacity, ef_construction=self._efc, M=self._m, random_seed=self._seed
        )
        index.set_ef(self._ef)
        return index

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._dim

    @property
    def deleted_count(self) -> int:
        """Points marked deleted and still in the graph."""
        return len(self._deleted)

    @property
    def deleted_share(self) -> float:
        """Deleted points over all points in the graph."""
        return len(self._deleted) / len(self._ids) if self._ids else 0.0

    @property
    def params(self) -> dict[str, int]:
        """The build and search parameters."""
        return {"m": self._m, "ef_construction": self._efc, "ef_search": self._ef}

    def __len__(self) -> int:
        return len(self._ids) - len(self._deleted)

    def __contains__(self, media_id: object) -> bool:
        label = self._labels.get(media_id) if isinstance(media_id, str) else None
        return label is not None and label not in self._deleted

    def _reserve(self, extra: int) -> None:
        need = len(self._ids) + extra
        capacity = int(self._index.get_max_elements())
        if need > capacity:
            self._index.resize_index(max(need, capacity * 2))

    def _forget_copy(self) -> None:
        self._copy = np.zeros((0, self._dim), dtype=np.float32)
        self._copied = np.zeros(0, dtype=bool)

    def _grow(self, labels: int) -> None:
        """Make the copy cover `labels` labels (doubling; only rows held are moved, so memory
        never written stays unmapped)."""
        if labels <= len(self._copied):
            return
        size = max(labels, 2 * len(self._copied), 1024)
        held = np.flatnonzero(self._copied)
        grown = np.zeros((size, self._dim), dtype=np.float32)
        grown[held] = self._copy[held]
        copied = np.zeros(size, dtype=bool)
        copied[held] = True
        self._copy, self._copied = grown, copied

    def _copy_rows(self, labels: npt.NDArray[np.int64], rows: Vector) -> None:
        """Keep `rows` as the copies of `labels`."""
        self._grow(len(self._ids))
        self._copy[labels] = rows
        self._copied[labels] = True

    def upsert(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Insert new ids, update known ones in place (un-deleting removed ones)."""
        arr = _check(ids, vectors, self._dim)
        if not ids:
            return
        self._reserve(sum(1 for i in ids if i not in self._labels))
        labels = np.empty(len(ids), dtype=np.uint64)
        for n, media_id in enumerate(ids):
            label = self._labels.get(media_id)
            if label is None:
                label = self._labels[media_id] = len(self._ids)
                self._ids.append(media_id)
            labels[n] = label
        # add_items on a deleted label un-marks it and updates the point in place.
        threads = self._threads if len(ids) > 64 else 1
        self._index.add_items(arr, labels, num_threads=threads)
        self._deleted.difference_update(labels.tolist())
        self._copy_rows(labels.astype(np.int64), arr)

    def remove(self, ids: Iterable[str]) -> None:
        """Mark `ids` deleted: they stay in the graph for navigation but are never returned."""
        for media_id in ids:
            label = self._labels.get(media_id)
            if label is not None and label not in self._deleted:
                self._index.mark_deleted(label)
                self._deleted.add(label)

    def query(self, vector: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """Approximate top-k by inner product; ef is raised to k when k is larger."""
        k = min(k, len(self))
        if k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, self._dim)
        self._index.set_ef(max(self._ef, k))
        try:
            labels, dists = self._index.knn_query(query, k=k, num_threads=1)
        except RuntimeError:
            # hnswlib refuses when the graph yields fewer than k live points (tiny or
            # mostly-deleted graphs); an exact scan answers those.
            return self._exact(query[0], k)
        ids = self._ids
        # Whole-array conversions: iterating numpy arrays makes a scalar object per element,
        # which cost more than the search itself at k = 500.
        scores = (1.0 - dists[0].astype(np.float64)).tolist()
        return [(ids[lb], score) for lb, score in zip(labels[0].tolist(), scores, strict=True)]

    def _exact(self, query: Vector, k: int) -> list[Hit]:
        live = [lb for lb in range(len(self._ids)) if lb not in self._deleted]
        matrix = np.asarray(self._index.get_items(live, return_type="numpy"), dtype=np.float32)
        scores = matrix @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self._ids[live[i]], float(scores[i])) for i in order]

    def vector(self, media_id: str) -> Vector | None:
        """The stored vector of a live item."""
        if media_id not in self:
            return None
        row: Vector = self.vectors([media_id])[0]
        return row

    def ids(self) -> Iterator[str]:
        """Live ids in label order."""
        deleted = self._deleted
        return (i for n, i in enumerate(self._ids) if n not in deleted)

    def vectors(self, ids: Sequence[str]) -> Vector:
        """Stored vectors of live `ids`, one row each."""
        if not ids:
            return np.zeros((0, self._dim), dtype=np.float32)
        labels = np.fromiter(map(self._labels.__getitem__, ids), np.int64, len(ids))
        self._grow(len(self._ids))
        missing = labels[~self._copied[labels]]
        if missing.size:
            missing = np.unique(missing)
            rows = self._index.get_items(missing.tolist(), return_type="numpy")
            self._copy_rows(missing, np.asarray(rows, dtype=np.float32))
        return self._copy[labels]

    def live_of(self, ids: Sequence[str]) -> list[str]:
        """The live ones among `ids`, in order."""
        get, deleted = self._labels.get, self._deleted
        return [i for i in ids if (label := get(i)) is not None and label not in deleted]

    def compact(self) -> None:
        """Rebuild the graph from live points only, dropping every deleted one."""
        live = list(self.ids())
        vectors = self.vectors(live)
        self._index = self._new_hnsw(max(16, int(len(live) * 1.25) + 1024))
        self._labels, self._ids, self._deleted = {}, [], set()
        self._forget_copy()
        self._grow(len(live))
        self.upsert(live, vectors)

    def needs_compaction(self, share: float) -> bool:
        """The deleted share exceeds `share`."""
        return bool(self._deleted) and self.deleted_share > share

    def maybe_compact(self, share: float) -> bool:
        """Compact when the deleted share exceeds `share`; returns whether it did."""
        if self.needs_compaction(share):
            self.compact()
            return True
        return False

    def save(self, directory: Path) -> None:
        """Write the graph and the id map into `directory` (which must exist)."""
        self._index.save_index(str(directory / INDEX_FILE))
        labels = {"ids": self._ids, "deleted": sorted(self._deleted), "params": self.params}
        (directory / LABELS_FILE).write_bytes(msgspec.msgpack.encode(labels))

    @classmethod
    def load(
        cls,
        directory: Path,
        dim: int,
        *,
        threads: int = 1,
        ef_search: int = 0,
        read_vectors: bool = False,
    ) -> HnswIndex:
        """Read an index written by :meth:`save`; `read_vectors`: fill the copy of every
        vector now (a serving reader, which reads vectors per request) instead of item by
        item on first read."""
        try:
            meta = msgspec.msgpack.decode((directory / LABELS_FILE).read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise VectorIndexError(f"HnswIndex.load: unreadable {directory}: {exc}") from exc
        params = meta["params"]
        ids: list[str] = meta["ids"]
        self = cls(
            dim,
            m=params["m"],
            ef_construction=params["ef_construction"],
            ef_search=ef_search or params["ef_search"],
            threads=threads,
            capacity=len(ids) * 5 // 4,
            graph_file=directory / INDEX_FILE,
        )
        self._ids, self._deleted = ids, set(meta["deleted"])
        self._labels = {media_id: n for n, media_id in enumerate(ids)}
        if read_vectors:
            self._read_vectors(directory / INDEX_FILE)
        return self

    def _read_vectors(self, graph_file: Path) -> None:
        """Fill the copy from the graph file's base layer: ~0.5 s at 1M items, against ~6 s
        through `get_items`. The layout is hnswlib's (a header of sizes and offsets, then one
        fixed-size block per element: links, vector, label); a sample checked against
        `get_items` guards it, and on any mismatch the copy fills item by item instead."""
        count = len(self._ids)
        if count == len(self._deleted):  # nothing live to read
            return
        try:
            header = np.fromfile(graph_file, dtype=np.uint64, count=6)
            per_element, label_at, data_at = (int(x) for x in header[3:6])
            if int(header[2]) != count or data_at + 4 * self._dim > label_at:
                raise ValueError(f"unexpected header {header.tolist()}")
            blocks = np.memmap(graph_file, dtype=np.uint8, mode="r", offset=_GRAPH_HEADER,
                               shape=(count, per_element))  # fmt: skip
            vectors = np.ascontiguousarray(blocks[:, data_at : data_at + 4 * self._dim])
            stored = np.ascontiguousarray(blocks[:, label_at : label_at + 8]).view(np.uint64)
            del blocks
            labels = stored.ravel().astype(np.int64)
            if labels.min() < 0 or labels.max() >= count:
                raise ValueError("labels out of range")
            self._copy_rows(labels, vectors.view(np.float32))
            live = np.setdiff1d(np.arange(count), np.fromiter(self._deleted, np.int64))
            sample = live[np.unique(np.linspace(0, len(live) - 1, 32).astype(np.int64))]
            expected = self._index.get_items(sample.tolist(), return_type="numpy")
            if not np.array_equal(self._copy[sample], np.asarray(expected, dtype=np.float32)):
                raise ValueError("vectors differ from get_items")
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("index vectors will be read item by item: %s: %s", graph_file, exc)
            self._forget_copy()
