"""``E5VEmbeddings``: E5-V as LangChain ``Embeddings`` (documents, queries, images, composed image + text queries).

A thin adapter over :class:`e5v_qdrant.encoder.E5VEncoder`: every vector comes from the encoder, one LangChain call is
one encoder call, async methods run the encoder in a worker thread. Instances with equal options share one loaded
encoder (:func:`e5v_qdrant.sharing.shared_encoder`), loaded on first use.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field, PrivateAttr, create_model

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.encoder import E5VEncoder
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.media import ImageInput
from e5v_qdrant.sharing import adapter_options, encoder_config, encoder_lock, pydantic_fields, shared_encoder

__all__ = ["E5VEmbeddings"]

# Fields that are EncoderConfig options of the same name, derived from their declaration (``sharing.adapter_options``:
# every option that changes vectors, plus device, dtype and batch size); ``encoder_kwargs`` carries any other option.
_OPTIONS = tuple(name for name in adapter_options() if name != "model")
# Those options as pydantic fields: EncoderConfig's types and help; ``None`` (the default) = EncoderConfig's default.
_Fields = create_model("E5VEmbeddingsFields", **pydantic_fields(unset_default=True))


class E5VEmbeddings(_Fields, Embeddings):
    """E5-V embeddings for LangChain: texts, queries, images and composed (image + edit text) queries.

    Texts, images and composed queries share one space: a text query's vector finds image documents in any vector
    store. The model loads on first use, not at construction.

    Args:
        model: hub id or local folder of an E5-V checkpoint (default ``royokong/e5-v``).
        revision, adapter, device, dtype, batch_size, prompts, query_prompt, max_text_tokens, image_layout, …: the
            ``EncoderConfig`` options every adapter mirrors (``sharing.adapter_options``: each option that changes
            vectors, plus device, dtype and batch size), typed and documented as in ``EncoderConfig``; ``None`` (the
            default) = ``EncoderConfig``'s default. ``query_prompt`` shapes ``embed_query``.
        encoder_kwargs: any other ``EncoderConfig`` option (``max_batch_tokens``, ``preprocess_workers``…).
        encoder: an already loaded ``E5VEncoder`` to use (the fields then mirror its config).
        base_url: URL of an E5-V endpoint (``e5v-qdrant serve`` or vLLM) to embed through instead of loading the model
            (``e5v_qdrant.remote.RemoteEncoder``; bearer key from ``$E5V_ENCODER_API_KEY``). Options given must be
            what ``e5v-qdrant serve`` serves; for vLLM they declare its vectors (``image_layout="llava-next"``).

    Raises:
        E5VConfigError: an invalid or unknown option, or one contradicting the passed ``encoder``.

    Example:
        >>> from langchain_e5v import E5VEmbeddings
        >>> emb = E5VEmbeddings(model="royokong/e5-v", dtype="bfloat16")         # doctest: +SKIP
        >>> emb.embed_query("a dog on a beach")                                  # doctest: +SKIP
        >>> emb.embed_image(["dog.jpg"])                                         # doctest: +SKIP
        >>> emb.embed_composed(["dog.jpg"], ["make it a cat"])                   # doctest: +SKIP
    """

    encoder_kwargs: dict[str, Any] = Field(default_factory=dict, description="Other EncoderConfig options.")
    base_url: str | None = Field(
        None, description="URL of an E5-V endpoint (e5v-qdrant serve or vLLM) to embed through."
    )

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _encoder: E5VEncoder | None = PrivateAttr(default=None)

    def __init__(self, *, encoder: E5VEncoder | None = None, **data: Any):
        if encoder is not None:
            data = _mirror(encoder, data)
        super().__init__(**data)
        self.encoder_config()  # validate now, not at the first embedding call
        self._encoder = encoder

    def encoder_config(self) -> EncoderConfig:
        """The validated ``EncoderConfig`` these fields describe.

        Raises:
            E5VConfigError: an invalid option, or one this e5v-qdrant's ``EncoderConfig`` does not have.
        """
        return encoder_config(self.model, {name: getattr(self, name) for name in _OPTIONS}, self.encoder_kwargs)

    @property
    def encoder(self) -> E5VEncoder:
        """The ``E5VEncoder`` behind these embeddings, loaded (or found already loaded) on first access."""
        if self._encoder is None and self.base_url:
            from e5v_qdrant.remote import RemoteEncoder

            given = self.model_fields_set & {"model", *_OPTIONS}
            asked = {name: getattr(self, name) for name in given if getattr(self, name) is not None}
            self._encoder = RemoteEncoder(self.base_url, config=self.encoder_config(), required=asked)
        elif self._encoder is None:
            self._encoder = shared_encoder(self.encoder_config())
        return self._encoder

    def _run(self, method: str, *args: Any) -> list[list[float]]:
        encoder = self.encoder
        with encoder_lock(encoder):
            return getattr(encoder, method)(*args).tolist()

    # ------------------------------------------------------------------ LangChain Embeddings
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with E5-V's text prompt."""
        return self._run("embed_texts", texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a search query (the ``query_prompt`` if set, else exactly as a document)."""
        return self._run("embed_queries", [text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async ``embed_documents`` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async ``embed_query`` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_query, text)

    # ------------------------------------------------------------------ images
    def embed_image(self, uris: Sequence[ImageInput]) -> list[list[float]]:
        """Embed images: file paths (what LangChain's multimodal stores pass as ``uris``), bytes or PIL images.

        URLs are not fetched. Raises ``E5VImageError`` naming an unreadable image and its position.
        """
        return self._run("embed_images", uris)

    def embed_composed(self, uris: Sequence[ImageInput], texts: Sequence[str]) -> list[list[float]]:
        """Embed composed queries: each image modified as its text says (CIRR-style prompt), one text per image."""
        return self._run("embed_composed", uris, texts)


def _mirror(encoder: E5VEncoder, data: dict[str, Any]) -> dict[str, Any]:
    """Fields filled from a loaded encoder's config (so ``encoder_config()`` equals it); contradictions are refused."""
    if not isinstance(encoder, E5VEncoder):
        raise E5VConfigError(f"encoder must be an E5VEncoder, got {type(encoder).__name__}")
    actual = dataclasses.asdict(encoder.config)
    given = {name: value for name, value in data.items() if name != "encoder_kwargs" and value is not None}
    given.update(data.get("encoder_kwargs") or {})
    for name, value in given.items():
        if name not in actual:
            raise E5VConfigError(f"{name!r} is not an option of this e5v-qdrant's EncoderConfig; drop it")
        if value != actual[name]:
            raise E5VConfigError(
                f"{name}={value!r} contradicts the passed encoder ({name}={actual[name]!r}); drop the option or load "
                "another encoder"
            )
    fields = {name: actual.pop(name) for name in ("model", *_OPTIONS) if name in actual}
    return {**fields, "encoder_kwargs": actual}
