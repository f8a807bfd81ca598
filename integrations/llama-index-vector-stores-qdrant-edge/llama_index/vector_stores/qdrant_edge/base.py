"""LlamaIndex vector store over an embedded Qdrant Edge store folder (the engine `e5v-qdrant ingest` uses by default).

The stock ``QdrantVectorStore(client=QdrantClient(path=...))`` reads qdrant-client local-mode folders only.
``QdrantEdgeVectorStore`` *is* that stock store (a subclass), handed a client that speaks to an Edge folder, so every
query, filter, hybrid, ``get_nodes``, delete and async path runs the stock code and answers as the stock store does
over local mode: ``node_ids=[]`` means no id filter, unsupported filter operators raise ``NotImplementedError``, a
missing collection raises ``ValueError``, ``get_nodes`` returns at most 9,999 nodes, MMR mode is a plain top-k.
``tests/test_llamaindex_differential.py`` runs the same LlamaIndex calls on both over one CLI-built collection.

Three deliberate differences:

- ``add`` appends without building the HNSW index (the folder is opened with ``EdgeClient(defer_indexing=True)``):
  the index is built once, by ``optimize()`` or ``close()``. Until then the new points sit in plain segments that
  every search scans exactly, so results are exact, not stale. Through a shared ``client=`` the client's own setting
  holds.

- ``clear()`` through an alias (a CLI-built collection) deletes the collection behind it and its aliases; the stock
  store's ``delete_collection(alias)`` leaves an aliased collection in place (a silent no-op in local mode).
- ``add`` builds points without validating each vector again (``PointStruct.model_construct``; same ids, vectors and
  payloads): ~0.6 ms per 4096-d node less, measured on 1,000 nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.utils import iter_batch
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from llama_index.vector_stores.qdrant import QdrantVectorStore

try:
    from e5v_qdrant.store import EdgeClient
except ImportError:  # e5v-qdrant before its store package exported the Edge client
    from e5v_qdrant.edge import EdgeClient
from e5v_qdrant.errors import E5VConfigError

__all__ = ["QdrantEdgeVectorStore"]

logger = logging.getLogger(__name__)


def _warn_about_local_mode_data(edge: EdgeClient) -> None:
    """Collections the stock ``QdrantClient(path=...)`` wrote into this Edge folder: Edge does not see them."""
    try:
        with open(os.path.join(edge.path, "meta.json"), encoding="utf-8") as fh:
            local = sorted(json.load(fh).get("collections") or {})
    except (OSError, ValueError, AttributeError):
        return
    if local:
        logger.warning(
            "%s is a Qdrant Edge store, but QdrantClient(path=...) also wrote qdrant-client local-mode collections %s "
            "into it (meta.json, collection/), which Edge does not read: open Edge folders with QdrantEdgeVectorStore. "
            "To keep that data, move meta.json and collection/ into a folder of their own and open it with "
            "QdrantClient(path=...)",
            edge.path,
            local,
        )


class _EdgeAsQdrantClient:
    """An ``EdgeClient`` with the ``QdrantClient`` behaviour the stock store relies on: ``collection_exists`` follows
    aliases (as local mode and servers do), ``query_points`` without a query lists points, ``upload_points`` exists.
    Everything else is the ``EdgeClient``."""

    def __init__(self, edge: EdgeClient):
        self.edge = edge

    def __getattr__(self, name: str) -> Any:
        return getattr(self.edge, name)

    def collection_exists(self, collection_name: str, **_: Any) -> bool:
        try:
            return self.edge.resolve(collection_name) is not None  # None: neither a collection nor an alias
        except ValueError:  # e5v-qdrant before EdgeClient.resolve answered None
            return False

    def query_points(self, collection_name: str, query: Any = None, **kwargs: Any) -> Any:
        """Without a query (and prefetch), the first ``limit`` points in id order with score 1.0, as local mode
        answers (``VectorStoreQuery(query_embedding=None, filters=...)``); otherwise the ``EdgeClient``'s search."""
        if query is not None or kwargs.get("prefetch") is not None:
            return self.edge.query_points(collection_name, query=query, **kwargs)
        from qdrant_client.http import models

        offset, limit = kwargs.get("offset") or 0, kwargs.get("limit", 10)
        records, _ = self.edge.scroll(
            collection_name,
            scroll_filter=kwargs.get("query_filter"),
            limit=offset + limit,
            with_payload=kwargs.get("with_payload", True),
            with_vectors=kwargs.get("with_vectors", False),
        )
        return models.QueryResponse(
            points=[
                models.ScoredPoint(id=r.id, version=0, score=1.0, payload=r.payload, vector=r.vector)
                for r in records[offset:]
            ]
        )

    def upload_points(self, collection_name: str, points: Any, batch_size: int = 64, **_: Any) -> None:
        for batch in iter_batch(list(points), batch_size):
            self.edge.upsert(collection_name, batch)


