"""HNSW parameters: the defaults every engine creates and searches collections with, chosen by measurement.

On embedding-shaped 4096-d data (a shared mean direction, intrinsic dimension 64, fresh queries: what E5-V vectors
look like) Qdrant's generic search ef (= ef_construct = 100) reaches recall@10 0.89 at 20k points and less beyond.
The graph itself (m=16, ef_construct=100) is good enough when searched wider: ef=1024 gives 0.991 at 100k (p50 24 ms
on 2 shared cores) and 0.945-0.949 at 250k with int8 quantization (p50 10 ms), where a larger ef_construct buys the same
for 1.7-3x the build time (README, "Choosing the HNSW defaults", ``benchmarks/store.py --data embedding --sweep``).
At 250k, written with the store's optimizer (an index every 20,000 points: several segments), ef 1024 gives 0.995
(TurboQuant 4-bit codes, p50 17 ms); bulk-built into one segment, 0.941-0.949, and that needs ef 2048 (0.983). 2048 is
not the default: servers are sent ``HNSW_EF`` with every search, also for collections that recorded another.
``StoreConfig.hnsw_m`` / ``hnsw_ef_construct`` / ``hnsw_ef`` override them; ``QdrantStore`` (CLI ingest, migrate),
the Edge client (the LlamaIndex store) and searches all read them from here. A collection records what it was built with: HNSW ``m`` /
``ef_construct`` in its config, the search ``ef`` in its metadata under ``SEARCH_METADATA_KEY`` (Edge applies it to
queries that name none).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HNSW_M",
    "HNSW_EF_CONSTRUCT",
    "HNSW_EF",
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
#: Candidates kept while searching (Qdrant's own default is ``ef_construct``).
HNSW_EF = 1024
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
