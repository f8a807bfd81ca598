"""QdrantEdgeVectorStore answers as the stock QdrantVectorStore: the same LlamaIndex calls, one CLI-built collection.

One folder of texts and images is ingested by the CLI (``--hybrid``, tiny replica) twice, into an Edge folder and a
qdrant-client local-mode folder; ids, vectors and payloads are deterministic, so both hold the same collection (the
first test checks it). Every call then runs on the stock ``QdrantVectorStore`` over local mode and on
``QdrantEdgeVectorStore`` over Edge, and must give the same node ids, order, contents and scores (approx), or raise the
same kind of error. Where they differ on purpose, a test says so. Queries that mutate run on fresh copies.

This module lives in ``tests/`` (not in the integration package) because it needs the session's tiny replica and the
CLI helpers of ``tests/``.
"""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
from helpers import make_corpus, points_of, run_ingest
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import ImageNode, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.embeddings.e5v import E5VEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

from e5v_qdrant.sparse import sparse_doc_fn, sparse_query_fn

HYBRID = {"enable_hybrid": True, "sparse_doc_fn": sparse_doc_fn, "sparse_query_fn": sparse_query_fn}


@pytest.fixture(scope="module")
def built(tmp_path_factory, replica_path):
    """The pristine store folders (never opened for writing after the ingest) and the stored payloads."""
    root = tmp_path_factory.mktemp("diff")
    corpus = make_corpus(root / "corpus")
    folders = {}
    for engine in ("edge", "local"):
        folders[engine] = root / engine
        assert run_ingest([corpus], folders[engine], replica_path, "--hybrid", "--embedded", engine) == 0
    payloads = points_of(folders["edge"])
    assert points_of(folders["local"]) == payloads and len(payloads) > 10  # the same collection in both engines
    return folders, payloads


def _copy(built, tmp_path, engine):
    folder = tmp_path / engine
    shutil.copytree(built[0][engine], folder)
    return str(folder)


def _open(built, tmp_path, name="docs", **options):
    """(stock store over a local-mode copy, our store over an Edge copy), both with ``options``."""
    stock = QdrantVectorStore(
        client=QdrantClient(path=_copy(built, tmp_path, "local")), collection_name=name, **options
    )
    edge = QdrantEdgeVectorStore(path=_copy(built, tmp_path, "edge"), collection_name=name, **options)
    return stock, edge


@pytest.fixture
def pair(built, tmp_path):
    stock, edge = _open(built, tmp_path)
    yield stock, edge
    edge.close()
    stock.client.close()


@pytest.fixture
def emb(encoder):
    return E5VEmbedding(encoder=encoder)


def _same_nodes(a, b):
    assert [n.node_id for n in b] == [n.node_id for n in a]
    assert [type(n) for n in b] == [type(n) for n in a]
    assert [(n.get_content(), n.metadata, n.ref_doc_id) for n in b] == [
        (n.get_content(), n.metadata, n.ref_doc_id) for n in a
    ]
    for x, y in zip(a, b, strict=True):
        assert (x.embedding is None) == (y.embedding is None)
        if x.embedding is not None:
            np.testing.assert_allclose(y.embedding, x.embedding, atol=1e-5)


def _same_result(a, b):
    assert b.ids == a.ids
    np.testing.assert_allclose(b.similarities, a.similarities, atol=1e-5)
    _same_nodes(a.nodes, b.nodes)


def _same_up_to_ties(a, b):
    """Same scores in order and, score by score, the same nodes: engines order equal scores differently (BM25 gives
    repeated chunks equal scores), so only the last group, which ``top_k`` may cut, can hold other members."""
    np.testing.assert_allclose(b.similarities, a.similarities, atol=1e-5)

    def groups(result):
        out: dict = {}
        for pid, score in zip(result.ids, result.similarities, strict=True):
            out.setdefault(round(score, 4), set()).add(pid)
        out.pop(round(result.similarities[-1], 4))
        return out

    assert groups(b) == groups(a)
    by_id = {n.node_id: n for n in b.nodes}
    common = [n for n in a.nodes if n.node_id in by_id]
    _same_nodes(common, [by_id[n.node_id] for n in common])


