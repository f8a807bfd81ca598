"""``QdrantEdgeVectorStore.add`` appends without building the HNSW index; searches before the build are exact (checked
against numpy brute force); ``optimize()`` or ``close()`` builds it once."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore

from e5v_qdrant.store.edge import client as edge_client
from e5v_qdrant.store.edge import convert as edge_convert

DIM, N, BATCH = 64, 3_000, 500


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    """Index segments over 100 KB (~400 of these vectors) and run the optimizer every 500 written points: a write
    path that builds indexes inline builds them here."""
    monkeypatch.setattr(edge_client, "INDEX_EVERY_POINTS", BATCH)
    monkeypatch.setattr(edge_convert, "INDEXING_THRESHOLD_KB", 100)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, DIM))
    x = centres[rng.integers(0, 30, size=N)] + 0.8 * rng.normal(size=(N, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, 30, size=20)] + 0.8 * rng.normal(size=(20, DIM))  # fresh queries, not stored points
    return x.astype(np.float32), (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _nodes(x):
    return [
        TextNode(id_=f"00000000-0000-4000-8000-{i:012d}", text=f"chunk {i}", embedding=v.tolist())
        for i, v in enumerate(x)
    ]


def _indexed(store) -> int:
    return store.client.get_collection("c").indexed_vectors_count or 0


def _search(store, q, k=10):
    result = store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=k))
    return [int(i.rsplit("-", 1)[1]) for i in result.ids], result.similarities


def test_add_appends_unindexed_and_searches_stay_exact_until_optimize(tmp_path):
    x, queries = _data()
    store = QdrantEdgeVectorStore(path=str(tmp_path / "edge"), collection_name="c")
    nodes = _nodes(x)
    for start in range(0, N, BATCH):
        store.add(nodes[start : start + BATCH])
    assert store.client.count("c").count == N
    assert _indexed(store) == 0  # nothing was built while adding
    for q in queries:  # before the build: the exact answer (numpy cosine brute force)
        ids, scores = _search(store, q)
        exact = np.argsort(-(x @ q))[:10]
        assert ids == exact.tolist()
        assert scores == pytest.approx((x[exact] @ q).tolist(), abs=1e-5)
    assert store.optimize() is True
    assert _indexed(store) >= N - BATCH  # built once, over (nearly) everything added
    for i in range(0, N, 300):  # after it: the index answers (a stored vector finds itself first)
        assert _search(store, x[i], k=1)[0] == [i]
    store.close()


def test_close_builds_the_index_the_adds_deferred(tmp_path):
    x, _ = _data(1)
    store = QdrantEdgeVectorStore(path=str(tmp_path / "edge"), collection_name="c")
    store.add(_nodes(x))
    assert _indexed(store) == 0
    store.close()
    reopened = QdrantEdgeVectorStore(path=str(tmp_path / "edge"), collection_name="c")
    assert _indexed(reopened) >= N - BATCH
    assert _search(reopened, x[7], k=1)[0] == [7]
    reopened.close()


def test_one_graph_over_everything_is_searched_wider_than_the_clis_segments(tmp_path):
    """The store builds one graph over all it added (not the CLI's segments of ~50,000 points), and one graph needs
    the wider search: its collections record search ef 1024 (100k points in one graph: recall@10 0.991, against 0.965
    at the CLI's 512; e5v-qdrant README, "Choosing the HNSW defaults")."""
    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore

    x, _ = _data()
    store = QdrantEdgeVectorStore(path=str(tmp_path / "qd"), collection_name="nodes")
    store.add(_nodes(x[:10]))
    store.close()
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as cli:
        cli.create_plain("segments", DIM, storage_options=True)
        assert (cli.recorded_ef("nodes"), cli.recorded_ef("segments")) == (1024, 512)
