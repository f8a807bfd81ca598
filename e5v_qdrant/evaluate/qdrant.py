"""Ranking by exact search in a temporary Qdrant collection, to measure what the storage path loses."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import MISS

if TYPE_CHECKING:  # pragma: no cover
    from ..config import StoreConfig

__all__ = ["qdrant_ranks"]


def qdrant_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int] | None] | None = None,
    *,
    limit: int,
    store: StoreConfig | None = None,
    batch_size: int = 128,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ranks as ``retrieval_ranks`` computes them, but by exact search in a temporary Qdrant collection.

    Candidates are upserted (ids ``0..n-1``, cosine distance) into a fresh collection — in a temporary local-mode
    folder unless ``store.qdrant_url`` names a server — and each query runs with ``SearchParams(exact=True)``,
    ``limit`` results and its excluded candidates filtered out. The collection is created by the store module's
    ``collection_create_kwargs`` — the same vector name, datatype and quantization ingestion uses (server-only
    options apply on a server) — and deleted afterwards, with the temporary folder.

    Returns:
        ``(ranks, facts)``: a query whose relevant candidates are not among the ``limit`` results gets ``MISS``, so
        only ``recall_at_k`` for ``k <= limit`` is meaningful. Among equal scores Qdrant's order is its own (not the
        pessimistic policy). ``facts`` describes the collection used.
    """
    from qdrant_client import models

    from ..config import StoreConfig
    from ..points import VECTOR_NAME
    from ..store import QdrantStore, search_params

    candidates = np.asarray(candidates, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    tmp_dir = None
    config = store or StoreConfig()
    if not config.qdrant_url:
        tmp_dir = tempfile.mkdtemp(prefix="e5v-eval-qdrant-")
        config = dataclasses.replace(config, qdrant_path=tmp_dir)
    name = f"e5v-eval-{uuid.uuid4().hex[:12]}"
    limit = max(1, min(limit, len(candidates)))
    ranks = np.full(len(queries), MISS, dtype=np.int64)
    try:
        with QdrantStore(config) as qs:
            server = qs.is_server
            quantized = server and config.quantization != "none"
            # exact=True removes the index's approximation (HNSW) but not the storage's: quantized vectors are still
            # searched, rescored as the search path configures it. Local mode is always brute force (and warns
            # that search params have no effect there), so it gets none.
            params = None
            if server:
                searched = search_params(config)  # what `e5v-qdrant search` sends (rescore, oversampling)
                params = models.SearchParams(exact=True, quantization=searched.quantization if searched else None)
            elif qs.engine == "edge":  # the temporary Edge folder: exact too (no HNSW approximation)
                params = models.SearchParams(exact=True)
            qs.create_plain(name, candidates.shape[1], storage_options=server)
            try:
                qs.upsert(
                    name, [models.PointStruct(id=i, vector={VECTOR_NAME: v.tolist()}) for i, v in enumerate(candidates)]
                )
                for start in range(0, len(queries), batch_size):
                    stop = min(start + batch_size, len(queries))
                    requests = []
                    for q in range(start, stop):
                        excluded = [] if exclude is None or exclude[q] is None else [int(i) for i in exclude[q]]
                        flt = models.Filter(must_not=[models.HasIdCondition(has_id=excluded)]) if excluded else None
                        requests.append(
                            models.QueryRequest(
                                query=queries[q].tolist(), using=VECTOR_NAME, limit=limit, params=params, filter=flt
                            )
                        )
                    for q, hits in zip(range(start, stop), qs.query_batch(name, requests), strict=True):
                        wanted = {int(i) for i in relevant[q]}
                        for position, point in enumerate(hits):
                            if int(point.id) in wanted:
                                ranks[q] = position
                                break
            finally:
                qs.delete_collection(name)
            facts = {
                "location": config.qdrant_url or f"embedded {qs.engine} (temporary folder)",
                "distance": "cosine",
                "exact": True,
                "limit": limit,
                "points": len(candidates),
                "datatype": config.vector_datatype if server else "float32",
                "quantization": config.quantization if server else "none",
                "rescore": config.rescore if quantized else None,
                "oversampling": config.oversampling if quantized else None,
                "on_disk": bool(config.on_disk_vectors) if server else False,
            }
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return ranks, facts
