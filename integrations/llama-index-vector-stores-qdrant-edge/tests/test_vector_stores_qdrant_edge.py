"""QdrantEdgeVectorStore against the stock LlamaIndex QdrantVectorStore (local mode) on the same nodes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore
from qdrant_client import QdrantClient

DIM = 48


def _nodes(n=240, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    nodes = []
    for i, v in enumerate(vectors):
        meta = {"group": f"g{i % 4}", "rank": i, "modality": "image" if i % 5 == 0 else "text"}
        cls = ImageNode if i % 5 == 0 else TextNode
        extra = {"image_path": f"/pics/{i}.png"} if cls is ImageNode else {}
        node = cls(
            id_=f"00000000-0000-4000-8000-{i:012d}",
            text=f"chunk {i}",
            metadata=meta,
            embedding=v.tolist(),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i % 10}")},
            **extra,
        )
        nodes.append(node)
    return nodes, vectors


@pytest.fixture
def stores(tmp_path):
    nodes, vectors = _nodes()
    stock = QdrantVectorStore(client=QdrantClient(path=str(tmp_path / "local")), collection_name="c")
    edge = QdrantEdgeVectorStore(path=str(tmp_path / "edge"), collection_name="c")
    stock.add(nodes)
    edge.add(nodes)
    yield stock, edge, nodes, vectors
    edge.close()
    stock.client.close()


# (filters, the same selection written out in Python: the independent reference)
FILTERS = {
    "none": (None, lambda m: True),
    "eq": (MetadataFilters(filters=[MetadataFilter(key="group", value="g1")]), lambda m: m["group"] == "g1"),
    "gte": (
        MetadataFilters(filters=[MetadataFilter(key="rank", value=100, operator=FilterOperator.GTE)]),
        lambda m: m["rank"] >= 100,
    ),
    "or-in": (
        MetadataFilters(
            filters=[
                MetadataFilter(key="group", value=["g0", "g2"], operator=FilterOperator.IN),
                MetadataFilter(key="modality", value="image"),
            ],
            condition=FilterCondition.OR,
        ),
        lambda m: m["group"] in ("g0", "g2") or m["modality"] == "image",
    ),
    "ne": (
        MetadataFilters(filters=[MetadataFilter(key="group", value="g3", operator=FilterOperator.NE)]),
        lambda m: m["group"] != "g3",
    ),
}


@pytest.mark.parametrize("case", FILTERS)
def test_same_top_k_as_the_stock_store_and_exact_cosine(stores, case):
    stock, edge, nodes, vectors = stores
    filters, admits = FILTERS[case]
    rng = np.random.default_rng(7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    admitted = [i for i, n in enumerate(nodes) if admits(n.metadata)]
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        query = VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10, filters=filters)
        a, b = stock.query(query), edge.query(query)
        assert b.ids == a.ids
        np.testing.assert_allclose(b.similarities, a.similarities, atol=1e-5)
        scores = unit[admitted] @ (q / np.linalg.norm(q))  # exact cosine in numpy
        assert b.ids == [nodes[admitted[j]].node_id for j in np.argsort(-scores)[:10]]


def test_text_and_image_nodes_round_trip(stores):
    stock, edge, nodes, _ = stores
    got = {n.node_id: n for n in edge.get_nodes(node_ids=[nodes[0].node_id, nodes[1].node_id])}
    assert isinstance(got[nodes[0].node_id], ImageNode) and got[nodes[0].node_id].image_path == "/pics/0.png"
    assert isinstance(got[nodes[1].node_id], TextNode) and got[nodes[1].node_id].text == "chunk 1"
    assert got[nodes[1].node_id].metadata == nodes[1].metadata and got[nodes[1].node_id].ref_doc_id == "doc-1"
    stored = np.asarray(nodes[1].embedding)  # cosine collections store unit vectors (both engines)
    np.testing.assert_allclose(got[nodes[1].node_id].embedding, stored / np.linalg.norm(stored), atol=1e-6)
    assert len(edge.get_nodes()) == len(nodes) == len(stock.get_nodes())


def test_deletes_and_clear_match_the_stock_store(stores):
    stock, edge, nodes, _ = stores
    for store in (stock, edge):
        store.delete("doc-3")
        store.delete_nodes(node_ids=[nodes[0].node_id, nodes[1].node_id])
        store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="group", value="g2")]))
    left = sorted(n.node_id for n in edge.get_nodes())
    assert left == sorted(n.node_id for n in stock.get_nodes())
    expected = [
        n.node_id for n in nodes if n.ref_doc_id != "doc-3" and n.metadata["group"] != "g2" and n.metadata["rank"] > 1
    ]
    assert left == sorted(expected)
    for store in (stock, edge):  # a cleared collection is gone: reads raise qdrant-client's "not found" ValueError
        store.clear()
        with pytest.raises(ValueError, match="Collection c not found"):
            store.get_nodes()
        with pytest.raises(ValueError, match="Collection c not found"):
            store.query(VectorStoreQuery(query_embedding=[1.0] * DIM))


def test_async_variants_and_reopen(tmp_path):
    nodes, _ = _nodes(30)
    path = str(tmp_path / "edge")

    async def run():
        store = QdrantEdgeVectorStore(path=path, collection_name="c")
        await store.async_add(nodes)
        result = await store.aquery(VectorStoreQuery(query_embedding=nodes[4].embedding, similarity_top_k=1))
        await store.adelete_nodes(node_ids=[nodes[5].node_id])
        got = await store.aget_nodes()
        store.close()
        return result, got

    result, got = asyncio.run(run())
    assert result.ids == [nodes[4].node_id] and result.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert len(got) == 29
    reopened = QdrantEdgeVectorStore(path=path, collection_name="c")
    assert len(reopened.get_nodes()) == 29
    reopened.close()


def test_reads_a_collection_through_its_alias_and_refuses_a_second_process_holder(tmp_path):
    from qdrant_client import models

    from e5v_qdrant.store import EdgeClient

    nodes, _ = _nodes(20)
    client = EdgeClient(str(tmp_path / "qd"))
    client.create_collection("docs-e5v-abc", {"text-dense": models.VectorParams(size=DIM, distance="Cosine")})
    client.update_collection_aliases(
        [
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name="docs-e5v-abc", alias_name="docs")
            )
        ]
    )
    store = QdrantEdgeVectorStore(collection_name="docs", client=client)
    store.add(nodes)
    assert client.count("docs-e5v-abc").count == 20
    assert store.query(VectorStoreQuery(query_embedding=nodes[3].embedding, similarity_top_k=1)).ids == [
        nodes[3].node_id
    ]
    with pytest.raises(RuntimeError, match=r"already accessed by another instance .*\(pid \d+\)"):
        QdrantEdgeVectorStore(path=str(tmp_path / "qd"), collection_name="docs")
    client.close()
