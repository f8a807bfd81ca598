"""The point schema: ids, payload keys, vector names, indexed fields, point building and hit decoding.

Every module that writes or reads points spells the schema through these names, so a payload key or vector name
lives in one place. The payload is the one stock LlamaIndex ``QdrantVectorStore`` reads (``_node_content``,
``_node_type``, ``doc_id``/``ref_doc_id`` plus flat metadata; see ``sources``), and the dense vector name is its
default, so ``QdrantVectorStore(client=..., collection_name=NAME)`` works on these collections.

Items (``text_item``, ``image_item``, ``page_image_item``: id, modality, content and the LlamaIndex payload) are made
here from content only; ``sources`` reads files into them. Nothing here talks to Qdrant: points are built as
``qdrant_client.models.PointStruct`` and hits read from whatever the store returns (``ScoredPoint`` / ``Record``).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "VECTOR_NAME",
    "SPARSE_VECTOR_NAME",
    "DEFAULT_SPARSE_ENCODER",
    "SPARSE_ENCODERS",
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
    "Item",
    "point_id",
    "document_id",
    "content_hash",
    "ancestor_folders",
    "text_item",
    "page_image_item",
    "image_item",
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
#: The name (``spec()["name"]``) of the keyword encoder ``--hybrid`` uses unless ``--sparse-encoder`` says otherwise.
DEFAULT_SPARSE_ENCODER = "e5v-bm25"
#: Every keyword encoder a collection can be built with (``sparse.spec_named``), by that name.
SPARSE_ENCODERS = (DEFAULT_SPARSE_ENCODER, "qdrant-bm25")
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


def content_hash(data: bytes | str) -> str:
    """SHA-256 hex digest of bytes, or of a string's UTF-8 encoding."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def ancestor_folders(source: str) -> list[str]:
    """Every folder containing ``source``, nearest first: ``/a/b/c.txt`` → ``['/a/b', '/a', '/']``."""
    folders = []
    parent = os.path.dirname(os.path.normpath(source))
    while parent and parent not in folders:
        folders.append(parent)
        parent = os.path.dirname(parent)
    return folders


@dataclass
class Item:
    """One thing to embed and store: a text chunk or an image.

    Attributes:
        id: deterministic point id (``point_id`` of source, chunk index, content hash).
        modality: ``"text"`` or ``"image"``.
        content: the chunk text, or the image file's bytes (a decoded ``PIL.Image`` once validated for embedding).
        payload: the point payload (LlamaIndex node fields + ``modality``, ``source``, ``content_hash``,
            ``chunk_index``).
    """

    id: str
    modality: str
    content: Any
    payload: dict[str, Any]


def _item(
    node_cls,
    source: str,
    modality: str,
    chunk_index: int,
    content: str | bytes,
    page: int | None = None,
    **node_fields: Any,
) -> Item:
    """``content`` as an ``Item`` whose payload is what LlamaIndex writes for a ``node_cls`` node with id = point id.

    Metadata (``modality``, ``source``, ``content_hash``, ``chunk_index``, ``file_name``, and ``page`` for PDFs) is
    excluded from the embedding text; the LLM sees ``source``, ``file_name`` and ``page``. The node's source
    relationship is the file. A ``page`` is part of the id (the payload stays a pure function of the id).
    """
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    digest = content_hash(content)
    pid = point_id(source, chunk_index, digest if page is None else f"{digest}\npage {page}")
    metadata = {
        MODALITY: modality,
        SOURCE: source,
        CONTENT_HASH: digest,
        CHUNK_INDEX: chunk_index,
        FILE_NAME: os.path.basename(source),
    }
    if page is not None:
        metadata[PAGE] = page
    node = node_cls(
        id_=pid,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=[k for k in metadata if k not in (SOURCE, FILE_NAME, PAGE)],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=document_id(source))},
        **node_fields,
    )
    payload = node_to_metadata_dict(node, remove_text=False, flat_metadata=True)
    payload[FOLDERS] = ancestor_folders(source)  # a list, so outside the (flat) LlamaIndex metadata
    return Item(pid, modality, content, payload)


def text_item(source: str, chunk_index: int, text: str, page: int | None = None) -> Item:
    """A text chunk as an ``Item`` whose payload LlamaIndex reads back as a ``TextNode`` with id = point id.

    The payload is a pure function of (source, chunk index, chunk text, PDF page) — no character offsets, which would
    change when an earlier part of the file is edited — so an unchanged chunk keeps its point as is.
    """
    from llama_index.core.schema import TextNode

    return _item(TextNode, source, "text", chunk_index, text, page=page, text=text)


def page_image_item(source: str, page: int, png: bytes) -> Item:
    """A rendered PDF page as an image ``Item`` (``page`` 1-based; ``content_hash`` = SHA-256 of the PNG bytes).

    Its id depends on (source, page, rendered pixels), so an unchanged page keeps its point. The LlamaIndex node is
    an ``ImageNode`` with ``image_mimetype`` ``image/png`` and no ``image_path`` (the source is a PDF, not an image
    file); ``render_pdf_page(source, page)`` gives the image back.
    """
    from llama_index.core.schema import ImageNode

    return _item(ImageNode, source, "image", 0, png, page=page, image_mimetype="image/png")


def image_item(source: str, data: bytes) -> Item:
    """An image file as an ``Item`` whose payload LlamaIndex reads back as an ``ImageNode`` (``image_path`` = source)."""
    from llama_index.core.schema import ImageNode

    return _item(ImageNode, source, "image", 0, data, image_path=source, image_mimetype=mimetypes.guess_type(source)[0])


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
