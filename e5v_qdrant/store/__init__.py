"""Qdrant storage: collection spec, model-fingerprint stamps, aliases, deterministic ids, retried batched writes.

Users address a collection by the name they pass (``--collection docs``). That name is an **alias** of a physical
collection named after the model fingerprint (``docs-e5v-<fingerprint id>``), so a re-ingest with another model can
build a new physical collection and switch the alias over in one call. A name that is already a plain collection
(made by other tools) is used as it is.

Every physical collection is created explicitly (one named dense vector ``text-dense``, cosine, size from the
encoder) and stamped in its collection metadata with the encoder fingerprint; writing vectors of another model or
dimension into it raises ``CollectionMismatchError``. Writes are batched upserts with ``wait=True``, retried with
exponential back-off (tenacity) on transient errors; permanent errors raise ``StoreError`` at once.

The point schema (ids, payload keys, vector names) is ``points``. Rooms: ``qdrant_store`` (``QdrantStore``, the one
contract over a server, local mode and Qdrant Edge), ``engines`` (which engine, opening its client), ``retry``
(error classification, back-off), ``stamp`` (what a collection records), ``storage_options`` (create/search
arguments), ``hnsw`` (the measured HNSW defaults), ``bulk`` (deferred indexing) and ``edge/`` (Qdrant Edge behind
the ``QdrantClient`` methods used here). Nothing outside this package calls a Qdrant client (``tests/test_layout.py`` checks).
"""

from ..points import ID_NAMESPACE, VECTOR_NAME, document_id, point_id
from .bulk import bulk_load
from .edge import (
    LOCK_FILE,
    MANIFEST,
    EdgeClient,
    EdgeNotInstalledError,
    detect_engine,
    read_store_manifest,
    write_store_manifest,
)
from .engines import NEW_FOLDER_ENGINE_ENV, embedded_engine, open_client, require_store
from .hnsw import HNSW_EF, HNSW_EF_CONSTRUCT, HNSW_M
from .qdrant_store import QdrantStore
from .retry import StoreError, is_transient
from .stamp import METADATA_KEY, CollectionMismatchError, CollectionStamp, encoder_record, physical_name
from .storage_options import FUSIONS, collection_create_kwargs, search_params

__all__ = [
    "VECTOR_NAME",
    "METADATA_KEY",
    "ID_NAMESPACE",
    "FUSIONS",
    "point_id",
    "document_id",
    "physical_name",
    "CollectionMismatchError",
    "CollectionStamp",
    "StoreError",
    "QdrantStore",
    "open_client",
    "require_store",
    "embedded_engine",
    "encoder_record",
    "NEW_FOLDER_ENGINE_ENV",
    "is_transient",
    "collection_create_kwargs",
    "search_params",
    "bulk_load",
    "HNSW_M",
    "HNSW_EF_CONSTRUCT",
    "HNSW_EF",
    "EdgeClient",
    "EdgeNotInstalledError",
    "MANIFEST",
    "LOCK_FILE",
    "detect_engine",
    "read_store_manifest",
    "write_store_manifest",
]
