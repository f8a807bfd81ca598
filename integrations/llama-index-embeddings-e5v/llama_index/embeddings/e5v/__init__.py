"""E5-V multimodal embeddings for LlamaIndex (``llama-index-embeddings-e5v``): ``E5VEmbedding``, a
``MultiModalEmbedding`` over :class:`e5v_qdrant.encoder.E5VEncoder` (``base.py``).

``from e5v_qdrant import E5VEmbedding`` and ``e5v_qdrant.llamaindex`` still find it, with a ``DeprecationWarning``.
"""

from llama_index.embeddings.e5v.base import E5VEmbedding

__all__ = ["E5VEmbedding"]
