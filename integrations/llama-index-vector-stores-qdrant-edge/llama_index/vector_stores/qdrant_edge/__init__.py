"""Qdrant Edge vector store for LlamaIndex (``llama-index-vector-stores-qdrant-edge``): ``QdrantEdgeVectorStore``, the
stock ``QdrantVectorStore`` over an embedded Qdrant Edge store folder (``base.py``).

``e5v_qdrant.llamaindex_edge`` still finds it, with a ``DeprecationWarning``.
"""

from llama_index.vector_stores.qdrant_edge.base import QdrantEdgeVectorStore

__all__ = ["QdrantEdgeVectorStore"]
