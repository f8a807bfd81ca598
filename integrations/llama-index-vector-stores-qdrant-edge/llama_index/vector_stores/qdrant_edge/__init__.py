"""Qdrant Edge vector store for LlamaIndex (``llama-index-vector-stores-qdrant-edge``).

The implementation is :class:`e5v_qdrant.llamaindex_edge.QdrantEdgeVectorStore`; this namespace package re-exports it
where LlamaIndex integrations live (``from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore``).
"""

from e5v_qdrant.llamaindex_edge import QdrantEdgeVectorStore

__all__ = ["QdrantEdgeVectorStore"]