class _InWorkerThread:
    """``AsyncQdrantClient``-shaped view of a client: each call runs in a worker thread (the engine is in-process)."""

    def __init__(self, client: Any):
        self.client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


class QdrantEdgeVectorStore(QdrantVectorStore):
    """LlamaIndex vector store in an embedded Qdrant Edge folder: the stock ``QdrantVectorStore`` over Edge.

    Args:
        path: the store folder (created if missing; one process at a time).
        collection_name: a collection or alias (CLI-built collections are read through their alias); created on the
            first ``add`` exactly as the stock store creates it.
        client: an open ``EdgeClient`` to share (then ``path`` may be omitted and ``close`` leaves it open).
        **kwargs: the stock store's options (``batch_size``, ``enable_hybrid``, ``sparse_doc_fn``,
            ``sparse_query_fn``, ``hybrid_fusion_fn``, ``dense_config``, ``sparse_config``, ``index_doc_id``…).

    Example:
        >>> from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore      # doctest: +SKIP
        >>> store = QdrantEdgeVectorStore(path="./qdrant_data", collection_name="docs")  # doctest: +SKIP
        >>> index = VectorStoreIndex.from_vector_store(store, embed_model=E5VEmbedding())  # doctest: +SKIP
    """

    path: str | None = None

    _edge: EdgeClient = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=True)

    def __init__(
        self, path: str | None = None, collection_name: str = "", *, client: EdgeClient | None = None, **kwargs: Any
    ) -> None:
        if not collection_name:
            raise E5VConfigError("QdrantEdgeVectorStore needs a collection_name")
        if client is None and not path:
            raise E5VConfigError("QdrantEdgeVectorStore needs path= (the Edge store folder) or client=")
        for server_only in ("url", "api_key", "aclient"):
            if kwargs.get(server_only) is not None:
                raise E5VConfigError(
                    f"QdrantEdgeVectorStore does not take {server_only}=: for a server use the stock QdrantVectorStore"
                )
        edge = client if client is not None else EdgeClient(str(path), defer_indexing=True)
        _warn_about_local_mode_data(edge)
        adapted = _EdgeAsQdrantClient(edge)
        try:
            super().__init__(
                collection_name=collection_name, client=adapted, aclient=_InWorkerThread(adapted), **kwargs
            )
        except BaseException:
            if client is None:
                edge.close()
            raise
        self.path = None if path is None else str(path)
        self._edge = edge
        self._owns_client = client is None

    @classmethod
    def class_name(cls) -> str:
        return "QdrantEdgeVectorStore"

    def optimize(self) -> bool:
        """Build the collection's HNSW index over what ``add`` appended, now (blocking; ``close`` does it too).

        Returns whether any segment changed. Searches are exact before, and use the index after.
        """
        return self._edge.optimize(self.collection_name)

    async def aoptimize(self) -> bool:
        return await asyncio.to_thread(self.optimize)

    def close(self) -> None:
        """Build pending indexes, flush and release the folder (if this store opened it)."""
        if self._owns_client:
            self._edge.close()

    def clear(self) -> None:
        """Delete the collection (the one behind an alias, and its aliases)."""
        name = self.collection_name
        if self._client.collection_exists(name):
            name = self._edge.resolve(name)
        self._edge.delete_collection(name)
        self._collection_initialized = False

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    def _build_points(self, nodes: list[BaseNode], sparse_vector_name: str) -> tuple[list[Any], list[str]]:
        """The stock store's points (same ids, vectors and payloads), without validating each float again."""
        from qdrant_client import models

        points: list[Any] = []
        ids: list[str] = []
        for batch in iter_batch(nodes, self.batch_size):
            indices: list = []
            values: list = []
            if self.enable_hybrid and self._sparse_doc_fn is not None:
                indices, values = self._sparse_doc_fn([n.get_content(metadata_mode=MetadataMode.EMBED) for n in batch])
            sparse = self.enable_hybrid and len(indices) > 0 and len(indices) == len(values)
            for i, node in enumerate(batch):
                vector: dict[str, Any] = {self.dense_vector_name: node.get_embedding()}
                if sparse:
                    vector[sparse_vector_name] = models.SparseVector(indices=indices[i], values=values[i])
                # node_to_metadata_dict drops the embedding from the payload: a copy without it is not serialised.
                payload = node_to_metadata_dict(
                    node.model_copy(update={"embedding": None}), remove_text=False, flat_metadata=self.flat_metadata
                )
                points.append(models.PointStruct.model_construct(id=node.node_id, vector=vector, payload=payload))
                ids.append(node.node_id)
        return points, ids
