"""E5-V multimodal embeddings for LlamaIndex (``llama-index-embeddings-e5v``).

The implementation is :class:`e5v_qdrant.llamaindex.E5VEmbedding`; this namespace package re-exports it so LlamaIndex
code finds it where integrations live (``from llama_index.embeddings.e5v import E5VEmbedding``).
"""

from e5v_qdrant.llamaindex import E5VEmbedding

__all__ = ["E5VEmbedding"]