def _hits_equal(a, b):
    assert [h.node.node_id for h in b] == [h.node.node_id for h in a]
    np.testing.assert_allclose([h.score for h in b], [h.score for h in a], atol=1e-5)
    _same_nodes([h.node for h in a], [h.node for h in b])


def _text_of(payloads, file_name, chunk):
    import json

    return next(
        json.loads(p["_node_content"])["text"]
        for p in payloads.values()
        if p["file_name"] == file_name and p["chunk_index"] == chunk
    )


# ---------------------------------------------------------------------- the README path: from_vector_store
def test_from_vector_store_retriever_returns_top_k_on_a_cli_built_edge_collection(built, pair, emb):
    stock, edge = pair
    payloads = built[1]
    chunk = _text_of(payloads, "food.md", 2)
    hits = VectorStoreIndex.from_vector_store(edge, embed_model=emb).as_retriever(similarity_top_k=3).retrieve(chunk)
    assert len(hits) == 3  # was 0: the retriever sends node_ids=[] (the index holds no nodes of its own)
    assert hits[0].node.get_content() == chunk and hits[0].score == pytest.approx(1.0, abs=1e-4)  # self-retrieval
    reference = VectorStoreIndex.from_vector_store(stock, embed_model=emb).as_retriever(similarity_top_k=3)
    _hits_equal(reference.retrieve(chunk), hits)


@pytest.mark.parametrize("mode", ["default", "mmr"])
def test_retriever_and_query_engine_with_a_mock_llm_answer_alike(pair, emb, mode):
    stock, edge = pair
    question = "cups of flour with butter"
    answers = []
    for store in (stock, edge):
        index = VectorStoreIndex.from_vector_store(store, embed_model=emb)
        hits = index.as_retriever(similarity_top_k=4, vector_store_query_mode=mode).retrieve(question)
        response = index.as_query_engine(llm=MockLLM(), similarity_top_k=4, vector_store_query_mode=mode).query(
            question
        )
        answers.append((hits, response))
    (hits_a, resp_a), (hits_b, resp_b) = answers
    assert len(hits_a) == 4  # MMR is not implemented by the stock store: a plain top-k, on both
    _hits_equal(hits_a, hits_b)
    _hits_equal(resp_a.source_nodes, resp_b.source_nodes)
    assert str(resp_b) == str(resp_a)


def test_image_query_through_the_retriever(built, pair, emb):
    stock, edge = pair
    image = next(p["source"] for p in built[1].values() if p["file_name"] == "two.jpg")
    results = [
        VectorStoreIndex.from_vector_store(s, embed_model=emb)
        .as_retriever(similarity_top_k=2)
        .retrieve(emb.query_bundle(image=image))
        for s in (stock, edge)
    ]
    _hits_equal(*results)
    assert isinstance(results[1][0].node, ImageNode) and results[1][0].node.image_path == image


# ---------------------------------------------------------------------- vector_store.query
def _ids_where(payloads, admits):
    return {pid for pid, p in payloads.items() if admits(p)}


def _f(key, value, op=FilterOperator.EQ):
    return MetadataFilter(key=key, value=value, operator=op)


