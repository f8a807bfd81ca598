"""``E5VTextEmbedder``: a query string -> its E5-V embedding (for retrievers)."""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import component, default_to_dict

from e5v_qdrant.config import DEFAULT_MODEL
from e5v_qdrant.errors import E5VInputError

from .encoder_backed import EncoderBacked

__all__ = ["E5VTextEmbedder"]


@component
class E5VTextEmbedder(EncoderBacked):
    """Embed a query text with E5-V, e.g. before an embedding retriever.

    The vector lives in the space of ``E5VDocumentEmbedder`` (texts) and ``E5VDocumentImageEmbedder`` (images and PDF
    pages): one text query finds both. Queries use E5-V's text prompt unless ``query_prompt=...``.

    Args:
        model: hub id or local folder of an E5-V checkpoint.
        options: the ``EncoderConfig`` options every adapter mirrors (``e5v_qdrant.sharing.adapter_options``: each
            option that changes vectors — revision, adapter, prompts, query_prompt, max_text_tokens, image_layout —
            plus device, dtype and batch_size); ``None``: its default.
        encoder_kwargs: any other ``EncoderConfig`` option (``max_batch_tokens``, ``preprocess_workers``…).

    Example:
        >>> embedder = E5VTextEmbedder(model="royokong/e5-v", dtype="bfloat16")   # doctest: +SKIP
        >>> embedder.run("a dog on a beach")["embedding"][:3]                      # doctest: +SKIP
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ):
        # explicit base call: @component rebuilds the class, which breaks zero-argument super() in __init__
        EncoderBacked.__init__(self, model, encoder_kwargs=encoder_kwargs, **options)

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component (its options; never the model)."""
        return default_to_dict(self, **self._encoder_parameters())

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """Embed ``text`` as a query.

        Raises:
            E5VInputError: ``text`` is not a string (embed Documents with ``E5VDocumentEmbedder``).
        """
        if not isinstance(text, str):
            raise E5VInputError(
                f"E5VTextEmbedder input ({type(text).__name__})",
                "expects one string; embed a list of Documents with E5VDocumentEmbedder",
            )
        return {"embedding": self._embed("embed_queries", [text])[0]}

    @component.output_types(embedding=list[float])
    async def run_async(self, text: str) -> dict[str, Any]:
        """``run`` in a worker thread."""
        return await asyncio.to_thread(self.run, text)
