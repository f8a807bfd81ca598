"""``E5VEmbedding``: E5-V as a LlamaIndex ``MultiModalEmbedding`` (texts, images and composed image + text queries).

A thin adapter over :class:`~e5v_qdrant.encoder.E5VEncoder`: every vector comes from the encoder, a LlamaIndex batch
is one encoder call, async methods run the encoder in a worker thread. ``__call__`` / ``acall`` (what
``IngestionPipeline`` runs) embed image nodes as images and text nodes as text.

Example:
    >>> from llama_index.embeddings.e5v import E5VEmbedding                                   # doctest: +SKIP
    >>> emb = E5VEmbedding(model_name="royokong/e5-v", revision="main")         # doctest: +SKIP
    >>> emb.get_text_embedding("a dog on a beach")                             # doctest: +SKIP
    >>> emb.get_image_embedding("dog.jpg")                                     # doctest: +SKIP
    >>> retriever.retrieve(emb.query_bundle(image="dog.jpg", text="make it a cat"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import threading
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr, create_model
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeRelationship, QueryBundle

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.encoder import E5VEncoder
from e5v_qdrant.errors import E5VConfigError, E5VImageError, E5VInputError
from e5v_qdrant.media import ImageInput
from e5v_qdrant.sharing import adapter_options, encoder_lock, pydantic_fields

__all__ = ["E5VEmbedding"]

Embedding = list[float]

# LlamaIndex-side names of EncoderConfig options (others keep their EncoderConfig name).
_LLAMA_NAMES = {"model": "model_name", "prompts": "prompt_preset", "batch_size": "embed_batch_size"}
# EncoderConfig options that E5VEmbedding mirrors as its own pydantic fields (LlamaIndex name -> encoder name), derived
# from their declaration (``sharing.adapter_options``: every option that changes vectors, so to_dict() and cache keys
# change whenever vectors would, plus device, dtype and the batch size).
_MIRRORED = {_LLAMA_NAMES.get(name, name): name for name in adapter_options()}
# EncoderConfig options that do not change the vectors; passed through ``encoder_kwargs``.
_PASSTHROUGH = {f.name for f in dataclasses.fields(EncoderConfig)} - set(_MIRRORED.values())
# The mirrored options as pydantic fields (type, default and help from EncoderConfig), under E5VEmbedding.
_Fields = create_model("E5VEmbeddingFields", __base__=MultiModalEmbedding, **pydantic_fields(_LLAMA_NAMES))


class E5VEmbedding(_Fields):
    """E5-V embeddings for LlamaIndex: documents, queries, images and composed (image + edit text) queries.

    Every option that changes the vectors is a pydantic field, so ``to_dict()`` (and with it LlamaIndex cache keys)
    differs whenever the vectors would. The model loads on first use (or pass ``encoder=`` to share one already
    loaded ``E5VEncoder``; the fields then mirror its config).

    Args:
        model_name, revision, adapter, device, dtype, embed_batch_size, prompt_preset, query_prompt, max_text_tokens,
            image_layout, …: the ``EncoderConfig`` options every adapter mirrors (``sharing.adapter_options``: each
            option that changes vectors, plus device, dtype and batch size), with their types, defaults and help
            derived from ``EncoderConfig``; ``model``, ``prompts`` and ``batch_size`` are named ``model_name``,
            ``prompt_preset`` and ``embed_batch_size`` here (each LlamaIndex batch is one encoder call).
        encoder_kwargs: other ``EncoderConfig`` options that do not change vectors (``max_batch_tokens``,
            ``preprocess_workers``, ``max_image_pixels``, ``attn_implementation``).
        encoder: an already loaded ``E5VEncoder`` to use instead of loading one.
        endpoint: URL of an E5-V endpoint (``e5v-qdrant serve`` or vLLM) to embed through instead of loading the model
            (``e5v_qdrant.remote.RemoteEncoder``; bearer key from ``$E5V_ENCODER_API_KEY``). Options given explicitly
            must be what ``e5v-qdrant serve`` serves; for vLLM they declare its vectors (``image_layout="llava-next"``).

    Raises:
        E5VConfigError: an invalid option, or an option contradicting the passed ``encoder``'s config.

    Example:
        >>> emb = E5VEmbedding(model_name="royokong/e5-v", revision="main", dtype="bfloat16")  # doctest: +SKIP
        >>> index = VectorStoreIndex.from_documents(docs, embed_model=emb)                     # doctest: +SKIP
    """

    encoder_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Other EncoderConfig options that do not change the vectors."
    )
    endpoint: str | None = Field(
        default=None, description="URL of an E5-V endpoint (e5v-qdrant serve or vLLM) to embed through, if any."
    )

    _encoder: E5VEncoder | None = PrivateAttr(default=None)
    _load_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, model_name: str | None = None, *, encoder: E5VEncoder | None = None, **data: Any):
        if model_name is not None:
            data["model_name"] = model_name
        if encoder is not None:
            data = _mirror_encoder(encoder, data)
        super().__init__(**data)
        self.encoder_config()  # validate options now, not at the first embedding call
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "E5VEmbedding"

    def __getstate__(self) -> dict[str, Any]:
        # Pickling (e.g. IngestionPipeline.run(num_workers=...)) carries the fields, not the loaded model: the other
        # process loads its own encoder from them on first use.
        private = self.__pydantic_private__
        self.__pydantic_private__ = {k: v for k, v in private.items() if k not in ("_encoder", "_load_lock")}
        try:
            return super().__getstate__()
        finally:
            self.__pydantic_private__ = private

    # ------------------------------------------------------------------ the encoder
    def encoder_config(self) -> EncoderConfig:
        """The validated ``EncoderConfig`` these fields describe.

        Raises:
            E5VConfigError: an invalid option (unknown dtype or preset, missing adapter folder, bad encoder_kwargs…).
        """
        unknown = set(self.encoder_kwargs) - _PASSTHROUGH
        if unknown:
            raise E5VConfigError(
                f"encoder_kwargs {sorted(unknown)} are not pass-through EncoderConfig options; use the fields "
                f"{sorted(_MIRRORED)} for options that change vectors, and only {sorted(_PASSTHROUGH)} here"
            )
        values = {enc: getattr(self, own) for own, enc in _MIRRORED.items()}
        return EncoderConfig.from_options(values, **self.encoder_kwargs)

    @property
    def encoder(self) -> E5VEncoder:
        """The ``E5VEncoder`` behind this embedding, loaded on first access."""
        if self._encoder is None:
            with self._load_lock:
                if self._encoder is None and self.endpoint:
                    from e5v_qdrant.remote import RemoteEncoder

                    asked = {enc: getattr(self, own) for own, enc in _MIRRORED.items() if own in self.model_fields_set}
                    self._encoder = RemoteEncoder(self.endpoint, config=self.encoder_config(), required=asked)
                elif self._encoder is None:
                    self._encoder = E5VEncoder(config=self.encoder_config())
        return self._encoder

    def _run(self, method: str, *args: Any) -> list[Embedding]:
        encoder = self.encoder
        # one lock per encoder, shared with every adapter over it: concurrent async calls take turns on the model
        with encoder_lock(encoder):
            vectors = getattr(encoder, method)(*args)
        return vectors.tolist()

    async def _arun(self, method: str, *args: Any) -> list[Embedding]:
        return await asyncio.to_thread(self._run, method, *args)

    # ------------------------------------------------------------------ queries
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._run("embed_queries", [query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._arun("embed_queries", [query]))[0]

    def get_query_embedding_batch(self, queries: Sequence[str]) -> list[Embedding]:
        """Embed several queries in one encoder call (LlamaIndex itself only embeds queries one at a time)."""
        return self._run("embed_queries", list(queries))

    async def aget_query_embedding_batch(self, queries: Sequence[str]) -> list[Embedding]:
        """Async ``get_query_embedding_batch`` (runs in a worker thread)."""
        return await self._arun("embed_queries", list(queries))

    # ------------------------------------------------------------------ texts
    def _get_text_embedding(self, text: str) -> Embedding:
        return self._run("embed_texts", [text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._arun("embed_texts", [text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._run("embed_texts", list(texts))

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._arun("embed_texts", list(texts))

    # ------------------------------------------------------------------ images
    def _get_image_embedding(self, img_file_path: ImageInput) -> Embedding:
        return self._run("embed_images", [img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageInput) -> Embedding:
        return (await self._arun("embed_images", [img_file_path]))[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageInput]) -> list[Embedding]:
        return self._run("embed_images", list(img_file_paths))

    async def _aget_image_embeddings(self, img_file_paths: list[ImageInput]) -> list[Embedding]:
        return await self._arun("embed_images", list(img_file_paths))

    # ------------------------------------------------------------------ composed queries
    def get_composed_embedding(self, image: ImageInput, text: str) -> Embedding:
        """Embed a composed query: ``image`` modified as ``text`` says (CIRR-style prompt by default).

        Use the vector against an index of image embeddings, e.g. via :meth:`query_bundle`.
        """
        return self._run("embed_composed", [image], [text])[0]

    async def aget_composed_embedding(self, image: ImageInput, text: str) -> Embedding:
        """Async ``get_composed_embedding`` (runs in a worker thread)."""
        return (await self._arun("embed_composed", [image], [text]))[0]

    def get_composed_embeddings(self, images: Sequence[ImageInput], texts: Sequence[str]) -> list[Embedding]:
        """Embed several composed queries (one text per image) in one encoder call."""
        return self._run("embed_composed", list(images), list(texts))

    def query_bundle(self, text: str | None = None, image: ImageInput | None = None) -> QueryBundle:
        """A ``QueryBundle`` carrying its embedding: text → query embedding, image → image embedding, both → composed.

        Any LlamaIndex retriever over a vector store uses ``bundle.embedding`` as is, so this is how image and
        composed queries reach ``VectorStoreIndex.as_retriever().retrieve(...)``. (For a
        ``MultiModalVectorStoreIndex``, whose text-to-image retrieval re-embeds ``query_str``, query its image store
        directly: ``index.image_vector_store.query(VectorStoreQuery(query_embedding=bundle.embedding, ...))``.)

        Raises:
            E5VInputError: neither ``text`` nor ``image`` given.
        """
        if image is None and text is None:
            raise E5VInputError("query_bundle", "give text, image or both")
        if image is None:
            embedding = self.get_query_embedding(text)
        elif text is None:
            embedding = self.get_image_embedding(image)
        else:
            embedding = self.get_composed_embedding(image, text)
        return QueryBundle(query_str=text or "", embedding=embedding)

    async def aquery_bundle(self, text: str | None = None, image: ImageInput | None = None) -> QueryBundle:
        """Async ``query_bundle``."""
        if image is None and text is None:
            raise E5VInputError("query_bundle", "give text, image or both")
        if image is None:
            embedding = await self.aget_query_embedding(text)
        elif text is None:
            embedding = await self.aget_image_embedding(image)
        else:
            embedding = await self.aget_composed_embedding(image, text)
        return QueryBundle(query_str=text or "", embedding=embedding)

    # ------------------------------------------------------------------ nodes (IngestionPipeline)
    def __call__(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> Sequence[BaseNode]:
        """Embed nodes: image nodes as images, others as their text (with ``MetadataMode.EMBED`` metadata).

        Image nodes are ``ImageNode``s (``image`` base64, ``image_path``) and ``Document``s / ``Node``s with an
        ``image_resource`` (e.g. ``ImageDocument``); their text and metadata are not embedded. Nodes that already
        carry an embedding are left alone. The others get their embedding set in place, except that an image-carrying
        ``Document`` / ``Node`` is returned as an equivalent ``ImageNode`` (same id, metadata and image; source = the
        document), as a node parser would: vector stores read ``Document``s back as text nodes and
        ``MultiModalVectorStoreIndex`` only indexes ``ImageNode``s as images.

        Returns:
            The nodes, in order, with embeddings (a new list).

        Raises:
            E5VImageError: an image node has only a URL (not fetched) or no image at all.
        """
        text_nodes, texts, image_nodes, images = _split_nodes(nodes)
        if texts:
            _assign(text_nodes, self.get_text_embedding_batch(texts, show_progress=show_progress))
        if images:
            _assign(image_nodes, self.get_image_embedding_batch(images, show_progress=show_progress))
        return _as_image_nodes(nodes, image_nodes)

    async def acall(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> Sequence[BaseNode]:
        """Async ``__call__``."""
        text_nodes, texts, image_nodes, images = _split_nodes(nodes)
        if texts:
            _assign(text_nodes, await self.aget_text_embedding_batch(texts, show_progress=show_progress))
        if images:
            _assign(image_nodes, await self.aget_image_embedding_batch(images, show_progress=show_progress))
        return _as_image_nodes(nodes, image_nodes)


def _assign(nodes: list[BaseNode], vectors: list[Embedding]) -> None:
    for node, vector in zip(nodes, vectors, strict=True):
        node.embedding = vector


def _as_image_nodes(nodes: Sequence[BaseNode], embedded_images: list[BaseNode]) -> list[BaseNode]:
    """``nodes`` with every just-embedded image ``Document`` / ``Node`` replaced by an equivalent ``ImageNode``."""
    convert = {id(node) for node in embedded_images if not isinstance(node, ImageNode)}
    return [_to_image_node(node) if id(node) in convert else node for node in nodes]


def _to_image_node(node: BaseNode) -> ImageNode:
    resource = node.image_resource
    relationships = dict(node.relationships)
    relationships.setdefault(NodeRelationship.SOURCE, node.as_related_node_info())
    return ImageNode(
        id_=node.node_id,
        embedding=node.embedding,
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        image=resource.data.decode("ascii") if resource.data else None,  # MediaResource keeps data base64-encoded
        image_path=str(resource.path) if resource.path else None,
        image_url=str(resource.url) if resource.url else None,
        image_mimetype=resource.mimetype,
        metadata=dict(node.metadata),
        excluded_embed_metadata_keys=list(node.excluded_embed_metadata_keys),
        excluded_llm_metadata_keys=list(node.excluded_llm_metadata_keys),
        metadata_template=node.metadata_template,
        metadata_separator=node.metadata_separator,
        relationships=relationships,
    )


def _mirror_encoder(encoder: E5VEncoder, data: dict[str, Any]) -> dict[str, Any]:
    """Fill the fields from a loaded encoder's config; refuse options that contradict it."""
    if not isinstance(encoder, E5VEncoder):
        raise E5VConfigError(f"encoder must be an E5VEncoder, got {type(encoder).__name__}")
    cfg = encoder.config
    actual = {own: getattr(cfg, enc) for own, enc in _MIRRORED.items()}
    actual["dtype"] = str(encoder.torch_dtype).removeprefix("torch.")
    actual["device"] = str(encoder.device)
    also_ok = {"dtype": cfg.dtype, "device": cfg.device}
    for name, value in actual.items():
        if name == "embed_batch_size":
            continue  # LlamaIndex batching may differ from the encoder's forward-pass batch size
        given = data.get(name, value)
        if given != value and not (name in also_ok and given == also_ok[name]):
            raise E5VConfigError(
                f"{name}={given!r} contradicts the passed encoder ({name}={value!r}); drop the option or load "
                "another encoder"
            )
        data[name] = value
    data.setdefault("embed_batch_size", cfg.batch_size)
    passthrough = {name: getattr(cfg, name) for name in _PASSTHROUGH}
    data["encoder_kwargs"] = {**passthrough, **data.get("encoder_kwargs", {})}
    return data


