"""The behaviour-space source: items near the user's recent ones in engagement space.

A serving process holds the active version of the behaviour space
(:mod:`operators.behaviour`, published by `feedflow behaviour run`) in memory: its hnswlib
graph, a dense copy of the vectors and a map from item digest to row. The refresher checks
the active pointer every round (one GET) and, when it moved, loads the new version off the
request path and swaps it in whole (:class:`BehaviourHolder`); a version that cannot be read
is logged once and the old one kept.

A request folds the user in from the digests of their recent positive items (the same seeds
as co-engagement, newest weighing most; seeds without a vector are skipped), asks the graph
for the nearest items by inner product (a candidate source), and scores every candidate that
has a vector (the `behaviour` ranking feature, :func:`operators.behaviour.affinity`). The
anchor of a behaviour candidate, for `because_you_watched`, is the seed that contributes most
to its score. No Redis trip: the seeds come with the user's features.

Example:
    >>> import numpy as np
    >>> space = BehaviourSpace.of("v1", ["a", "b", "c"],
    ...                           np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32))
    >>> from operators.dedup import id_hash64
    >>> match = space.match([id_hash64("a")])
    >>> [m for m, _ in match.hits], match.anchor("b")
    (['b', 'c'], 'a')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError
from operators.behaviour import affinity, fold_in, seed_weights
from operators.dedup import id_hash64
from state.behaviour_store import EF_SEARCH, BehaviourStore, vectors_of
from state.vector_index import HnswIndex

log = logging.getLogger(__name__)
Matrix = npt.NDArray[np.float32]
_NO_ROW: Final = -1


@dataclass(frozen=True)
class BehaviourMatch:
    """One request's view of the space: the user's point, its nearest items, the seeds."""

    space: BehaviourSpace
    point: Matrix
    seed_rows: npt.NDArray[np.int64]  # rows of the seeds that have vectors, newest first
    seed_weights: Matrix
    hits: list[tuple[str, float]]

    def features(self, ids: Sequence[str]) -> Matrix:
        """The `behaviour` feature of each id (0 for items without a vector)."""
        rows = self.space.rows(ids)
        scores = np.zeros(len(ids), dtype=np.float32)
        have = rows >= 0
        if have.any():
            scores[have] = self.space.vectors[rows[have]] @ self.point
        return affinity(scores)

    def anchor(self, media_id: str) -> str | None:
        """The seed contributing most to `media_id`'s score (None without a vector)."""
        row = self.space.rows([media_id])[0]
        if row < 0:
            return None
        parts = (self.space.vectors[self.seed_rows] @ self.space.vectors[row]) * self.seed_weights
        return self.space.ids[int(self.seed_rows[int(np.argmax(parts))])]


class BehaviourSpace:
    """One loaded version: ids, dense vectors, digest → row, and the hnswlib graph."""

    def __init__(
        self,
        version: str,
        ids: list[str],
        vectors: Matrix,
        counts: npt.NDArray[np.int64],
        index: HnswIndex | None,
    ):
        self.version, self.ids, self.vectors, self._index = version, ids, vectors, index
        self.counts = counts
        self._row = {id_hash64(m): n for n, m in enumerate(ids)}
        self._row_by_id = {m: n for n, m in enumerate(ids)}

    @classmethod
    def of(
        cls, version: str, ids: list[str], vectors: Matrix, counts: Sequence[int] | None = None
    ) -> BehaviourSpace:
        """A space from plain vectors (tests; the graph is built here; counts default 1)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        n = np.asarray(counts if counts is not None else [1] * len(ids), dtype=np.int64)
        index = HnswIndex(vectors.shape[1], ef_search=EF_SEARCH, capacity=max(len(ids), 16))
        if ids:
            index.upsert(ids, vectors)
        return cls(version, ids, vectors, n, index)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Row of each id, -1 where it has no vector."""
        get = self._row_by_id.get
        return np.fromiter((get(m, _NO_ROW) for m in ids), np.int64, len(ids))

    def match(self, seeds: Sequence[bytes], k: int = 100) -> BehaviourMatch | None:
        """The user's point from seed digests (newest first) and its `k` nearest items;
        None when no seed has a vector."""
        found = [(i, self._row[d]) for i, d in enumerate(seeds) if d in self._row]
        if not found:
            return None
        positions = [i for i, _ in found]
        rows = np.array([r for _, r in found], dtype=np.int64)
        weights = seed_weights(self.counts[rows], positions)
        point = fold_in(self.vectors[rows], weights)
        hits = self._index.query(point, k + len(rows)) if self._index is not None and k > 0 else []
        own = {self.ids[r] for r in rows.tolist()}
        hits = [h for h in hits if h[0] not in own][:k]  # the seeds are consumed already
        return BehaviourMatch(self, point, rows, weights, hits)


class BehaviourHolder:
    """The active version for requests; :meth:`refresh` follows the pointer (refresher thread)."""

    def __init__(self, store: BehaviourStore | None = None) -> None:
        self.space: BehaviourSpace | None = None
        self._store = store
        self._failed: str | None = None

    @property
    def version(self) -> str | None:
        """The version requests use, or None before one is loaded."""
        space = self.space
        return space.version if space is not None else None

    def refresh(self) -> None:
        """Load the active version if it moved; keep the current one if it cannot be read.

        Raises:
            redis.RedisError: when the pointer cannot be read (the refresher reports it).
        """
        if self._store is None:
            return
        active = self._store.active()
        if active is None or active in (self.version, self._failed):
            return
        try:
            manifest, index, counts = self._store.load(active)
            ids, vectors = vectors_of(index)
        except (FeedflowError, OSError, RuntimeError, ValueError) as exc:
            log.error("keeping behaviour space %s: %s: %s", self.version, active, exc)
            self._failed = active
            return
        # One assignment: a request holds the old space or the new one, never a mix.
        self.space = BehaviourSpace(manifest.version, ids, vectors, counts, index)
        log.info("behaviour space %s loaded: %d items", active, len(ids))
