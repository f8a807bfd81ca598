"""Deprecated: ``QdrantEdgeVectorStore`` moved to the integration package ``llama-index-vector-stores-qdrant-edge`` (``from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore``).

Kept so existing imports work: with ``llama-index-vector-stores-qdrant-edge`` installed this module re-exports ``QdrantEdgeVectorStore`` with a
``DeprecationWarning``; without it, importing it raises an ``ImportError`` naming ``pip install llama-index-vector-stores-qdrant-edge``.
"""

from __future__ import annotations

from .deprecations import moved_to_integration

QdrantEdgeVectorStore = moved_to_integration(
    "llama_index.vector_stores.qdrant_edge",
    "QdrantEdgeVectorStore",
    "llama-index-vector-stores-qdrant-edge",
    old=__name__,
)

__all__ = ["QdrantEdgeVectorStore"]
