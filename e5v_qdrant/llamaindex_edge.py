"""LlamaIndex vector store over an embedded Qdrant Edge store folder (the engine `e5v-qdrant ingest` uses by default).

The stock ``QdrantVectorStore(client=QdrantClient(path=...))`` only reads qdrant-client local-mode folders;
``QdrantEdgeVectorStore`` is its counterpart for Edge folders. It stores LlamaIndex's node payloads exactly as the
stock store does (``node_to_metadata_dict``, ``doc_id``/``ref_doc_id`` keys, dense vector ``text-dense``, cosine), so
nodes written by either round-trip through the other after `e5v-qdrant migrate`, and it reads collections built by
the CLI (alias names resolve, text and image nodes come back as ``TextNode`` / ``ImageNode``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from .edge import EdgeClient
from .errors import E5VConfigError
from .store import VECTOR_NAME

__all__ = ["QdrantEdgeVectorStore", "metadata_filters_to_qdrant"]

#: Payload key of the LlamaIndex document id (the stock QdrantVectorStore's ``DOCUMENT_ID_KEY``).
DOC_ID_KEY = "doc_id"


def metadata_filters_to_qdrant(filters: MetadataFilters):
    """LlamaIndex ``MetadataFilters`` as a ``qdrant_client.models.Filter`` (same operators as the stock store).

    Raises:
        E5VConfigError: an operator Qdrant filters cannot express (``CONTAINS``, ``ANY``, ``ALL``…).
    """
    from qdrant_client import models

    conditions: list[Any] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            if f.filters:
                conditions.append(metadata_filters_to_qdrant(f))
            continue
        op, key, value = f.operator, f.key, f.value
        if op == FilterOperator.EQ:
            if isinstance(value, float):
                conditions.append(models.FieldCondition(key=key, range=models.Range(gte=value, lte=value)))
            else:
                conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
        elif op in (FilterOperator.LT, FilterOperator.GT, FilterOperator.LTE, FilterOperator.GTE):
            bound = {
                FilterOperator.LT: "lt",
                FilterOperator.GT: "gt",
                FilterOperator.LTE: "lte",
                FilterOperator.GTE: "gte",
            }
            conditions.append(models.FieldCondition(key=key, range=models.Range(**{bound[op]: value})))
        elif op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
            conditions.append(models.FieldCondition(key=key, match=models.MatchText(text=value)))
        elif op == FilterOperator.NE:
            conditions.append(models.FieldCondition(key=key, match=models.MatchExcept(**{"except": [value]})))
        elif op in (FilterOperator.IN, FilterOperator.NIN):
            values = value if isinstance(value, list) else str(value).split(",")
            match = models.MatchAny(any=values) if op == FilterOperator.IN else models.MatchExcept(**{"except": values})
            conditions.append(models.FieldCondition(key=key, match=match))
        elif op == FilterOperator.IS_EMPTY:
            conditions.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=key)))
        else:
            raise E5VConfigError(
                f"filter operator {op} on {key!r} is not supported by Qdrant filters: use EQ, NE, GT, GTE, LT, LTE, "
                "IN, NIN, TEXT_MATCH, TEXT_MATCH_INSENSITIVE or IS_EMPTY"
            )
    if filters.condition == FilterCondition.OR:
        return models.Filter(should=conditions)
    if filters.condition == FilterCondition.NOT:
        return models.Filter(must_not=conditions)
    return models.Filter(must=conditions)


class QdrantEdgeVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store in an embedded Qdrant Edge folder.

    Args:
        path: the store folder (created if missing; one process at a time).
        collection_name: a collection or alias (CLI-built collections are read through their alias); created with
            cosine ``text-dense`` vectors sized from the first nodes added, like the stock ``QdrantVectorStore``.
        batch_size: nodes per upsert.
        client: an open ``EdgeClient`` to share (then ``path`` may be omitted and ``close`` leaves it open).

    Example:
        >>> from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore      # doctest: +SKIP
        >>> store = QdrantEdgeVectorStore(path="./qdrant_data", collection_name="docs")  # doctest: +SKIP
        >>> index = VectorStoreIndex.from_vector_store(store, embed_model=E5VEmbedding())  # doctest: +SKIP
    """

    stores_text: bool = True
    flat_metadata: bool = False

    path: str | None
    collection_name: str
    batch_size: int = 64

    _client: EdgeClient = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=True)

    def __init__(
        self,
        path: str | None = None,
        collection_name: str = "",
        *,
        batch_size: int = 64,
        client: EdgeClient | None = None,
        **kwargs: Any,
    ) -> None:
        if not collection_name:
            raise E5VConfigError("QdrantEdgeVectorStore needs a collection_name")
        if client is None and not path:
            raise E5VConfigError("QdrantEdgeVectorStore needs path= (the Edge store folder) or client=")
        super().__init__(path=path, collection_name=collection_name, batch_size=batch_size, **kwargs)
        self._client = client if client is not None else EdgeClient(str(path))
        self._owns_client = client is None

    @classmethod
    def class_name(cls) -> str:
        return "QdrantEdgeVectorStore"

    @property
    def client(self) -> EdgeClient:
        return self._client

    def close(self) -> None:
        """Build pending indexes, flush and release the folder (if this store opened it)."""
        if self._owns_client:
            self._client.close()

    def _exists(self) -> bool:
        try:
            self._client.get_collection(self.collection_name)
        except ValueError:
            return False
        return True

    def _create(self, dim: int) -> None:
        from qdrant_client import models

        self._client.create_collection(
            self.collection_name, {VECTOR_NAME: models.VectorParams(size=dim, distance=models.Distance.COSINE)}
        )
        self._client.create_payload_index(self.collection_name, DOC_ID_KEY, models.PayloadSchemaType.KEYWORD)

    # ------------------------------------------------------------ writes
    def add(self, nodes: list[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert ``nodes`` (with their embeddings); creates the collection on the first call."""
        from qdrant_client import models

        if not nodes:
            return []
        if not self._exists():
            self._create(len(nodes[0].get_embedding()))
        ids = []
        for start in range(0, len(nodes), self.batch_size):
            batch = nodes[start : start + self.batch_size]
            # The node's payload is its JSON without the embedding (a shallow copy without it is not serialised
            # only to be dropped); PointStruct.model_construct: the vector is not validated float by float again.
            points = [
                models.PointStruct.model_construct(
                    id=node.node_id,
                    vector={VECTOR_NAME: node.get_embedding()},
                    payload=node_to_metadata_dict(
                        node.model_copy(update={"embedding": None}),
                        remove_text=False,
                        flat_metadata=self.flat_metadata,
                    ),
                )
                for node in batch
            ]
            self._client.upsert(self.collection_name, points)
            ids.extend(node.node_id for node in batch)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of document ``ref_doc_id``."""
        from qdrant_client import models

        if self._exists():
            flt = models.Filter(must=[models.FieldCondition(key=DOC_ID_KEY, match=models.MatchValue(value=ref_doc_id))])
            self._client.delete(self.collection_name, models.FilterSelector(filter=flt))

    def _selection(self, node_ids: list[str] | None, filters: MetadataFilters | None):
        from qdrant_client import models

        must: list[Any] = []
        if node_ids is not None:
            must.append(models.HasIdCondition(has_id=list(node_ids)))
        if filters is not None and filters.filters:
            must.append(metadata_filters_to_qdrant(filters))
        return models.Filter(must=must) if must else None

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the nodes with these ids and/or matching ``filters`` (both given: those matching both)."""
        from qdrant_client import models

        if node_ids is None and filters is None:
            return
        if node_ids is not None and not node_ids:
            return
        if self._exists():
            self._client.delete(self.collection_name, models.FilterSelector(filter=self._selection(node_ids, filters)))

    def clear(self) -> None:
        """Delete the collection (the physical one behind an alias, and its aliases)."""
        if self._exists():
            physical = self._client.resolve(self.collection_name)
            self._client.delete_collection(physical)

    # ------------------------------------------------------------ reads
    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, limit: int | None = None
    ) -> list[BaseNode]:
        """Nodes with these ids and/or matching ``filters`` (all nodes if neither is given)."""
        if not self._exists() or (node_ids is not None and not node_ids):
            return []
        flt = self._selection(node_ids, filters)
        nodes: list[BaseNode] = []
        offset = None
        while True:
            records, offset = self._client.scroll(
                self.collection_name, scroll_filter=flt, limit=256, offset=offset, with_payload=True, with_vectors=True
            )
            nodes.extend(self._node(r) for r in records)
            if offset is None or (limit is not None and len(nodes) >= limit):
                return nodes[:limit] if limit is not None else nodes

    def _node(self, point) -> BaseNode:
        node = metadata_dict_to_node(point.payload or {})
        vector = point.vector
        if isinstance(vector, dict):
            vector = vector.get(VECTOR_NAME, vector.get(""))
        if vector is not None and node.embedding is None:
            node.embedding = list(vector)
        return node

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes by cosine similarity, within ``filters`` / ``doc_ids`` / ``node_ids``."""
        from qdrant_client import models

        if query.query_embedding is None:
            raise E5VConfigError("QdrantEdgeVectorStore.query needs query_embedding (dense search only)")
        if not self._exists():
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        must: list[Any] = []
        if query.doc_ids:
            must.append(models.FieldCondition(key=DOC_ID_KEY, match=models.MatchAny(any=list(query.doc_ids))))
        selection = self._selection(query.node_ids, query.filters)
        if selection is not None:
            must.append(selection)
        response = self._client.query_points(
            self.collection_name,
            query=list(query.query_embedding),
            using=VECTOR_NAME,
            limit=query.similarity_top_k,
            query_filter=models.Filter(must=must) if must else None,
            with_payload=True,
        )
        points = response.points
        return VectorStoreQueryResult(
            nodes=[self._node(p) for p in points],
            similarities=[p.score for p in points],
            ids=[str(p.id) for p in points],
        )

    # ------------------------------------------------------------ async (the engine is in-process: run in a thread)
    async def async_add(self, nodes: list[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **kwargs)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **kwargs)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, limit: int | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, limit)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
