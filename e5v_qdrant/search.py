"""Query a collection with text, an image, or both (a composed query: image + modification text)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import E5VConfigError
from .store import CollectionMismatchError, QdrantStore

__all__ = ["SearchHit", "search"]


@dataclass
class SearchHit:
    """One search result: score (cosine), point id, modality, source and a text snippet (text chunks)."""

    score: float
    id: str
    modality: str | None
    source: str | None
    chunk_index: int | None
    text: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "id": self.id,
            "modality": self.modality,
            "source": self.source,
            "chunk_index": self.chunk_index,
            "text": self.text,
        }


def _hit(point) -> SearchHit:
    payload = point.payload or {}
    text = None
    content = payload.get("_node_content")
    if isinstance(content, str):
        try:
            text = json.loads(content).get("text") or None
        except ValueError:
            text = None
    return SearchHit(
        score=float(point.score),
        id=str(point.id),
        modality=payload.get("modality"),
        source=payload.get("source"),
        chunk_index=payload.get("chunk_index"),
        text=text,
    )


def search(
    store: QdrantStore,
    encoder,
    collection: str,
    *,
    text: str | None = None,
    image=None,
    top_k: int = 10,
    modality: str = "any",
) -> list[SearchHit]:
    """Nearest stored items to a text query, an image, or an image + modification text (composed).

    Raises:
        E5VConfigError: neither text nor image given, or the collection does not exist.
        CollectionMismatchError: the encoder is not the model the collection was built with.
    """
    if text is None and image is None:
        raise E5VConfigError("give a query TEXT, an --image, or both (composed query)")
    if modality not in ("any", "text", "image"):
        raise E5VConfigError(f"modality must be text, image or any, got {modality!r}")
    physical = store.resolve(collection)
    if physical is None:
        raise E5VConfigError(
            f"collection {collection!r} does not exist; create it with `e5v-qdrant ingest PATH --collection {collection}`"
        )
    try:
        store.check_compatible(collection, physical, encoder)
    except CollectionMismatchError as exc:
        raise CollectionMismatchError(
            f"{exc} (for search: drop --model/--adapter to use the model recorded in the collection)"
        ) from None
    if image is not None and text is not None:
        vector = encoder.embed_composed([image], [text])[0]
    elif image is not None:
        vector = encoder.embed_images([image])[0]
    else:
        vector = encoder.embed_queries([text])[0]
    points = store.query(collection, vector, top_k=top_k, modality=None if modality == "any" else modality)
    return [_hit(p) for p in points]