def _and(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


# name -> (filters, the same selection written out over the payloads: an independent reference)
FILTERS = {
    "eq-str": (_and(_f("modality", "image")), lambda p: p["modality"] == "image"),
    "eq-int": (_and(_f("chunk_index", 2)), lambda p: p["chunk_index"] == 2),
    "eq-float": (_and(_f("chunk_index", 2.0)), lambda p: p["chunk_index"] == 2),
    "ne": (_and(_f("modality", "text", FilterOperator.NE)), lambda p: p["modality"] != "text"),
    "gt": (_and(_f("chunk_index", 3, FilterOperator.GT)), lambda p: p["chunk_index"] > 3),
    "gte": (_and(_f("chunk_index", 3, FilterOperator.GTE)), lambda p: p["chunk_index"] >= 3),
    "lt": (_and(_f("chunk_index", 3, FilterOperator.LT)), lambda p: p["chunk_index"] < 3),
    "lte": (_and(_f("chunk_index", 3, FilterOperator.LTE)), lambda p: p["chunk_index"] <= 3),
    "in-list": (
        _and(_f("file_name", ["food.md", "one.png"], FilterOperator.IN)),
        lambda p: p["file_name"] in ("food.md", "one.png"),
    ),
    "in-csv": (
        _and(_f("file_name", "food.md,one.png", FilterOperator.IN)),
        lambda p: p["file_name"] in ("food.md", "one.png"),
    ),
    "nin": (
        _and(_f("file_name", ["food.md", "one.png"], FilterOperator.NIN)),
        lambda p: p["file_name"] not in ("food.md", "one.png"),
    ),
    "text-match": (_and(_f("file_name", "animals", FilterOperator.TEXT_MATCH)), lambda p: "animals" in p["file_name"]),
    "text-match-insensitive": (
        _and(_f("file_name", "animals", FilterOperator.TEXT_MATCH_INSENSITIVE)),
        lambda p: "animals" in p["file_name"],
    ),
    "is-empty-absent": (_and(_f("page", None, FilterOperator.IS_EMPTY)), lambda p: not p.get("page")),
    "is-empty-present": (_and(_f("folders", None, FilterOperator.IS_EMPTY)), lambda p: not p.get("folders")),
    "or": (
        _and(_f("modality", "image"), _f("chunk_index", 5), condition=FilterCondition.OR),
        lambda p: p["modality"] == "image" or p["chunk_index"] == 5,
    ),
    "not": (
        _and(_f("modality", "image"), _f("file_name", "food.md"), condition=FilterCondition.NOT),
        lambda p: not (p["modality"] == "image" or p["file_name"] == "food.md"),
    ),
    "nested": (
        _and(
            _and(_f("file_name", "food.md"), _f("file_name", "animals.txt"), condition=FilterCondition.OR),
            _and(_f("chunk_index", 1, FilterOperator.LTE), condition=FilterCondition.NOT),
            _and(),  # an empty group is skipped
        ),
        lambda p: p["file_name"] in ("food.md", "animals.txt") and not p["chunk_index"] <= 1,
    ),
}


@pytest.fixture(scope="module")
def read_pair(built, tmp_path_factory):
    """A read-only pair shared by the query tests (opened once)."""
    stock, edge = _open(built, tmp_path_factory.mktemp("read"))
    yield stock, edge
    edge.close()
    stock.client.close()


@pytest.fixture(scope="module")
def query_vectors(built, encoder):
    return {
        "text": encoder.embed_queries(["the fox sleeps under the tree"])[0].tolist(),
        "random": np.random.default_rng(3).normal(size=encoder.dim).tolist(),
    }


@pytest.mark.parametrize("case", FILTERS)
def test_every_supported_filter_operator_and_condition(built, read_pair, query_vectors, case):
    stock, edge = read_pair
    filters, admits = FILTERS[case]
    expected = _ids_where(built[1], admits)
    for vector in query_vectors.values():
        query = VectorStoreQuery(query_embedding=vector, similarity_top_k=len(built[1]), filters=filters)
        a, b = stock.query(query), edge.query(query)
        _same_result(a, b)
        assert set(b.ids) == expected
    _same_nodes(stock.get_nodes(filters=filters), edge.get_nodes(filters=filters))


@pytest.mark.parametrize("op", [FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.ALL])
def test_operators_the_stock_store_refuses_raise_the_same_error(read_pair, query_vectors, op):
    filters = _and(_f("folders", ["/"], op))
    for store in read_pair:
        with pytest.raises(NotImplementedError, match=f"Filter operator {op} is not supported"):
            store.query(VectorStoreQuery(query_embedding=query_vectors["text"], filters=filters))


def test_node_ids_and_doc_ids(built, read_pair, query_vectors):
    stock, edge = read_pair
    payloads = built[1]
    some = sorted(payloads)[:4]
    doc = next(iter(payloads.values()))["doc_id"]
    cases = {  # node_ids / doc_ids -> the ids it admits
        "none": ({}, set(payloads)),
        "empty-node-ids": ({"node_ids": []}, set(payloads)),  # [] is no filter (what the retriever sends)
        "node-ids": ({"node_ids": some}, set(some)),
        "doc-ids": ({"doc_ids": [doc]}, {k for k, p in payloads.items() if p["doc_id"] == doc}),
        "empty-doc-ids": ({"doc_ids": []}, set(payloads)),
        "both": ({"doc_ids": [doc], "node_ids": some}, {k for k in some if payloads[k]["doc_id"] == doc}),
    }
    for case, (kwargs, expected) in cases.items():
        query = VectorStoreQuery(query_embedding=query_vectors["random"], similarity_top_k=len(payloads), **kwargs)
        a, b = stock.query(query), edge.query(query)
        _same_result(a, b)
        assert set(b.ids) == expected, case


def test_top_k_order_and_scores_match_exact_cosine(built, read_pair, query_vectors):
    stock, edge = read_pair
    stored = points_of(built[0]["local"], vectors=True)
    q = np.asarray(query_vectors["random"])
    exact = sorted(stored, key=lambda pid: -float(stored[pid][1] @ q) / np.linalg.norm(q))[:5]
    query = VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5)
    a, b = stock.query(query), edge.query(query)
    _same_result(a, b)
    assert b.ids == exact


