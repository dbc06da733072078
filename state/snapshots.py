"""Atomic snapshots of index versions: files plus a manifest, published by one pointer.

Layout under the root: `<version>/<seq>/` holds the index files and `manifest.json`;
`<version>/CURRENT` names the newest complete snapshot and is replaced atomically, so a
reader sees either the old snapshot or the new one, never a half-written one.

The root is a directory the writer and the readers share (:class:`DirSnapshotStore`: a
volume), or object storage by URL (:class:`UrlSnapshotStore`: `s3://bucket/prefix`, through
fsspec), so that replicas on other hosts load the index without sharing a disk with the
writer. There a snapshot's files are uploaded first and `CURRENT` written last (one object
PUT is atomic); readers download the snapshot `CURRENT` names into a local cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from kernel.errors import FeedflowError

MANIFEST: Final = "manifest.json"
CURRENT: Final = "CURRENT"


class SnapshotError(FeedflowError):
    """A snapshot could not be written or read."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot holds and which changes it covers.

    `log_id` is the last update-log entry included; `source` maps each source partition
    (`"<partition>"`, or `"log:<version>"` for a rebuild fed from another version's log) to
    the next position not yet included.
    """

    version: str
    encoder: str
    dim: int
    items: int
    deleted: int
    log_id: str
    source: dict[str, int | str] = {}
    created_ms: int = 0
    params: dict[str, int] = {}
    name: str = ""
    compacted: bool = False  # written by a compaction: readers over the deleted share adopt it


class SnapshotStore(Protocol):
    """Where index snapshots go: :class:`DirSnapshotStore` or :class:`UrlSnapshotStore`."""

    def save(self, manifest: Manifest, write: Callable[[Path], None]) -> Manifest:
        """Write a snapshot with `write(local_dir)`, then publish it atomically."""
        ...

    def latest(self, version: str) -> tuple[Manifest, Path] | None:
        """The newest complete snapshot of `version` as a local directory, or None."""
        ...

    def drop(self, version: str) -> None:
        """Delete every snapshot of a retired version."""
        ...

    def size_bytes(self, version: str) -> int:
        """Bytes of the newest snapshot of `version` (0 if none)."""
        ...


def snapshot_store_at(where: str | Path, cache_dir: Path, keep: int = 3) -> SnapshotStore:
    """The store at a directory path, or at a URL (`s3://…`, any fsspec protocol) with a
    local cache under `cache_dir`.

    Example:
        >>> type(snapshot_store_at("/srv/index", Path("index-cache"))).__name__
        'DirSnapshotStore'
    """
    text = str(where)
    if "://" in text and not text.startswith("file://"):
        return UrlSnapshotStore(text, cache_dir, keep)
    return DirSnapshotStore(text.removeprefix("file://"), keep)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirSnapshotStore:
    """Snapshots in a local or shared directory, keeping the newest `keep` per version."""

    def __init__(self, root: Path | str, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    def save(self, manifest: Manifest, write: Callable[[Path], None]) -> Manifest:
        """Write a snapshot with `write(dir)`, then publish it atomically."""
        vdir = self.root / manifest.version
        vdir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}"
        tmp = vdir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            write(tmp)
            final = msgspec.structs.replace(manifest, name=name, created_ms=time.time_ns() // 10**6)
            (tmp / MANIFEST).write_bytes(msgspec.json.encode(final))
            for path in tmp.iterdir():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
            tmp.rename(vdir / name)
            pointer = vdir / f".{CURRENT}.{uuid.uuid4().hex}"
            pointer.write_text(name)
            os.replace(pointer, vdir / CURRENT)
            _fsync_dir(vdir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(vdir)
        return final

    def _prune(self, vdir: Path) -> None:
        names = sorted(p.name for p in vdir.iterdir() if p.is_dir() and p.name.isdigit())
        for old in names[: -self.keep]:
            shutil.rmtree(vdir / old, ignore_errors=True)

    def latest(self, version: str) -> tuple[Manifest, Path] | None:
        """The newest complete snapshot of `version`, or None."""
        vdir = self.root / version
        try:
            name = (vdir / CURRENT).read_text().strip()
            manifest = msgspec.json.decode((vdir / name / MANIFEST).read_bytes(), type=Manifest)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            raise SnapshotError(f"latest: unreadable snapshot of {version}: {exc}") from exc
        return manifest, vdir / name

    def drop(self, version: str) -> None:
        """Delete every snapshot of a retired version."""
        shutil.rmtree(self.root / version, ignore_errors=True)

    def size_bytes(self, version: str) -> int:
        """Bytes of the newest snapshot of `version` (0 if none)."""
        found = self.latest(version)
        return sum(p.stat().st_size for p in found[1].iterdir()) if found else 0


def _basename(path: object) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


class UrlSnapshotStore:
    """Snapshots in object storage (or any fsspec URL), cached locally for loading.

    Args:
        url: the root, e.g. `s3://bucket/feedflow/index`. Credentials and endpoint come from
            the usual environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
            `AWS_ENDPOINT_URL` for an S3-compatible server), or `options`.
        cache_dir: local directory for snapshots being written and those downloaded.
        keep: snapshots kept per version, remotely and in the cache.
        options: fsspec storage options.
    """

    def __init__(
        self, url: str, cache_dir: Path, keep: int = 3, options: dict[str, Any] | None = None
    ) -> None:
        self.url, self.cache_dir, self.keep = url.rstrip("/"), Path(cache_dir), keep
        self._options = options or {}
        self._fs: Any = None
        self._pid = -1

    @property
    def fs(self) -> Any:
        """The filesystem, made afresh in a forked child (fsspec's are not fork-safe)."""
        if self._fs is None or self._pid != os.getpid():
            import fsspec

            protocol = self.url.split("://", 1)[0]
            self._fs = fsspec.filesystem(protocol, skip_instance_cache=True, **self._options)
            self._pid = os.getpid()
        return self._fs

    def _remote(self, *parts: str) -> str:
        return "/".join([self.url, *parts])

    def save(self, manifest: Manifest, write: Callable[[Path], None]) -> Manifest:
        """Write locally, upload the files, then the manifest, then `CURRENT`."""
        name = f"{time.time_ns():020d}"
        local = self.cache_dir / manifest.version
        local.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=local))
        try:
            write(tmp)
            final = msgspec.structs.replace(manifest, name=name, created_ms=time.time_ns() // 10**6)
            (tmp / MANIFEST).write_bytes(msgspec.json.encode(final))
            fs = self.fs
            files = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
            for file in [*files, MANIFEST]:
                fs.put_file(str(tmp / file), self._remote(manifest.version, name, file))
            fs.pipe_file(self._remote(manifest.version, CURRENT), name.encode())
            tmp.rename(local / name)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise SnapshotError(f"save: {self.url}/{manifest.version}: {exc}") from exc
            raise
        self._prune(manifest.version)
        return final

    def _names(self, version: str) -> list[str]:
        self.fs.invalidate_cache(self._remote(version))  # other processes write here too
        try:
            found = self.fs.ls(self._remote(version), detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in (str(p).rstrip("/").rsplit("/", 1)[-1] for p in found) if n.isdigit()
        )

    def _prune(self, version: str) -> None:
        for old in self._names(version)[: -self.keep]:
            self.fs.rm(self._remote(version, old), recursive=True)
        self._prune_cache(version)

    def _prune_cache(self, version: str) -> None:
        local = self.cache_dir / version
        names = sorted(p.name for p in local.iterdir() if p.is_dir() and p.name.isdigit())
        for old in names[: -self.keep]:
            shutil.rmtree(local / old, ignore_errors=True)

    def latest(self, version: str) -> tuple[Manifest, Path] | None:
        """The snapshot `CURRENT` names, downloaded into the cache unless already there."""
        fs = self.fs
        try:
            name = fs.cat_file(self._remote(version, CURRENT)).decode().strip()
            raw = fs.cat_file(self._remote(version, name, MANIFEST))
            manifest = msgspec.json.decode(raw, type=Manifest)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            raise SnapshotError(f"latest: unreadable snapshot {self.url}/{version}: {exc}") from exc
        local = self.cache_dir / version / name
        if not (local / MANIFEST).exists():
            self._download(version, name, local)
            self._prune_cache(version)
        return manifest, local

    def _download(self, version: str, name: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".get-", dir=local.parent))
        try:
            self.fs.invalidate_cache(self._remote(version, name))
            for path in self.fs.ls(self._remote(version, name), detail=False):
                file = _basename(path)
                self.fs.get_file(self._remote(version, name, file), str(tmp / file))
            if local.exists():  # another reader of this cache got it first
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, local)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise SnapshotError(f"latest: download {self.url}/{version}/{name}: {exc}") from exc
            raise

    def drop(self, version: str) -> None:
        """Delete every snapshot of a retired version, remotely and in the cache."""
        if self._names(version) or self.fs.exists(self._remote(version, CURRENT)):
            self.fs.rm(self._remote(version), recursive=True)
        shutil.rmtree(self.cache_dir / version, ignore_errors=True)

    def size_bytes(self, version: str) -> int:
        """Bytes of the newest snapshot of `version` (0 if none), counted where it is stored
        rather than downloaded for it."""
        try:
            name = self.fs.cat_file(self._remote(version, CURRENT)).decode().strip()
        except FileNotFoundError:
            return 0
        return int(self.fs.du(self._remote(version, name), total=True))
