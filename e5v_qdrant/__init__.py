"""e5v-qdrant: E5-V multimodal embeddings for retrieval, with Qdrant storage (the framework adapters live in
``integrations/``: llama-index-embeddings-e5v, llama-index-vector-stores-qdrant-edge, langchain-e5v, e5v-haystack)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import EncoderConfig, StoreConfig
from .errors import E5VConfigError, E5VError, E5VImageError, E5VInputError, E5VModelError
from .prompts import PROMPT_PRESETS, PromptSet, get_prompts

__version__ = "0.1.0"

__all__ = [
    "E5VEncoder",
    "E5VEmbedding",
    "EncoderConfig",
    "StoreConfig",
    "PromptSet",
    "PROMPT_PRESETS",
    "get_prompts",
    "E5VError",
    "E5VConfigError",
    "E5VInputError",
    "E5VImageError",
    "E5VModelError",
]

if TYPE_CHECKING:
    from llama_index.embeddings.e5v import E5VEmbedding

    from .encoder import E5VEncoder


def __getattr__(name: str):
    # torch and transformers load only when the encoder is first used, so `e5v-qdrant --help` stays fast.
    if name == "E5VEncoder":
        from .encoder import E5VEncoder

        return E5VEncoder
    if name == "E5VEmbedding":  # moved to its LlamaIndex integration package; kept here with a DeprecationWarning
        from .deprecations import moved_to_integration

        return moved_to_integration(
            "llama_index.embeddings.e5v", "E5VEmbedding", "llama-index-embeddings-e5v", old=__name__
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