def test_query_modes_without_hybrid(read_pair, query_vectors):
    stock, edge = read_pair
    # a raw Qdrant filter (the stock store's qdrant_filters=) and search params
    from qdrant_client import models

    raw = models.Filter(must=[models.FieldCondition(key="modality", match=models.MatchValue(value="image"))])
    query = VectorStoreQuery(query_embedding=query_vectors["random"], similarity_top_k=5)
    kwargs = {"qdrant_filters": raw, "search_params": {"exact": True}}
    a, b = stock.query(query, **kwargs), edge.query(query, **kwargs)
    _same_result(a, b)
    assert len(b.ids) == 3 and {n.metadata["modality"] for n in b.nodes} == {"image"}
    # no query vector: the first points in id order (score 1.0), within the filters
    for filters in (None, FILTERS["or"][0]):
        query = VectorStoreQuery(query_embedding=None, similarity_top_k=5, filters=filters)
        _same_result(stock.query(query), edge.query(query))
    for mode in (VectorStoreQueryMode.MMR, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.DEFAULT):
        query = VectorStoreQuery(query_embedding=query_vectors["text"], similarity_top_k=4, mode=mode, query_str="fox")
        _same_result(stock.query(query), edge.query(query))
    hybrid = VectorStoreQuery(query_embedding=query_vectors["text"], mode=VectorStoreQueryMode.HYBRID, query_str="fox")
    for store in read_pair:
        with pytest.raises(ValueError, match="Hybrid search is not enabled"):
            store.query(hybrid)


def test_hybrid_and_sparse_with_our_bm25_side(built, tmp_path, query_vectors):
    stock, edge = _open(built, tmp_path, **HYBRID)
    try:
        for mode, text in [("hybrid", "flour butter sugar"), ("hybrid", "invoice refund"), ("sparse", "fox tree")]:
            for alpha in (None, 0.2, 0.8):
                query = VectorStoreQuery(
                    query_embedding=query_vectors["text"],
                    query_str=text,
                    mode=mode,
                    similarity_top_k=5,
                    sparse_top_k=len(built[1]),  # every match: a cut inside a tie would change the fusion
                    alpha=alpha,
                )
                a, b = stock.query(query), edge.query(query)
                _same_up_to_ties(a, b)
                assert len(b.ids) > 0
        # a hybrid-enabled store without query_str: the dense side alone, through query_batch_points
        dense = VectorStoreQuery(query_embedding=query_vectors["random"], similarity_top_k=4)
        _same_result(stock.query(dense), edge.query(dense))
    finally:
        edge.close()
        stock.client.close()


