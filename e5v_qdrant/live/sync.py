"""Keep a collection equal to what a clean ``ingest`` of some folders would store, one change at a time.

``FolderSync.sync(scope)`` is a stat-only re-run of the driver restricted to the paths that changed (``scope``;
``None`` = the whole folders: the catch-up at start). It uses the driver's pieces (``pipeline.plan_file``,
``pipeline.embed_points``, ``ingest.run.IngestRun``) and adds one rule of its own: an item whose content hash equals
that of a point about to go away (a file renamed or moved, a chunk that moved within its file) gets that point's
vector under its new id instead of a model run. Ids stay those of a clean ingest (they name source, chunk index and
content hash); only the vector is carried over — the vector of an item depends on its content alone.

Writes go new-before-stale: a file's new points are written, then its kept points re-stamped, then its stale ones
deleted; points of vanished sources are deleted last. So a process killed at any moment leaves a collection that the
next catch-up (a full ``sync()``) brings to exactly the point set of a clean ingest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..chunking import ChunkerSpec, load_chunker
from ..config import IngestConfig
from ..errors import E5VInputError
from ..ingest.run import IngestRun, under
from ..pipeline import FileWork, IngestReport, decode_images, embed_points, plan_file
from ..points import CONTENT_HASH, FILE_STAT, FOLDERS, MODALITY, SOURCE, dense_vector, make_point
from ..sources import SkippedInput, discover

__all__ = ["FolderSync", "SyncStatus", "SyncCounts"]

logger = logging.getLogger(__name__)


@dataclass
class SyncCounts:
    """What one ``sync`` did: files written, deleted (vanished), failed, written without a model run (renamed or
    moved: every new item carried over); items embedded by the model and items whose
    vector was carried over from a point with the same content (``rekeyed``); points written and deleted."""

    files_written: int = 0
    files_deleted: int = 0
    files_failed: int = 0
    files_rekeyed: int = 0
    embedded: int = 0
    rekeyed: int = 0
    points_written: int = 0
    points_deleted: int = 0


@dataclass
class SyncStatus:
    """The live state of one synced collection (``to_dict`` is what ``GET /v1/collections/{name}`` shows).

    ``state``: ``starting``, ``catching up``, ``watching``, ``stopped`` or ``error`` (``error`` says why).
    ``ingesting``: files of the sync in progress; ``failed``: source ->
    the last error of each file that could not be ingested (cleared when it is ingested).
    """

    collection: str
    watched: list[str]
    state: str = "starting"
    error: str = ""
    ingesting: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    synced_at: float | None = None
    totals: SyncCounts = field(default_factory=SyncCounts)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "collection": self.collection,
                "watched": list(self.watched),
                "state": self.state,
                "error": self.error or None,
                "pending": 0,
                "ingesting": len(self.ingesting),
                "failed": len(self.failed),
                "errors": [{"source": s, "error": e} for s, e in sorted(self.failed.items())],
                "synced_at": self.synced_at,
                "totals": dataclasses.asdict(self.totals),
            }


class FolderSync:
    """Sync ``config.paths`` (the watched folders) into ``config.collection``.

    Args:
        config: the ingest options (``paths`` = the watched folders; ``sync`` is implied, ``bulk_load`` off: a live
            collection's index is kept up to date as it is written).
        encoder: the encoder (or a stand-in with its ``config``, ``fingerprint``, ``dim``, ``embed_texts``,
            ``embed_images``, e.g. one that queues its calls behind search requests).
        store: the open ``QdrantStore`` (or a stand-in running its calls on the thread that owns the store).
        on_counts: called with each sync's ``SyncCounts`` (metrics).

    Raises:
        CollectionMismatchError: the collection serves another model (checked when constructed).
    """

    def __init__(self, config: IngestConfig, encoder, store, *, on_counts: Callable[[SyncCounts], None] | None = None):
        roots = [os.path.abspath(os.fspath(p)) for p in config.paths]
        self.config = dataclasses.replace(config, paths=roots, sync=True, bulk_load=False)
        self.encoder, self.store, self.on_counts = encoder, store, on_counts
        self.status = SyncStatus(config.collection, roots)
        self.chunker = load_chunker(ChunkerSpec.for_encoder(encoder.config, config.chunk_size, config.chunk_overlap))
        self.run = IngestRun(self.config, store, encoder, IngestReport(collection=config.collection))
        self.batch = encoder.config.batch_size  # items per write: small groups show up in search sooner

    # ------------------------------------------------------------ what is stored
    def stored_under(self, scope: list[str] | None) -> dict[str, dict[str, Any]]:
        """Source -> {point id: its ``file_stat``} of the stored points under ``scope`` (paths; ``None`` = the
        watched folders)."""
        from qdrant_client import models

        physical = self.run.physical
        if physical is None:
            return {}
        paths = scope if scope is not None else self.config.paths
        where = models.Filter(
            should=[
                models.FieldCondition(key=SOURCE, match=models.MatchAny(any=list(paths))),
                models.FieldCondition(key=FOLDERS, match=models.MatchAny(any=list(paths))),
            ]
        )
        index: dict[str, dict[str, Any]] = {}
        for record in self.store.scroll(
            physical, with_payload=[SOURCE, FILE_STAT], scroll_filter=where, page_size=1024
        ):
            source = (record.payload or {}).get(SOURCE)
            if isinstance(source, str) and under(source, paths):
                index.setdefault(source, {})[str(record.id)] = (record.payload or {}).get(FILE_STAT)
        return index

    def _donors(self, ids: Iterable[str]) -> dict[tuple[str, str], Any]:
        """(modality, content hash) -> dense vector of the stored points ``ids`` (points about to be deleted)."""
        ids = sorted(ids)
        if not ids:
            return {}
        vectors = {}
        for record in self.store.retrieve(self.run.physical, ids, with_vectors=True):
            payload = record.payload or {}
            if payload.get(CONTENT_HASH) and dense_vector(record) is not None:
                vectors[(payload.get(MODALITY), payload[CONTENT_HASH])] = dense_vector(record)
        return vectors

    # ------------------------------------------------------------ one sync
    def sync(self, scope: Iterable[str] | None = None) -> SyncCounts:
        """Make the points under ``scope`` (changed paths: files or folders, present or gone; ``None`` = the watched
        folders) equal to what a clean ingest stores for them. One bad file is recorded in ``status.failed``, never
        raised; store errors propagate (the next sync retries).

        Raises:
            E5VInputError: a watched folder is gone (nothing is deleted: an unmounted share is not an empty one).
        """
        gone = [root for root in self.config.paths if not os.path.exists(root)]
        if gone:  # an unmounted share or a moved folder is not "every file deleted"
            raise E5VInputError(
                ", ".join(gone), "watched folder is gone (unmounted or moved?): its points are kept until it is back"
            )
        scope_list = None if scope is None else sorted({os.path.abspath(os.fspath(p)) for p in scope})
        counts = SyncCounts()
        cfg = self.config
        with self.status.lock:  # failures under the scope are found again below, or are gone
            self.status.failed = {
                s: e for s, e in self.status.failed.items() if scope_list is not None and not under(s, scope_list)
            }
        entries, seen = [], set()
        for entry in discover(cfg.paths, follow_symlinks=cfg.follow_symlinks, include=cfg.include, exclude=cfg.exclude):
            if scope_list is not None and not under(entry.source, scope_list):
                continue
            seen.add(entry.source)
            if isinstance(entry, SkippedInput):
                if entry.outcome == "failed":
                    self._failed(entry.source, entry.reason, counts)
                continue
            entries.append(entry)
        stored = self.stored_under(scope_list)
        vanished = sorted(s for s in stored if s not in seen and not os.path.exists(s))
        works = []
        for entry in entries:
            work = plan_file(
                entry,
                self.chunker,
                stored.get(entry.source, {}),
                pdf_pages=cfg.pdf_pages,
                rechunk=cfg.rechunk,
                max_file_bytes=cfg.max_file_bytes,
                max_chunks=cfg.max_chunks_per_file,
            )
            if isinstance(work, SkippedInput):
                if work.outcome == "failed":
                    self._failed(work.source, work.reason, counts)
                continue
            self._ok(work.source)
            if work.status != "unchanged" or work.restamp_ids:
                works.append(work)
        with self.status.lock:
            self.status.ingesting = {w.source for w in works} | set(vanished)
        try:
            going = {pid for s in vanished for pid in stored[s]} | {pid for w in works for pid in w.stale_ids}
            donors = self._donors(going) if any(w.items for w in works) else {}
            group: list[FileWork] = []
            for work in works:
                group.append(work)
                if sum(len(w.items) for w in group) >= self.batch:
                    self._write(group, donors, counts)
                    group = []
            self._write(group, donors, counts)
            for source in vanished:  # last: a rename's new points are written before its old ones go
                counts.points_deleted += self.store.delete(self.run.physical, sorted(stored[source]))
                counts.files_deleted += 1
                self._ok(source)
        finally:
            with self.status.lock:
                self.status.ingesting = set()
                self.status.synced_at = time.time()
                for name, value in dataclasses.asdict(counts).items():
                    setattr(self.status.totals, name, getattr(self.status.totals, name) + value)
            if self.on_counts is not None:
                self.on_counts(counts)
        return counts

    def _write(self, group: list[FileWork], donors: dict[tuple[str, str], Any], counts: SyncCounts) -> None:
        """Write a group of files: carried-over vectors, embedded ones, then each file's re-stamps and stale deletes."""
        if not group:
            return
        if any(w.items for w in group):
            physical = self.run.ensure_collection(self.encoder)
        else:
            physical = self.run.physical
        sparse = self.run.sparse_encoder
        fingerprint = self.encoder.fingerprint["id"]
        points, pending = [], []

        def skip(source: str, reason: str) -> None:
            self._failed(source, reason, counts)

        for work in group:
            todo = []
            for item in work.items:
                vector = donors.get((item.modality, item.payload.get(CONTENT_HASH)))
                if vector is None:
                    todo.append(item)
                    continue
                keywords = sparse.encode_document(item.content) if sparse and item.modality == "text" else None
                points.append(make_point(item.id, vector, item.payload, fingerprint, keywords))
                counts.rekeyed += 1
            if work.items and not todo:
                counts.files_rekeyed += 1
            if todo and decode_images(
                dataclasses.replace(work, items=todo), self.encoder.config.max_image_pixels, skip
            ):
                pending += [(work, item) for item in todo]
            elif todo:
                work.failed = True
        if pending:
            embedded = embed_points(self.encoder, pending, fingerprint, skip, sparse_encoder=sparse)
            counts.embedded += len(embedded)
            points += embedded
        failed = {w.source for w in group if w.failed}
        points = [p for p in points if p.payload[SOURCE] not in failed]
        if points:
            counts.points_written += self.store.upsert(physical, points)
        for work in group:
            if work.failed:
                continue
            counts.points_deleted += self.run.file_done(work.source, work.restamp_ids, work.file_stat, work.stale_ids)
            counts.files_written += 1

    # ------------------------------------------------------------ status
    def _failed(self, source: str, reason: str, counts: SyncCounts) -> None:
        logger.warning("not ingested: %s: %s", source, reason)
        counts.files_failed += 1
        with self.status.lock:
            self.status.failed[source] = reason

    def _ok(self, source: str) -> None:
        with self.status.lock:
            self.status.failed.pop(source, None)
