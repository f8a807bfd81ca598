"""An Edge store folder on disk: engine detection, the manifest (collections, their options and stamps, aliases),
replaced atomically, and the one-process lock.

The manifest is replaced atomically (write a temp file, fsync, ``os.replace``, fsync the folder), so a crash at any
point leaves either the old or the new mapping. The lock is an exclusive ``flock`` on ``.e5v-edge.lock`` holding the
owner's pid; the kernel releases it when the holder dies (kill -9 included).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from typing import Any

from ...errors import E5VConfigError

__all__ = [
    "MANIFEST",
    "LOCK_FILE",
    "FolderLock",
    "detect_engine",
    "read_store_manifest",
    "write_store_manifest",
    "record_holder_address",
    "read_holder",
]

#: The manifest of an Edge store folder (collections, their options and stamps, aliases).
MANIFEST = "e5v_edge.json"
#: Lock file of an Edge store folder (one process at a time).
LOCK_FILE = ".e5v-edge.lock"
_FORMAT = "e5v-qdrant-edge"
_VERSION = 1


def detect_engine(path: str) -> str | None:
    """The engine of an embedded store folder: ``"edge"``, ``"local"`` (qdrant-client local mode) or ``None`` (new).
    The Edge manifest decides first: ``QdrantClient(path=...)`` opened on an Edge folder writes a ``meta.json`` there."""
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return "edge"
    if os.path.isfile(os.path.join(path, "meta.json")) or os.path.isdir(os.path.join(path, "collection")):
        return "local"
    return None


def _empty_manifest() -> dict[str, Any]:
    return {"format": _FORMAT, "version": _VERSION, "collections": {}, "aliases": {}}


def read_store_manifest(path: str) -> dict[str, Any]:
    """The manifest of the Edge store in ``path`` (an empty one if the folder is new)."""
    file = os.path.join(path, MANIFEST)
    if not os.path.exists(file):
        return _empty_manifest()
    with open(file, encoding="utf-8") as fh:
        data = json.load(fh)
    if data.get("format") != _FORMAT or data.get("version", 0) > _VERSION:
        raise E5VConfigError(
            f"{file} is not a manifest this version of e5v-qdrant can read (format {data.get('format')!r}, "
            f"version {data.get('version')!r}): upgrade e5v-qdrant"
        )
    return data


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_store_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically: temp file, fsync, ``os.replace``, fsync of the folder."""
    tmp = os.path.join(path, f".{MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(path, MANIFEST))
    _fsync_dir(path)


class FolderLock:
    """Exclusive ``flock`` on the store folder's lock file, holding the owner's pid."""

    def __init__(self, path: str):
        self.file = os.path.join(path, LOCK_FILE)
        self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            recorded = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").split("\n") + [""]
            holder = recorded[0].strip() or "?"
            if recorded[1].strip():  # a server (record_holder_address): commands that can go through it do
                holder += f", e5v-qdrant serve at {recorded[1].strip()}"
            os.close(self.fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            # "already accessed by another instance" is what qdrant-client local mode says: store.is_transient
            # retries it and store.open_client turns it into a clear error.
            raise RuntimeError(
                f"Storage folder {path} is already accessed by another instance of Qdrant Edge (pid {holder})"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def record_holder_address(path: str, address: str, key_env: str | None = None) -> None:
    """Record, beside its pid, the HTTP address of the process holding the lock of the store in ``path`` (a server:
    other commands go through it instead of waiting for the lock) and the name of the environment variable holding
    its API key (never the key). Call from the holder only."""
    with open(os.path.join(path, LOCK_FILE), "r+", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n{address}\n{key_env or ''}\n")
        fh.truncate()


def read_holder(path: str) -> dict[str, str] | None:
    """What the current holder of the store in ``path`` recorded (``pid``, ``address``, ``key_env``:
    ``record_holder_address``), or ``None`` when nobody holds the lock or the holder recorded no address."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: read what the holder recorded
            lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines() + ["", "", ""]
            pid, address, key_env = (line.strip() for line in lines[:3])
            return {"pid": pid, "address": address, "key_env": key_env} if address else None
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: whatever it records is stale
        return None
    finally:
        os.close(fd)