# ---------------------------------------------------------------------- get_nodes
def test_get_nodes(built, read_pair):
    stock, edge = read_pair
    payloads = built[1]
    some = sorted(payloads)[3:7]
    cases = [
        {},
        {"node_ids": []},
        {"node_ids": some},
        {"limit": 3},
        {"node_ids": some, "limit": 2},
        {"node_ids": some, "filters": _and(_f("modality", "text"))},
        # the stock store adds the ids to the filter's `should`: with OR filters, ids OR conditions
        {"node_ids": some, "filters": _and(_f("modality", "image"), _f("chunk_index", 7), condition="or")},
        {"node_ids": some, "filters": _and(_f("modality", "image"), condition=FilterCondition.NOT)},
    ]
    for kwargs in cases:
        a, b = stock.get_nodes(**kwargs), edge.get_nodes(**kwargs)
        _same_nodes(a, b)
    assert len(edge.get_nodes()) == len(payloads) and edge.get_nodes(node_ids=[]) == []
    assert {type(n) for n in edge.get_nodes()} == {TextNode, ImageNode}


# ---------------------------------------------------------------------- writes: delete_ref_doc, delete_nodes, clear, add
def _all_ids(store):
    return sorted(n.node_id for n in store.get_nodes())


@pytest.mark.parametrize(
    "call",
    [
        "delete_ref_doc",
        "delete_nodes-ids",
        "delete_nodes-empty",
        "delete_nodes-filters",
        "delete_nodes-both",
        "delete_nodes-or",
        "delete_nodes-nothing",
    ],
)
def test_deletes(built, pair, emb, call):
    stock, edge = pair
    payloads = built[1]
    doc = next(p["doc_id"] for p in payloads.values() if p["file_name"] == "animals.txt")
    some = sorted(payloads)[:5]
    image = _and(_f("modality", "image"))
    for store in (stock, edge):
        if call == "delete_ref_doc":
            VectorStoreIndex.from_vector_store(store, embed_model=emb).delete_ref_doc(doc)
        elif call == "delete_nodes-ids":
            store.delete_nodes(node_ids=some)
        elif call == "delete_nodes-empty":
            store.delete_nodes(node_ids=[])
        elif call == "delete_nodes-filters":
            store.delete_nodes(filters=image)
        elif call == "delete_nodes-both":
            store.delete_nodes(node_ids=some, filters=image)
        elif call == "delete_nodes-or":
            store.delete_nodes(
                node_ids=some, filters=_and(_f("chunk_index", 7), _f("modality", "image"), condition="or")
            )
        else:
            store.delete_nodes()  # the stock store's empty filter selects every point: it deletes them all
    assert _all_ids(edge) == _all_ids(stock)
    if call == "delete_ref_doc":
        assert set(_all_ids(edge)) == {k for k, p in payloads.items() if p["doc_id"] != doc}
    if call == "delete_nodes-nothing":
        assert _all_ids(edge) == []


def test_clear_on_the_physical_collection_and_through_the_alias(built, tmp_path):
    physical = next(iter(built[1].values()))["model_fingerprint"]
    stock, edge = _open(built, tmp_path, name=f"docs-e5v-{physical}")
    try:
        query = VectorStoreQuery(query_embedding=[0.0] * 64, similarity_top_k=1)
        for store in (stock, edge):
            store.clear()
            with pytest.raises(ValueError, match="not found"):
                store.query(query)
            with pytest.raises(ValueError, match="not found"):
                store.get_nodes()
            store.clear()  # clearing a missing collection is a no-op
    finally:
        edge.close()
        stock.client.close()
    # Deliberate difference: through the alias, stock local mode's delete_collection does not follow it and the
    # collection stays; ours deletes the collection behind the alias (and the alias).
    stock, edge = _open(built, tmp_path / "alias")
    try:
        stock.clear()
        edge.clear()
        assert len(stock.get_nodes()) == len(built[1])
        assert not edge.client.collection_exists("docs") and edge.client.get_collections().collections == []
    finally:
        edge.close()
        stock.client.close()


