"""HNSW parameters: the defaults every engine creates and searches collections with, chosen by measurement.

On embedding-shaped 4096-d data (a shared mean direction, intrinsic dimension 64, fresh queries: what E5-V vectors
look like) Qdrant's generic search ef (= ef_construct = 100) reaches recall@10 0.89 at 20k points and less beyond.
The graph itself (m=16, ef_construct=100) is good enough when searched wider, where a larger ef_construct buys the
same for 1.7-3x the build time (README, "Choosing the HNSW defaults", ``benchmarks/store.py --data embedding --sweep``).
The store's collections are segments of up to ~62,000 float16 points (``edge.convert.MAX_SEGMENT_SIZE_KB``), each
with its own graph searched with the full ef: ef 512 gives recall@10 0.997 at 20k, 0.979 at 100k (3 segments, p50
8.5 ms) and 0.990-0.994 at 1M (18 segments, p50 38 ms, where ef 1024 takes 63 ms: over the 50 ms target). One graph
over a whole collection needs more (``HNSW_EF_ONE_GRAPH``). ``StoreConfig.hnsw_m`` / ``hnsw_ef_construct`` /
``hnsw_ef`` override them; ``QdrantStore`` (CLI ingest, migrate), the Edge client (the LlamaIndex store) and searches
all read them from here. A collection records what it was built with: HNSW ``m`` / ``ef_construct`` in its config,
the search ``ef`` in its metadata under ``SEARCH_METADATA_KEY``; queries that name none get it (Edge applies it,
``QdrantStore`` sends it to a server), so changing ``HNSW_EF`` changes only new collections.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HNSW_M",
    "HNSW_EF_CONSTRUCT",
    "HNSW_EF",
    "HNSW_EF_ONE_GRAPH",
    "FULL_SCAN_THRESHOLD_KB",
    "QDRANT_GENERIC_HNSW",
    "SEARCH_METADATA_KEY",
    "index_defaults",
    "search_record",
    "recorded_hnsw_ef",
]

#: Edges per node of the HNSW graph.
HNSW_M = 16
#: Candidates kept while building the graph.
HNSW_EF_CONSTRUCT = 100
#: Candidates kept while searching (Qdrant's own default is ``ef_construct``), in every segment of up to ~62,000 float16 points.
HNSW_EF = 512
#: The search ef of collections indexed in one graph over everything (the LlamaIndex store's deferred build,
#: ``EdgeClient(defer_indexing=True)``): one graph of the whole collection needs the wider search (100k points in one
#: graph: recall@10 0.965 at ef 512, 0.991 at 1024).
HNSW_EF_ONE_GRAPH = 1024
#: Segments with less vector data than this (KB) are searched exactly (Qdrant's default).
FULL_SCAN_THRESHOLD_KB = 10_000
#: What collections created before these defaults were built with (Qdrant's defaults); their search ef was Qdrant's
#: (``ef_construct``), so they keep it unless a search asks otherwise.
QDRANT_GENERIC_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10_000}
#: Collection metadata key holding the search parameters a collection was created with.
SEARCH_METADATA_KEY = "e5v_qdrant_search"


def index_defaults(m: int | None = None, ef_construct: int | None = None) -> dict[str, int]:
    """HNSW build parameters for a new collection: the given ones, else the defaults."""
    return {
        "m": HNSW_M if m is None else m,
        "ef_construct": HNSW_EF_CONSTRUCT if ef_construct is None else ef_construct,
        "full_scan_threshold": FULL_SCAN_THRESHOLD_KB,
    }


def search_record(hnsw_ef: int | None = None) -> dict[str, Any]:
    """The metadata entry recording a new collection's search ef."""
    return {SEARCH_METADATA_KEY: {"hnsw_ef": HNSW_EF if hnsw_ef is None else hnsw_ef}}


def recorded_hnsw_ef(metadata: dict[str, Any] | None) -> int | None:
    """The search ef a collection was created with (``None``: made before it was recorded, Qdrant's default)."""
    value = ((metadata or {}).get(SEARCH_METADATA_KEY) or {}).get("hnsw_ef")
    return int(value) if value is not None else None
