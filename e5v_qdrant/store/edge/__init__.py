"""Qdrant Edge (``qdrant-edge-py``, beta) as an embedded engine, behind the part of the ``QdrantClient`` API we use.

Qdrant Edge runs the Qdrant engine in-process (segments, WAL, HNSW, quantization, payload indexes, mmap storage) but
knows only *shards*: one folder, one set of vectors, no collections, aliases or metadata. ``EdgeClient`` adds those
on top so ``QdrantStore``, ingest, reingest, search, evaluation and the Ray writer stay engine-agnostic:

- a store folder holds one shard folder per collection under ``collections/`` and a small manifest,
  ``e5v_edge.json``: collection name -> shard folder, creation options and metadata (the model stamp), plus the alias
  map. The manifest is replaced atomically (write a temp file, fsync, ``os.replace``, fsync the folder), so a crash at
  any point leaves either the old or the new mapping. Shard folders have unique names: a crash between creating a
  shard and recording it leaves an unreferenced folder that the next writer removes.
- one process per store folder: an exclusive ``flock`` on ``.e5v-edge.lock`` (holding the owner's pid); a second
  process gets an error naming the holder. The kernel releases the lock when the holder dies (kill -9 included).
- requests and results use ``qdrant_client.models`` (``PointStruct``, ``Filter``, ``ScoredPoint``, ``Record``…), so
  callers cannot tell the engines apart. ``get_collection`` answers the fields this package reads (params, HNSW,
  quantization, metadata, payload schema, counts), not the whole server ``CollectionInfo``.
- Edge builds indexes only when asked (``EdgeShard.optimize``). ``EdgeClient`` asks after every
  ``INDEX_EVERY_POINTS`` written points and when a client that wrote is closed, unless indexing is deferred
  (``update_collection(hnsw_config=HnswConfigDiff(m=0))``, what ``store.bulk_load`` sends): the shard is then
  configured with ``m = 0`` and the optimizer seals and merges segments without building graphs; restoring ``m``
  builds one graph per segment, as a server does. ``EdgeClient(defer_indexing=True)`` (the LlamaIndex store) never
  indexes while writing: ``optimize`` or ``close`` builds one graph over everything, and until then searches scan the
  new points exactly. Segments smaller than ``INDEXING_THRESHOLD_KB`` stay plain (exact brute force, see the README).
- Qdrant maps each appendable-segment vector file twice (read-write, and read-only for sequential reads), so
  while the optimizer copies a segment RSS counts its vectors twice; ``convert.qdrant_edge_module`` sets Qdrant's own opt-out
  (``QDRANT_NO_MULTI_MMAP=1``) unless the caller set it.
- Edge truncates its write-ahead log only up to what a flush persisted, so ``EdgeClient`` flushes a shard every
  ``FLUSH_EVERY_POINTS`` written points and before each optimizer run (the log is memory-mapped: unflushed, it stays
  resident).

Split as qdrant-client's ``local/`` is: ``folder`` (manifest, lock, engine detection), ``convert`` (``qdrant_client``
models <-> ``qdrant_edge``) and ``client`` (``EdgeClient``). Only this package imports ``qdrant_edge``.

Example:
    >>> client = EdgeClient("qdrant_data")                                   # doctest: +SKIP
    >>> client.get_collections()                                             # doctest: +SKIP
"""

from .client import FLUSH_EVERY_POINTS, INDEX_EVERY_POINTS, EdgeClient
from .convert import INDEXING_THRESHOLD_KB, RRF_K, EdgeNotInstalledError, qdrant_edge_module
from .folder import LOCK_FILE, MANIFEST, detect_engine, read_store_manifest, write_store_manifest

__all__ = [
    "MANIFEST",
    "LOCK_FILE",
    "INDEXING_THRESHOLD_KB",
    "INDEX_EVERY_POINTS",
    "FLUSH_EVERY_POINTS",
    "RRF_K",
    "EdgeClient",
    "EdgeNotInstalledError",
    "qdrant_edge_module",
    "detect_engine",
    "read_store_manifest",
    "write_store_manifest",
]