def test_missing_collection_raises_like_the_stock_store(built, tmp_path):
    stock, edge = _open(built, tmp_path, name="nope")
    try:
        for call in (
            lambda s: s.query(VectorStoreQuery(query_embedding=[0.0] * 64)),
            lambda s: s.get_nodes(),
            lambda s: s.delete("x"),
            lambda s: s.delete_nodes(node_ids=["x"]),
        ):
            for store in (stock, edge):
                with pytest.raises(ValueError, match="Collection nope not found"):
                    call(store)
    finally:
        edge.close()
        stock.client.close()


def test_add_to_the_cli_collection_and_to_a_new_one(built, tmp_path, encoder):
    stock, edge = _open(built, tmp_path, **HYBRID)
    fresh_stock, fresh_edge = (
        QdrantVectorStore(client=stock.client, collection_name="fresh"),
        QdrantEdgeVectorStore(collection_name="fresh", client=edge.client.edge),
    )
    try:
        texts = ["A heron waits by the pond.", "Invoices are due at the end of the month."]
        vectors = encoder.embed_texts(texts)
        for target in ((stock, edge), (fresh_stock, fresh_edge)):
            for store in target:
                nodes = [
                    TextNode(id_=f"00000000-0000-4000-8000-00000000000{i}", text=t, embedding=v.tolist())
                    for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
                ]
                assert store.add(nodes) == [n.node_id for n in nodes]
            _same_nodes(target[0].get_nodes(), target[1].get_nodes())
            added = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(len(texts))]
            stored = [
                {
                    str(r.id): (r.payload, r.vector)
                    for r in s.client.retrieve(s.collection_name, added, with_vectors=True)
                }
                for s in target
            ]
            assert stored[1].keys() == stored[0].keys() == set(added)
            for pid in added:  # the same payload and the same (unit) vectors, sparse ones included
                assert stored[1][pid][0] == stored[0][pid][0]
                a, b = stored[0][pid][1], stored[1][pid][1]
                a, b = (a, b) if isinstance(a, dict) else ({"": a}, {"": b})
                assert a.keys() == b.keys()
                for name in a:
                    if hasattr(a[name], "indices"):
                        assert b[name].indices == a[name].indices
                        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-6)
                    else:
                        np.testing.assert_allclose(b[name], a[name], atol=1e-6)
            for mode in ("default", "hybrid"):
                if mode == "hybrid" and target[0] is fresh_stock:
                    continue
                query = VectorStoreQuery(
                    query_embedding=vectors[0].tolist(), query_str="heron pond", mode=mode, similarity_top_k=3
                )
                a, b = target[0].query(query), target[1].query(query)
                _same_result(a, b)
                assert b.ids[0] == "00000000-0000-4000-8000-000000000000"
        # the stock store creates an unnamed dense vector: ours, the same
        assert fresh_edge.dense_vector_name == fresh_stock.dense_vector_name == ""
    finally:
        edge.close()
        stock.client.close()


