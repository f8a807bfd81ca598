"""e5v-qdrant: E5-V multimodal embeddings for retrieval, with Qdrant storage and LlamaIndex integration."""

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
    from .encoder import E5VEncoder
    from .llamaindex import E5VEmbedding

_LAZY = {"E5VEmbedding": ".llamaindex", "E5VEncoder": ".encoder"}


def __getattr__(name: str):
    # torch and transformers load only when the encoder is first used, so `e5v-qdrant --help` stays fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
