"""Atomic on-disk snapshots of index versions: files plus a manifest, published by rename.

Layout under the root: `<version>/<seq>/` holds the index files and `manifest.json`;
`<version>/CURRENT` names the newest complete snapshot and is replaced atomically, so a
reader sees either the old snapshot or the new one, never a half-written one. The root is a
directory the writer and the readers share (a volume in production).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

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
