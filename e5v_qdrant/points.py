"""The point schema: ids, payload keys, vector names, indexed fields, point building and hit decoding.

Every module that writes or reads points spells the schema through these names, so a payload key or vector name
lives in one place. The payload is the one stock LlamaIndex ``QdrantVectorStore`` reads (``_node_content``,
``_node_type``, ``doc_id``/``ref_doc_id`` plus flat metadata; see ``sources``), and the dense vector name is its
default, so ``QdrantVectorStore(client=..., collection_name=NAME)`` works on these collections.

Nothing here talks to Qdrant: points are built as ``qdrant_client.models.PointStruct`` and hits read from whatever
the store returns (``ScoredPoint`` / ``Record``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "VECTOR_NAME",
    "SPARSE_VECTOR_NAME",
    "ID_NAMESPACE",
    "MODALITY",
    "SOURCE",
    "CONTENT_HASH",
    "CHUNK_INDEX",
    "FILE_NAME",
    "PAGE",
    "FOLDERS",
    "FILE_STAT",
    "MODEL_FINGERPRINT",
    "NODE_CONTENT",
    "NODE_TYPE",
    "INDEXED_FIELDS",
    "point_id",
    "document_id",
    "make_point",
    "dense_vector",
    "sparse_vector",
    "point_text",
    "point_modality",
    "SearchHit",
    "decode_hit",
]

#: Name of the dense vector; the default of LlamaIndex's ``QdrantVectorStore``.
VECTOR_NAME = "text-dense"
#: Name of the sparse (keyword) vector of hybrid collections; LlamaIndex's default sparse vector name.
SPARSE_VECTOR_NAME = "text-sparse-new"
#: UUIDv5 namespace of point ids (fixed forever: changing it changes every id).
ID_NAMESPACE = uuid.UUID("5b0c7f4e-2f1d-5e6a-9c3b-e5a0d1a7c001")

# ---------------------------------------------------------------- payload keys
#: ``text`` or ``image``.
MODALITY = "modality"
#: Absolute path (or URI) of the point's source file.
SOURCE = "source"
#: SHA-256 of the item's content (text chunk or image bytes).
CONTENT_HASH = "content_hash"
#: Position of the chunk in its source (0 for images).
CHUNK_INDEX = "chunk_index"
#: Base name of the source (LlamaIndex metadata the LLM sees).
FILE_NAME = "file_name"
#: 1-based PDF page of a PDF text chunk or page image.
PAGE = "page"
#: Every folder containing the source, nearest first (``filters.ancestor_folders``; ``search --under``).
FOLDERS = "folders"
#: The source file's stat, chunking and item count when its points were written (``pipeline.stat_record``).
FILE_STAT = "file_stat"
#: Fingerprint id of the model that made the point's vector.
MODEL_FINGERPRINT = "model_fingerprint"
#: LlamaIndex's serialized node (its ``text`` is the chunk text).
NODE_CONTENT = "_node_content"
#: LlamaIndex's node class name (``TextNode`` / ``ImageNode``).
NODE_TYPE = "_node_type"

#: Payload fields a collection indexes for the search filters and per-source lookups: name → Qdrant schema type.
INDEXED_FIELDS = {MODALITY: "keyword", SOURCE: "keyword", FOLDERS: "keyword", PAGE: "integer"}


def point_id(source: str, chunk_index: int, content_hash: str) -> str:
    """Deterministic point id: canonical UUIDv5 string of (source URI, chunk index, content hash)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{source}\n{chunk_index}\n{content_hash}"))


def document_id(source: str) -> str:
    """Deterministic LlamaIndex ``ref_doc_id`` of a source file (UUIDv5 of its URI)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"document\n{source}"))


def make_point(pid: str, vector, payload: dict[str, Any], fingerprint_id: str | None = None, sparse=None):
    """The Qdrant point of one embedding: ``vector`` under ``VECTOR_NAME``, the payload (with ``model_fingerprint``
    set when given), and ``sparse`` = (indices, values) under ``SPARSE_VECTOR_NAME`` when given (hybrid)."""
    from qdrant_client import models

    if fingerprint_id is not None:
        payload = {**payload, MODEL_FINGERPRINT: fingerprint_id}
    values = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    vectors: dict[str, Any] = {VECTOR_NAME: values}
    if sparse is not None:
        vectors[SPARSE_VECTOR_NAME] = models.SparseVector(indices=list(sparse[0]), values=list(sparse[1]))
    return models.PointStruct(id=pid, vector=vectors, payload=payload)


def dense_vector(point) -> Any:
    """The dense vector of a point or record (named ``VECTOR_NAME``, or the only unnamed one)."""
    vector = point.vector
    return vector.get(VECTOR_NAME) if isinstance(vector, dict) else vector


def sparse_vector(point) -> Any:
    """The sparse vector of a point or record (``SPARSE_VECTOR_NAME``; a hybrid collection's text point), else
    ``None``."""
    vector = point.vector
    return vector.get(SPARSE_VECTOR_NAME) if isinstance(vector, dict) else None


def point_text(payload: dict[str, Any] | None) -> str | None:
    """The chunk text stored in a point's payload (LlamaIndex's ``_node_content``), else ``None``."""
    content = (payload or {}).get(NODE_CONTENT)
    if not isinstance(content, str):
        return None
    try:
        return json.loads(content).get("text") or None
    except ValueError:
        return None


def point_modality(payload: dict[str, Any] | None) -> str:
    """``text`` or ``image``: the ``modality`` key, else what LlamaIndex's node type says (collections of other
    tools)."""
    payload = payload or {}
    return payload.get(MODALITY) or ("image" if payload.get(NODE_TYPE) == "ImageNode" else "text")


@dataclass
class SearchHit:
    """One search result and its provenance.

    Attributes:
        score: cosine similarity (the fusion score for hybrid searches: RRF or DBSF).
        page: the 1-based PDF page of a PDF text chunk or page image, else ``None``.
        chunk_index: the chunk's position in its source (0 for images).
        text: the chunk text (text points), else ``None``.
    """

    score: float
    id: str
    modality: str | None
    source: str | None
    chunk_index: int | None
    text: str | None
    page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "id": self.id,
            "modality": self.modality,
            "source": self.source,
            "page": self.page,
            "chunk_index": self.chunk_index,
            "text": self.text,
        }


def decode_hit(point) -> SearchHit:
    """A ``ScoredPoint`` as a ``SearchHit``."""
    payload = point.payload or {}
    return SearchHit(
        score=float(point.score),
        id=str(point.id),
        modality=payload.get(MODALITY),
        source=payload.get(SOURCE),
        chunk_index=payload.get(CHUNK_INDEX),
        text=point_text(payload),
        page=payload.get(PAGE),
    )
