"""Versions of the behaviour space: snapshots on disk, registry and active pointer in Redis.

The same blue/green discipline as the content index (:mod:`state.index_registry`): a run
registers a new version (`building`), writes its hnswlib graph and ids as a snapshot in the
shared snapshot directory (published by rename), marks it `ready`, and only then moves the
active pointer with one SET; serving replicas load the new version completely before
swapping it in, so a request sees one version or the other, never a mix. The registry lives
under its own prefix (`ff:beh:{idx}:…`): the content index's pointer never moves with it.
`publish` and `rollback` of an older version are pointer moves; snapshots of the last
:data:`KEEP` versions stay on disk.

Example:
    store = BehaviourStore(connect(url), DirSnapshotStore(index_dir))
    version = store.publish(space).version          # a new version, active
    manifest, index, counts = store.load(store.active())  # what a serving replica holds
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from kernel.errors import FeedflowError
from operators.behaviour import ENCODER, Space
from state.index_keys import IndexKeys
from state.index_registry import READY, RETIRED, IndexRegistry, VersionInfo
from state.redis_client import RedisClient
from state.snapshots import Manifest, SnapshotStore
from state.vector_index import HnswIndex

KEEP = 3  # versions whose snapshots stay on disk (the active one and two to roll back to)
# hnswlib ef of the graph's queries: serving asks for ~100 neighbours as candidates, which
# the ranker reorders, so a near-exact answer is not worth the content index's larger ef.
EF_SEARCH = 200
COUNTS_FILE = "counts.msgpack"  # each item's users, in the graph's label order


class BehaviourStateError(FeedflowError):
    """A behaviour version is missing or unreadable."""


class BehaviourStore:
    """Publish and load behaviour-space versions (see module doc)."""

    def __init__(self, client: RedisClient, snapshots: SnapshotStore, prefix: str = "ff"):
        self.registry = IndexRegistry(client, IndexKeys(f"{prefix}:beh"))
        self._snapshots = snapshots

    def active(self) -> str | None:
        """The active version, or None before the first run."""
        return self.registry.active()

    def versions(self) -> dict[str, VersionInfo]:
        """Every registered version."""
        return self.registry.versions()

    def publish(self, space: Space, activate: bool = True) -> VersionInfo:
        """Write `space` as a new version; make it active unless told not to."""
        info = self.registry.new_version(f"{ENCODER}-d{space.dim}", ENCODER, space.dim)
        index = HnswIndex(space.dim, ef_search=EF_SEARCH, capacity=max(len(space.ids), 16))
        if space.ids:
            index.upsert(space.ids, space.vectors)
        manifest = Manifest(
            version=info.version,
            encoder=ENCODER,
            dim=space.dim,
            items=len(space.ids),
            deleted=0,
            log_id="",
            source={"users": space.users, "engagements": space.engagements},
        )
        counts = msgspec.msgpack.encode(space.counts.tolist())

        def write(directory: Path) -> None:
            index.save(directory)
            (directory / COUNTS_FILE).write_bytes(counts)

        self._snapshots.save(manifest, write)
        info = self.registry.set_state(info.version, READY)
        if activate:
            self.activate(info.version)
        return self.registry.get(info.version)

    def activate(self, version: str) -> None:
        """Move the pointer to a version that has a snapshot (publish or roll back)."""
        if self._snapshots.latest(version) is None:
            raise BehaviourStateError(f"behaviour version {version!r} has no snapshot")
        self.registry.flip(version)
        self._prune()

    def load(self, version: str) -> tuple[Manifest, HnswIndex, npt.NDArray[np.int64]]:
        """The manifest, graph and per-item counts of `version`, as :meth:`publish` wrote them.

        Raises:
            BehaviourStateError: no snapshot of `version`, or one that does not add up.
        """
        found = self._snapshots.latest(version)
        if found is None:
            raise BehaviourStateError(f"behaviour version {version!r} has no snapshot")
        manifest, directory = found
        index = HnswIndex.load(directory, manifest.dim)
        try:
            counts = msgspec.msgpack.decode((directory / COUNTS_FILE).read_bytes(), type=list[int])
        except (OSError, msgspec.DecodeError) as exc:
            raise BehaviourStateError(f"behaviour version {version!r}: counts: {exc}") from exc
        if len(counts) != len(index):
            raise BehaviourStateError(
                f"behaviour version {version!r}: {len(counts)} counts for {len(index)} items"
            )
        return manifest, index, np.asarray(counts, dtype=np.int64)

    def _prune(self) -> None:
        retired = sorted(
            (v for v in self.registry.versions().values() if v.state == RETIRED),
            key=lambda v: v.created_ms,
        )
        for old in retired[: max(len(retired) - (KEEP - 1), 0)]:
            self._snapshots.drop(old.version)
            self.registry.forget(old.version)


def vectors_of(index: HnswIndex) -> tuple[list[str], np.ndarray]:
    """Every live id and its vector, in label order (serving scores from a dense copy)."""
    ids = list(index.ids())
    return ids, index.vectors(ids)


def describe(info: VersionInfo) -> dict[str, object]:
    """Plain data of a version for `feedflow behaviour status`."""
    return msgspec.to_builtins(info)  # type: ignore[no-any-return]
