"""Image documents in ``langchain-qdrant``'s ``QdrantVectorStore`` (which only embeds texts by itself)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from e5v_qdrant.errors import E5VConfigError, E5VInputError
from langchain_e5v.embeddings import E5VEmbeddings

if TYPE_CHECKING:
    from langchain_qdrant import QdrantVectorStore

__all__ = ["add_images"]


def add_images(
    vector_store: QdrantVectorStore,
    uris: Sequence[str],
    metadatas: Sequence[dict[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Embed image files with the store's ``E5VEmbeddings`` and write them as documents of that store.

    Each image becomes a point like ``add_texts`` writes: ``page_content`` = its path, ``metadata`` as given, the
    vector under the store's ``vector_name``. Text queries (``similarity_search``) then find images and texts alike.

    Args:
        vector_store: a dense-mode ``QdrantVectorStore`` whose ``embeddings`` is an ``E5VEmbeddings``.
        uris: image file paths (URLs are not fetched).
        metadatas: one metadata dict per image.
        ids: one point id (UUID string) per image; default random UUIDs.

    Returns:
        The point ids, in order.

    Raises:
        E5VConfigError: the store does not embed with ``E5VEmbeddings``.
        E5VInputError: ``metadatas`` or ``ids`` do not match ``uris`` in length.
        E5VImageError: an image is unreadable (nothing is written then).

    Example:
        >>> store = QdrantVectorStore.from_texts(["a red house"], E5VEmbeddings(), location=":memory:",
        ...                                      collection_name="docs")                  # doctest: +SKIP
        >>> add_images(store, ["house.jpg"], [{"kind": "image"}])                           # doctest: +SKIP
        >>> store.similarity_search("a red house", k=2)                                     # doctest: +SKIP
    """
    embeddings = vector_store.embeddings
    if not isinstance(embeddings, E5VEmbeddings):
        raise E5VConfigError(
            f"add_images needs a QdrantVectorStore built with E5VEmbeddings, got {type(embeddings).__name__}"
        )
    uris = list(uris)
    metadatas = list(metadatas) if metadatas is not None else [{} for _ in uris]
    ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in uris]
    if len(metadatas) != len(uris) or len(ids) != len(uris):
        raise E5VInputError(
            "add_images", f"got {len(uris)} uris, {len(metadatas)} metadatas and {len(ids)} ids; pass one per image"
        )
    from qdrant_client import models

    vectors = embeddings.embed_image(uris)  # all images embedded before anything is written
    points = [
        models.PointStruct(
            id=point_id,
            vector={vector_store.vector_name: vector},
            payload={vector_store.content_payload_key: uri, vector_store.metadata_payload_key: metadata},
        )
        for point_id, uri, metadata, vector in zip(ids, uris, metadatas, vectors, strict=True)
    ]
    vector_store.client.upsert(collection_name=vector_store.collection_name, points=points, wait=True)
    return ids
