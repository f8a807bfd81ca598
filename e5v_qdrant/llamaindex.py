"""Deprecated: ``E5VEmbedding`` moved to the integration package ``llama-index-embeddings-e5v`` (``from llama_index.embeddings.e5v import E5VEmbedding``).

Kept so existing imports work: with ``llama-index-embeddings-e5v`` installed this module re-exports ``E5VEmbedding`` with a
``DeprecationWarning``; without it, importing it raises an ``ImportError`` naming ``pip install llama-index-embeddings-e5v``.
"""

from __future__ import annotations

from .deprecations import moved_to_integration

E5VEmbedding = moved_to_integration(
    "llama_index.embeddings.e5v", "E5VEmbedding", "llama-index-embeddings-e5v", old=__name__
)

__all__ = ["E5VEmbedding"]
