"""What the server shows of indexed files: only content that is still what was ingested.

A point's payload names its file (``source``), the SHA-256 of the content embedded (``content_hash``; for an image
point, the whole file) and the file's ``os.stat`` when it was read (``file_stat``: size, mtime, inode). A thumbnail
is made only when the file's bytes still hash to the indexed ``content_hash`` (else ``StaleFileError``, a 409 naming
"changed since ingest"): whatever now sits at the path — another picture, a link to a private file — is never shown.
A text snippet comes from the payload, so it is only shown while the file's stat still equals the recorded one (the
test ``ingest`` itself uses to skip unchanged files).

Thumbnails are cached by content hash (made once, whatever the number of requests or concurrent requests for it,
bounded in bytes) and decoded at most ``max_decodes`` at a time, as small as the format allows (``load_thumbnail``:
JPEG draft mode).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread

from ..errors import E5VInputError
from ..media import load_thumbnail
from ..points import FILE_STAT, SOURCE

__all__ = ["StaleFileError", "Thumbnails", "unchanged_since_ingest", "CHANGED"]

#: The reason given for a file whose content is not the indexed one any more.
CHANGED = "changed since ingest (re-run `e5v-qdrant ingest` on it to index the current content)"

_CHUNK = 1 << 20


class StaleFileError(E5VInputError):
    """The file at an indexed path no longer holds the content that was indexed."""


def unchanged_since_ingest(payload: Mapping[str, Any]) -> bool:
    """Whether the file of a point still has the stat recorded at ingest (size, mtime, inode); ``True`` for points
    that record none (not read from a file by ``ingest``), ``False`` for a file that is gone."""
    recorded, source = payload.get(FILE_STAT), payload.get(SOURCE)
    if not isinstance(recorded, Mapping) or not isinstance(source, str):
        return True
    try:
        st = os.stat(source)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (
        recorded.get("size"),
        recorded.get("mtime_ns"),
        recorded.get("inode"),
    )


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class Thumbnails:
    """JPEG thumbnails of indexed image files, checked against their indexed hash, cached and decoded few at a time.

    Args:
        size: longest side in pixels.
        max_pixels: refuse images with more pixels (as the embeddings do).
        max_cache_bytes: total JPEG bytes kept; the least recently used are dropped beyond it.
        max_decodes: most images decoded at the same time (each full-size PNG decode costs 3-4 bytes a pixel).

    Example:
        >>> jpeg = await Thumbnails(max_pixels=89_478_485).get("/data/cat.png", indexed_sha256)  # doctest: +SKIP
    """

    def __init__(self, *, size: int = 256, max_pixels: int | None, max_cache_bytes: int = 32 << 20, max_decodes=2):
        self.size, self.max_pixels, self.max_cache_bytes = size, max_pixels, max_cache_bytes
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[str, asyncio.Future] = {}
        self.max_decodes = max_decodes
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at the first decode
        #: thumbnails made (decodes), for tests and metrics
        self.made = 0

    async def get(self, path: str, indexed_hash: str) -> bytes:
        """The thumbnail of ``path`` if its content still hashes to ``indexed_hash``.

        Raises:
            StaleFileError: the file's content is not the indexed one.
            E5VInputError: the file is gone, unreadable or not a decodable image.
        """
        current = await anyio.to_thread.run_sync(self._current_hash, path)
        if current != indexed_hash:
            raise StaleFileError(path, CHANGED)
        cached = self._cache.get(indexed_hash)
        if cached is not None:
            self._cache.move_to_end(indexed_hash)
            return cached
        pending = self._pending.get(indexed_hash)
        if pending is None:  # one decode per content, however many requests wait for it
            pending = asyncio.ensure_future(self._make(path, indexed_hash))
            self._pending[indexed_hash] = pending
            pending.add_done_callback(lambda _: self._pending.pop(indexed_hash, None))
        return await asyncio.shield(pending)

    async def _make(self, path: str, indexed_hash: str) -> bytes:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_decodes)
        jpeg = await anyio.to_thread.run_sync(self._render, path, indexed_hash, limiter=self._limiter)
        self._cache[indexed_hash] = jpeg
        self._cached_bytes += len(jpeg)
        while self._cached_bytes > self.max_cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)
        return jpeg

    @staticmethod
    def _current_hash(path: str) -> str:
        try:
            return _file_hash(path)
        except OSError as exc:
            raise E5VInputError(path, f"no longer readable ({exc.strerror or exc})") from None

    def _render(self, path: str, indexed_hash: str) -> bytes:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise E5VInputError(path, f"no longer readable ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != indexed_hash:  # replaced between the check and this read
            raise StaleFileError(path, CHANGED)
        image = load_thumbnail(data, size=self.size, max_pixels=self.max_pixels, name=path)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        self.made += 1
        return out.getvalue()
