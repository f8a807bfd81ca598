"""``E5VDocumentEmbedder``: Documents -> the same Documents with E5-V embeddings of their text (and chosen meta)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_to_dict

from e5v_qdrant.config import DEFAULT_MODEL

from .encoder_backed import EncoderBacked

__all__ = ["E5VDocumentEmbedder"]


@component
class E5VDocumentEmbedder(EncoderBacked):
    """Embed Documents' text with E5-V; each returned Document carries its ``embedding``.

    As Haystack's own document embedders do, the embedded text is the values of ``meta_fields_to_embed`` (those a
    Document has) and its ``content``, joined by ``embedding_separator``. Input Documents are not modified.

    Args:
        model: hub id or local folder of an E5-V checkpoint.
        options: the ``EncoderConfig`` options every adapter mirrors (``e5v_qdrant.sharing.adapter_options``: each
            option that changes vectors — revision, adapter, prompts, query_prompt, max_text_tokens, image_layout —
            plus device, dtype and batch_size); ``None``: its default.
        encoder_kwargs: any other ``EncoderConfig`` option.
        meta_fields_to_embed: meta keys whose values are embedded before the content.
        embedding_separator: what joins meta values and content.
        progress_bar: show a progress bar while embedding.

    Example:
        >>> embedder = E5VDocumentEmbedder(model="royokong/e5-v", meta_fields_to_embed=["title"])  # doctest: +SKIP
        >>> embedder.run([Document(content="A dog runs.", meta={"title": "Beach"})])["documents"]   # doctest: +SKIP
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        progress_bar: bool = True,
        **options: Any,
    ):
        # explicit base call: @component rebuilds the class, which breaks zero-argument super() in __init__
        EncoderBacked.__init__(self, model, encoder_kwargs=encoder_kwargs, **options)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.progress_bar = progress_bar

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component (its options; never the model)."""
        return default_to_dict(
            self,
            **self._encoder_parameters(),
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            progress_bar=self.progress_bar,
        )

    def text_to_embed(self, document: Document) -> str:
        """The text embedded for ``document``: chosen meta values and content, joined by the separator."""
        values = [
            str(document.meta[key])
            for key in self.meta_fields_to_embed
            if key in document.meta and document.meta[key] is not None
        ]
        return self.embedding_separator.join([*values, document.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed ``documents``; returns copies with ``embedding`` set, in order.

        Raises:
            E5VInputError: ``documents`` is not a list of Documents (embed a query string with E5VTextEmbedder).
        """
        self._check_documents(documents)
        if not documents:
            return {"documents": []}
        texts = [self.text_to_embed(doc) for doc in documents]
        vectors = self._embed("embed_texts", texts, show_progress=self.progress_bar)
        return {"documents": [replace(doc, embedding=vector) for doc, vector in zip(documents, vectors, strict=True)]}

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """``run`` in a worker thread."""
        return await asyncio.to_thread(self.run, documents)