def _node_image(node: BaseNode) -> ImageInput | None:
    """The image an image-carrying node holds (path or bytes), ``None`` for text nodes.

    Raises:
        E5VImageError: the node carries only an image URL, or is an ``ImageNode`` without any image.
    """
    label = f"node {node.node_id}"
    if isinstance(node, ImageNode):
        if node.image:
            return _b64decode(node.image, label)
        if node.image_path:
            return node.image_path
        if node.image_url:
            raise E5VImageError(f"{label} ({node.image_url})", _URL_REASON)
        raise E5VImageError(label, "ImageNode without image, image_path or image_url; set one of them")
    resource = getattr(node, "image_resource", None)  # Document / ImageDocument / Node
    if resource is None:
        return None
    if resource.data:
        return _b64decode(resource.data, label)
    if resource.path:
        return str(resource.path)
    if resource.url:
        raise E5VImageError(f"{label} ({resource.url})", _URL_REASON)
    return None


_URL_REASON = "image URLs are not fetched; download the image and set image_path (or image bytes) on the node"


def _b64decode(data: str | bytes, label: str) -> io.BytesIO:
    try:
        return io.BytesIO(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise E5VImageError(label, f"image field is not valid base64: {exc}") from exc


def _split_nodes(nodes: Sequence[BaseNode]) -> tuple[list[BaseNode], list[str], list[BaseNode], list[ImageInput]]:
    """Nodes still without an embedding, split into (text nodes, their texts, image nodes, their images)."""
    text_nodes: list[BaseNode] = []
    texts: list[str] = []
    image_nodes: list[BaseNode] = []
    images: list[ImageInput] = []
    for node in nodes:
        if node.embedding is not None:
            continue
        image = _node_image(node)
        if image is None:
            text_nodes.append(node)
            texts.append(node.get_content(metadata_mode=MetadataMode.EMBED))
        else:
            image_nodes.append(node)
            images.append(image)
    return text_nodes, texts, image_nodes, images
