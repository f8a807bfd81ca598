"""The ingestion driver's state for one run: what both executors share, written once.

``IngestRun`` owns everything about a run that is not turning files into points: the compatibility checks of an
existing collection (model fingerprint, hybrid or not) before anything is read, the stored id index, which sparse
encoder the points get, creating the collection when the first file needs embedding, bulk load, re-stamping kept
points, deleting stale ones and ``sync``. The local executor (``ingest.local``, threads) and the Ray executor
(``ingest.ray_data``) only plan files and turn them into points, so both write the same collection the same way.

Bulk load follows one rule on both executors: HNSW building is deferred from the moment the collection is ensured
until the run ends (even on failure), on every engine that has an HNSW index to defer — a server and Qdrant Edge
(where ``m = 0`` holds the optimizer back and restoring ``m`` builds the index once); local mode has none, so it is
a no-op there (``store.bulk_load``). The local executor used to apply it on servers only and load the model up front
to do so; the Ray executor applied it on Edge too, as ``--bulk-load``'s help says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from ..config import IngestConfig
from ..errors import E5VInputError
from ..pipeline import IngestReport
from ..points import FILE_STAT, SOURCE
from ..sparse import DEFAULT_ENCODER, encoder_from_spec, spec_named
from ..store import CollectionMismatchError, QdrantStore, bulk_load

__all__ = [
    "IngestRun",
    "StoredIndex",
    "check_paths",
    "check_sparse_encoder",
    "requested_sparse",
    "stored_index",
    "restamp",
    "vanished_sources",
]

#: Source -> {stored point id: its ``file_stat`` payload}.
StoredIndex = dict[str, dict[str, Any]]


class IngestRun:
    """One run's collection: checked when opened, created on first use, bulk-loaded, kept in sync.

    Args:
        config: the ingest options.
        store: the open store.
        facts: the encoder or its ``pipeline.EncoderFacts`` (fingerprint and size; no weights needed).
        report: the run's report (``physical_collection`` and ``model_fingerprint`` are filled in here).

    Raises:
        CollectionMismatchError: the collection serves another model, or is dense-only and ``config.hybrid``.

    Use as a context manager: leaving it restores deferred indexing (bulk load), also on error.
    """

    def __init__(self, config: IngestConfig, store: QdrantStore, facts, report: IngestReport):
        self.config, self.store, self.report = config, store, report
        #: the sparse encoder spec a new collection is created with (``--hybrid``), else ``None``
        self.requested_sparse = requested_sparse(config)
        self.physical = store.resolve(config.collection)
        if self.physical is not None:
            stamp = store.stamp(self.physical)
            store.check_compatible(config.collection, self.physical, facts)  # another model is refused up front
            store.check_sparse(config.collection, self.physical, self.requested_sparse)  # so is --hybrid on dense
            if config.sparse_encoder is not None:  # and another keyword encoder than the collection's
                check_sparse_encoder(config.collection, stamp.sparse if stamp else None, config.sparse_encoder)
            report.physical_collection = self.physical
            report.model_fingerprint = (stamp.fingerprint.get("id") if stamp else None) or ""
        #: source -> {stored point id: its file_stat} (empty for a new collection)
        self.stored = stored_index(store, self.physical) if self.physical is not None else {}
        #: the sparse encoder spec the points get: the collection's own (a hybrid collection keeps getting sparse
        #: vectors without --hybrid: the setting is part of its stamp), else the requested one
        self.sparse_spec: dict[str, Any] | None = (
            store.sparse_spec(self.physical) if self.physical is not None else self.requested_sparse
        )
        self.ensured = False
        self._bulk = ExitStack()

    @property
    def sparse_encoder(self):
        """The ``sparse.BM25Encoder`` the text points get, or ``None`` (a dense-only collection)."""
        return encoder_from_spec(self.sparse_spec) if self.sparse_spec else None

    def ensure_collection(self, encoder) -> str:
        """The physical collection to write into, created (and aliased) if new and bulk load started; once per run."""
        if not self.ensured:
            self.physical = self.store.ensure_collection(self.config.collection, encoder, sparse=self.requested_sparse)
            self.ensured = True
            self.report.physical_collection = self.physical
            self.report.model_fingerprint = encoder.fingerprint["id"]
            self._bulk.enter_context(bulk_load(self.store, self.physical, enabled=self.config.bulk_load))
        return self.physical

    def file_done(self, source: str, restamp_ids, file_stat: dict[str, Any] | None, stale_ids) -> int:
        """A file's points are all written: re-stamp its kept points, then delete its stale ones (new before stale).
        Returns how many points were deleted."""
        if restamp_ids:
            restamp(self.store, self.physical, restamp_ids, file_stat, source)
        if stale_ids:
            return self.store.delete(self.physical, sorted(stale_ids))
        return 0

    def vanished(self, seen: set[str]) -> list[str]:
        """Stored sources under the ingested paths that this run neither saw nor skipped and that are gone (``sync``);
        empty without ``config.sync``."""
        return vanished_sources(self.stored, self.config.paths, seen) if self.config.sync else []

    def __enter__(self) -> IngestRun:
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._bulk.__exit__(*exc)


def requested_sparse(config: IngestConfig) -> dict[str, Any] | None:
    """The keyword encoder spec a new collection of this run gets: ``--sparse-encoder``'s (which implies
    ``--hybrid``), else the default one with ``--hybrid``, else ``None`` (dense only)."""
    if config.sparse_encoder is not None:
        return spec_named(config.sparse_encoder)
    return DEFAULT_ENCODER.spec() if config.hybrid else None


def check_sparse_encoder(name: str, recorded: dict[str, Any] | None, asked: str) -> None:
    """Refuse ``--sparse-encoder ASKED`` on a collection whose keyword vectors another encoder made.

    Raises:
        CollectionMismatchError: naming ``reingest --sparse-encoder``, which switches without loading the model.
    """
    has = (recorded or {}).get("name")
    if has is not None and has != asked:
        raise CollectionMismatchError(
            f"collection {name!r} holds keyword vectors of {has!r}, not {asked!r}. Ingest without --sparse-encoder "
            f"(the collection's own encoder is used), or switch it first: `e5v-qdrant reingest --collection {name} "
            f"--sparse-encoder {asked}` (re-embeds only the keyword side; the model is not loaded)"
        )


def check_paths(paths) -> None:
    """Refuse a run whose input paths do not exist, before anything is loaded or created.

    Raises:
        E5VInputError: naming every missing path.
    """
    if not paths:
        raise E5VInputError("paths", "nothing to ingest: give one or more files or folders")
    missing = [os.fspath(p) for p in paths if not os.path.lexists(os.fspath(p))]
    if missing:
        raise E5VInputError(
            ", ".join(missing), "no such file or folder (check the path; nothing was loaded or written)"
        )


def stored_index(store, collection: str) -> StoredIndex:
    """Source → {point id: its ``file_stat`` payload} for every point of ``collection`` (no vectors)."""
    index: StoredIndex = {}
    for record in store.scroll(collection, with_payload=[SOURCE, FILE_STAT], page_size=1024):
        payload = record.payload or {}
        if payload.get(SOURCE) is not None:
            index.setdefault(payload[SOURCE], {})[str(record.id)] = payload.get(FILE_STAT)
    return index


def restamp(store, collection: str, ids: Iterable[str], file_stat: dict[str, Any] | None, source: str) -> None:
    """Record ``file_stat`` on kept points of ``source`` (their content is unchanged, the file's stat is not)."""
    store.set_payload(collection, sorted(ids), {FILE_STAT: file_stat}, what=f"file_stat of points of {source}")


def under(source: str, roots: Iterable[str]) -> bool:
    """Whether ``source`` is one of ``roots`` or inside one of them (absolute paths)."""
    return any(source == root or source.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def vanished_sources(stored: Iterable[str], paths: Iterable[str | os.PathLike], seen: set[str]) -> list[str]:
    """Stored sources under ``paths`` that this run neither saw nor skipped and that no longer exist (``sync``)."""
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    return sorted(s for s in stored if under(s, roots) and s not in seen and not os.path.exists(s))