# ---------------------------------------------------------------------- async variants
def test_async_variants(built, tmp_path, emb, query_vectors):
    """The stock store needs an ``AsyncQdrantClient`` for its async methods (local mode: on its own folder copy)."""
    stock = QdrantVectorStore(
        collection_name="docs", aclient=AsyncQdrantClient(path=_copy(built, tmp_path, "local")), **HYBRID
    )
    edge = QdrantEdgeVectorStore(path=_copy(built, tmp_path, "edge"), collection_name="docs", **HYBRID)
    payloads = built[1]
    doc = next(p["doc_id"] for p in payloads.values() if p["file_name"] == "food.md")
    some = sorted(payloads)[:3]

    async def run(store):
        out = {}
        index = VectorStoreIndex.from_vector_store(store, embed_model=emb)
        out["retrieve"] = await index.as_retriever(similarity_top_k=3).aretrieve("butter and sugar")
        response = await index.as_query_engine(llm=MockLLM(), similarity_top_k=3).aquery("butter and sugar")
        out["query_engine"] = (response.source_nodes, str(response))
        out["query"] = await store.aquery(
            VectorStoreQuery(query_embedding=query_vectors["random"], similarity_top_k=4, node_ids=[])
        )
        out["hybrid"] = await store.aquery(
            VectorStoreQuery(
                query_embedding=query_vectors["text"],
                query_str="invoice refund",
                mode="hybrid",
                similarity_top_k=4,
                sparse_top_k=len(payloads),
                alpha=0.3,
            )
        )
        out["get_nodes"] = await store.aget_nodes(node_ids=some)
        await index.adelete_ref_doc(doc)
        await store.adelete_nodes(node_ids=some[:1])
        await store.adelete_nodes(filters=_and(_f("file_name", "one.png")))
        node = TextNode(id_="00000000-0000-4000-8000-000000000099", text="a fox", embedding=query_vectors["text"])
        out["added"] = await store.async_add([node])
        out["left"] = sorted(n.node_id for n in await store.aget_nodes(filters=_and(_f("chunk_index", -1, ">"))))
        out["left_all"] = await store.aget_nodes()  # stock: Filter(should=[]) selects everything
        await store.aclear()
        return out

    try:
        a, b = asyncio.run(run(stock)), asyncio.run(run(edge))
    finally:
        edge.close()
        asyncio.run(stock._aclient.close())
    _hits_equal(a["retrieve"], b["retrieve"])
    assert len(b["retrieve"]) == 3
    _hits_equal(a["query_engine"][0], b["query_engine"][0])
    assert a["query_engine"][1] == b["query_engine"][1]
    _same_result(a["query"], b["query"])
    _same_up_to_ties(a["hybrid"], b["hybrid"])
    _same_nodes(a["get_nodes"], b["get_nodes"])
    assert a["added"] == b["added"] and a["left"] == b["left"]
    _same_nodes(a["left_all"], b["left_all"])
    removed = {k for k, p in payloads.items() if p["doc_id"] == doc or p["file_name"] == "one.png"} | {some[0]}
    assert set(b["left"]) == set(payloads) - removed  # chunk_index > -1: every CLI point, not the added node


# ---------------------------------------------------------------------- the stock client on an Edge folder (item 10)
def test_the_stock_local_mode_client_on_an_edge_folder_loses_nothing(built, tmp_path, caplog, encoder):
    import os

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import detect_engine, open_client

    folder = _copy(built, tmp_path, "edge")
    client = QdrantClient(path=folder)  # what a user of the stock store does with the folder the CLI made
    try:
        store = QdrantVectorStore(client=client, collection_name="docs")
        with pytest.raises(ValueError, match="Collection docs not found"):  # not silent: the README names the remedy
            store.query(VectorStoreQuery(query_embedding=[0.0] * encoder.dim, similarity_top_k=1))
        store.add([TextNode(text="written by the stock store", embedding=[1.0] * encoder.dim)])
    finally:
        client.close()
    assert os.path.isfile(os.path.join(folder, "meta.json"))  # local mode wrote its own metadata and a collection
    assert detect_engine(folder) == "edge"
    engine_client = open_client(StoreConfig(qdrant_path=folder))
    try:
        assert getattr(engine_client, "e5v_engine", None) == "edge"
    finally:
        engine_client.close()
    with caplog.at_level("WARNING", logger="llama_index.vector_stores.qdrant_edge.base"):
        edge = QdrantEdgeVectorStore(path=folder, collection_name="docs")
    try:
        assert "local-mode collections ['docs']" in caplog.text and "QdrantEdgeVectorStore" in caplog.text
        assert sorted(n.node_id for n in edge.get_nodes()) == sorted(built[1])  # the Edge collection is intact
    finally:
        edge.close()
