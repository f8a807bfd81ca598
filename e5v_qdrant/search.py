"""Query a collection with text, an image, or both (a composed query: image + modification text)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import E5VConfigError
from .points import SearchHit, decode_hit
from .store import FUSIONS, CollectionMismatchError, QdrantStore

__all__ = ["SearchHit", "search"]


def search(
    store: QdrantStore,
    encoder,
    collection: str,
    *,
    text: str | None = None,
    image=None,
    top_k: int = 10,
    modality: str = "any",
    under: str | os.PathLike | None = None,
    where: Mapping[str, Any] | None = None,
    score_threshold: float | None = None,
    hybrid: bool = False,
    fusion: str = "rrf",
) -> list[SearchHit]:
    """Nearest stored items to a text query, an image, or an image + modification text (composed).

    Args:
        modality: only ``text`` or ``image`` results (``any``: both).
        under: only sources under this folder (or this file); see ``filters.build_filter``.
        where: payload field → value, all required (``{"page": 2, "file_name": "a.pdf"}``).
        score_threshold: only results with a cosine of at least this (not with ``hybrid``).
        hybrid: fuse the dense results with BM25 keyword results (text queries on collections ingested with
            ``--hybrid``); scores are then fusion scores.
        fusion: how ``hybrid`` fuses: ``rrf`` (reciprocal rank fusion) or ``dbsf`` (distribution-based score
            fusion; see ``QdrantStore.query``).

    Raises:
        E5VConfigError: neither text nor image given, the collection does not exist, or ``hybrid`` on a collection
            without sparse vectors / with a non-text query.
        CollectionMismatchError: the encoder is not the model the collection was built with.

    Example:
        >>> search(store, encoder, "docs", text="XJ-4471 valve", hybrid=True, under="manuals", top_k=3)  # doctest: +SKIP
    """
    from .filters import build_filter

    if text is None and image is None:
        raise E5VConfigError("give a query TEXT, an --image, or both (composed query)")
    if fusion not in FUSIONS:
        raise E5VConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    query_filter = build_filter(modality=modality, under=under, where=where)
    physical = store.resolve(collection)
    if physical is None:
        raise E5VConfigError(
            f"collection {collection!r} does not exist; create it with `e5v-qdrant ingest PATH --collection {collection}`"
        )
    try:
        store.check_compatible(collection, physical, encoder)
    except CollectionMismatchError as exc:
        raise CollectionMismatchError(
            f"{exc} (for search: drop --model/--adapter to use the model recorded in the collection)"
        ) from None
    sparse = None
    if hybrid:
        sparse = _sparse_query(store, collection, physical, text, image, score_threshold)
    if image is not None and text is not None:
        vector = encoder.embed_composed([image], [text])[0]
    elif image is not None:
        vector = encoder.embed_images([image])[0]
    else:
        vector = encoder.embed_queries([text])[0]
    points = store.query(
        collection,
        vector,
        top_k=top_k,
        query_filter=query_filter,
        sparse=sparse,
        score_threshold=score_threshold,
        fusion=fusion,
    )
    return [decode_hit(p) for p in points]


def _sparse_query(store: QdrantStore, collection: str, physical: str, text, image, score_threshold):
    """The BM25 query vector for a hybrid search, with the encoder recorded in the collection."""
    from .sparse import encoder_from_spec

    if text is None or image is not None:
        raise E5VConfigError("--hybrid needs a text-only query (keywords); drop --image or --hybrid")
    if score_threshold is not None:
        raise E5VConfigError(
            "--score-threshold compares cosine scores; hybrid results are ranked by a fusion score (rrf or dbsf). "
            "Drop one of --score-threshold and --hybrid."
        )
    spec = store.sparse_spec(physical)
    if spec is None:
        raise E5VConfigError(
            f"collection {collection!r} has no sparse vectors: it was ingested without --hybrid. Search without "
            f"--hybrid, or make it hybrid without re-embedding: `e5v-qdrant reingest --collection {collection} "
            f"--sparse-encoder e5v-bm25` (adds the keyword side only)."
        )
    return encoder_from_spec(spec).encode_query(text)
