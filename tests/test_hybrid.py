"""Hybrid dense + BM25 search: `ingest --hybrid`, `search --hybrid` (prefetch + RRF), the stamp, reingest, LlamaIndex."""

from __future__ import annotations

import json
import os
import warnings

import pytest
from qdrant_client import QdrantClient, models

from e5v_qdrant.cli import main
from e5v_qdrant.config import IngestConfig, StoreConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.ingest import ingest
from e5v_qdrant.reingest import reingest
from e5v_qdrant.search import search
from e5v_qdrant.sparse import SPARSE_VECTOR_NAME, BM25Encoder, sparse_doc_fn, sparse_query_fn
from e5v_qdrant.store import QdrantStore
from e5v_qdrant.testing import draw_image

COMMON = ["--device", "cpu", "--dtype", "float32", "--chunk-size", "128", "--chunk-overlap", "4"]
CODES = {7: "QZ-7781-K", 31: "ZX44R9"}
TOPICS = ["pump", "valve", "boiler", "filter", "gasket", "sensor", "relay", "motor"]


def make_notes(root):
    """40 short maintenance notes; notes 7 and 31 each mention one rare part code."""
    root.mkdir(parents=True)
    for i in range(40):
        text = f"Note {i}. The {TOPICS[i % 8]} in hall {i % 5} was inspected; valve pressure was logged."
        if i in CODES:
            text += f" Ordered replacement part {CODES[i]} for it."
        (root / f"note{i:02d}.txt").write_text(text + "\n")
    return root


def cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_cli_hybrid_search_finds_the_rare_code_and_llamaindex_hybrid_too(tmp_path, replica_path, capsys, engine):
    """On both embedded engines through the CLI; then (local mode, which stock LlamaIndex reads) the stored sparse
    vectors and LlamaIndex's own hybrid retrieval over the CLI-built collection."""
    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.e5v import E5VEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    notes = make_notes(tmp_path / "notes")
    draw_image(64, 48, seed=1).save(notes / "pic.png")
    qd = tmp_path / "qd"
    ingest_args = ("ingest", notes, "--collection", "docs", "--qdrant-path", qd, "--model", replica_path, *COMMON)
    assert cli(*ingest_args, "--hybrid", "--embedded", engine) == 0
    capsys.readouterr()
    for i, code in CODES.items():
        assert (
            cli("search", code, "--collection", "docs", "--qdrant-path", qd, "--hybrid", "--top-k", "1", "--json") == 0
        )
        hits = json.loads(capsys.readouterr().out)
        assert [h["source"] for h in hits] == [str(notes / f"note{i:02d}.txt")]
    if engine != "local":
        return

    client = QdrantClient(path=str(qd))
    try:
        info = client.get_collection("docs")
        assert info.config.params.sparse_vectors[SPARSE_VECTOR_NAME].modifier.value == "idf"
        records, _ = client.scroll("docs", limit=100, with_vectors=True, with_payload=["modality", "_node_content"])
        assert len(records) == 41
        for r in records:  # text chunks carry exactly the document sparse vector of their text; images none
            if r.payload["modality"] == "image":
                assert SPARSE_VECTOR_NAME not in r.vector
            else:
                idx, val = sparse_doc_fn([json.loads(r.payload["_node_content"])["text"]])
                assert r.vector[SPARSE_VECTOR_NAME].indices == idx[0]
                assert r.vector[SPARSE_VECTOR_NAME].values == pytest.approx(val[0])

        vector_store = QdrantVectorStore(
            client=client,
            collection_name="docs",
            enable_hybrid=True,
            sparse_doc_fn=sparse_doc_fn,
            sparse_query_fn=sparse_query_fn,
        )
        embed = E5VEmbedding(model_name=str(replica_path), device="cpu", dtype="float32")
        index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed)
        for i, code in CODES.items():
            retriever = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=1, sparse_top_k=5)
            nodes = retriever.retrieve(code)
            assert [n.node.metadata["source"] for n in nodes] == [str(notes / f"note{i:02d}.txt")]
    finally:
        client.close()


def test_hybrid_errors_and_stamp_rules(tmp_path, encoder):
    notes = make_notes(tmp_path / "notes")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        ingest(IngestConfig(collection="plain", paths=[str(notes)], chunk_size=64, chunk_overlap=4), encoder, store)
        with pytest.raises(E5VConfigError, match="without --hybrid"):  # search --hybrid on a dense-only collection
            search(store, encoder, "plain", text="QZ-7781-K", hybrid=True)
        with pytest.raises(E5VConfigError, match="without --hybrid"):  # ingest --hybrid into it
            ingest(IngestConfig(collection="plain", paths=[str(notes)], hybrid=True), encoder, store)

        cfg = IngestConfig(collection="hyb", paths=[str(notes)], chunk_size=64, chunk_overlap=4, hybrid=True)
        ingest(cfg, encoder, store)
        physical = store.resolve("hyb")
        assert store.sparse_spec(physical) == BM25Encoder().spec()
        with pytest.raises(E5VConfigError, match="text-only"):
            search(store, encoder, "hyb", image=draw_image(64, 48, seed=1), hybrid=True)
        with pytest.raises(E5VConfigError, match=r"fusion score \(rrf or dbsf\)"):
            search(store, encoder, "hyb", text="QZ-7781-K", hybrid=True, score_threshold=0.5)
        # a query with no keyword at all (stopwords only) falls back to the dense search instead of failing
        assert len(search(store, encoder, "hyb", text="the of and", hybrid=True, top_k=3)) == 3

        # a later ingest WITHOUT --hybrid into the hybrid collection still writes sparse vectors (the stamp rules)
        (notes / "new.txt").write_text("Fresh note about part WQ-1234.\n")
        ingest(IngestConfig(collection="hyb", paths=[str(notes)], chunk_size=64, chunk_overlap=4), encoder, store)
        hits = search(store, encoder, "hyb", text="WQ-1234", hybrid=True, top_k=1)
        assert [h.source for h in hits] == [str(notes / "new.txt")]


def test_reingest_keeps_the_collection_hybrid(tmp_path, encoder, replica_path):
    from e5v_qdrant import E5VEncoder

    notes = make_notes(tmp_path / "notes")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        ingest(
            IngestConfig(collection="docs", paths=[str(notes)], chunk_size=64, chunk_overlap=4, hybrid=True),
            encoder,
            store,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = E5VEncoder(replica_path, prompts="e5v-cirr-target", device="cpu", dtype="float32", batch_size=4)
        report = reingest("docs", other, store)
        assert report.swapped and report.target_collection != report.source_collection
        assert store.resolve("docs") == report.target_collection
        assert store.sparse_spec(report.target_collection) == BM25Encoder().spec()
        for i, code in CODES.items():
            hits = search(store, other, "docs", text=code, hybrid=True, top_k=1)
            assert [h.source for h in hits] == [str(notes / f"note{i:02d}.txt")]


def test_dbsf_fusion_finds_codes_that_share_fragments(tmp_path, encoder):
    """Every note holds a code QZ-<n>-K (all share 'qz' and 'k'): distribution-based score fusion lets the one exact
    sparse hit win over dense hits that also match the shared fragments."""
    root = tmp_path / "parts"
    root.mkdir()
    for i in range(40):
        (root / f"part{i:02d}.txt").write_text(f"Part QZ-{1000 + 37 * i}-K: spare {TOPICS[i % 8]} for hall {i % 5}.\n")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        ingest(
            IngestConfig(collection="parts", paths=[str(root)], chunk_size=64, chunk_overlap=4, hybrid=True),
            encoder,
            store,
        )
        for i in (0, 9, 17, 28, 39):
            hits = search(store, encoder, "parts", text=f"QZ-{1000 + 37 * i}-K", hybrid=True, fusion="dbsf", top_k=1)
            assert [h.source for h in hits] == [str(root / f"part{i:02d}.txt")]
        with pytest.raises(E5VConfigError, match="fusion"):
            search(store, encoder, "parts", text="QZ", hybrid=True, fusion="max")


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server at QDRANT_URL")
def test_server_hybrid_collection_has_filter_indexes_and_finds_codes(tmp_path, encoder):  # pragma: no cover
    """The same code on a server: sparse vector with IDF, payload indexes for the filtered fields, hybrid + filters."""
    import uuid

    notes = make_notes(tmp_path / "notes")
    name = f"e5v-hybrid-{uuid.uuid4().hex[:8]}"
    store = QdrantStore(StoreConfig(qdrant_url=os.environ["QDRANT_URL"]))
    try:
        ingest(
            IngestConfig(collection=name, paths=[str(notes)], chunk_size=64, chunk_overlap=4, hybrid=True),
            encoder,
            store,
        )
        physical = store.resolve(name)
        info = store.client.get_collection(physical)
        assert info.config.params.sparse_vectors[SPARSE_VECTOR_NAME].modifier == models.Modifier.IDF
        assert {"modality", "source", "folders", "page"} <= set(info.payload_schema)
        for i, code in CODES.items():
            for fusion in ("rrf", "dbsf"):
                hits = search(store, encoder, name, text=code, hybrid=True, fusion=fusion, top_k=1, under=notes)
                assert [h.source for h in hits] == [str(notes / f"note{i:02d}.txt")]
        assert search(store, encoder, name, text=CODES[7], hybrid=True, where={"no_such_field": "x"}) == []
    finally:
        for physical_name in {store.resolve(name)} - {None}:
            store.client.delete_collection(physical_name)
        store.close()


def _points(store, collection):
    """id -> (payload, dense vector, {sparse index: value} or None) of every point."""
    out = {}
    for r in store.scroll(collection, with_vectors=True):
        sparse = r.vector.get(SPARSE_VECTOR_NAME)
        out[str(r.id)] = (
            r.payload,
            list(r.vector["text-dense"]),
            dict(zip(sparse.indices, sparse.values, strict=True)) if sparse is not None else None,
        )
    return out


def test_reingest_sparse_encoder_switches_only_the_keyword_side_without_loading_the_model(
    tmp_path, replica_path, capsys, monkeypatch
):
    """`reingest --sparse-encoder qdrant-bm25` on an e5v-bm25 hybrid collection: the model is never constructed, the
    dense vectors are the old ones bit for bit, the keyword vectors are what Qdrant's own Bm25 (qdrant_edge, called
    here directly) gives each chunk text, and the result equals a clean `ingest --sparse-encoder qdrant-bm25`."""
    import qdrant_edge

    from e5v_qdrant import encoder as encoder_module

    notes = make_notes(tmp_path / "notes")
    draw_image(64, 48, seed=1).save(notes / "pic.png")
    qd, clean = tmp_path / "qd", tmp_path / "clean"
    args = (notes, "--collection", "docs", "--model", replica_path, *COMMON)
    assert cli("ingest", *args, "--qdrant-path", qd, "--hybrid") == 0
    assert cli("ingest", *args, "--qdrant-path", clean, "--sparse-encoder", "qdrant-bm25") == 0
    # the ingest's "--sparse-encoder" on a collection of the other encoder is refused, naming the switch
    assert cli("ingest", *args, "--qdrant-path", qd, "--sparse-encoder", "qdrant-bm25") == 2
    assert "reingest --collection docs --sparse-encoder qdrant-bm25" in capsys.readouterr().err
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        before = _points(store, store.resolve("docs"))

    def no_model(*a, **k):
        raise AssertionError("the model was loaded for a keyword-only switch")

    monkeypatch.setattr(encoder_module.E5VEncoder, "__init__", no_model)
    assert (
        cli("reingest", "--collection", "docs", "--qdrant-path", qd, "--sparse-encoder", "qdrant-bm25", "--json") == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["swapped"] and report["sparse_only"] and report["embedded"] == len(before) == 41
    assert report["target_collection"].endswith("-qdrant-bm25")
    monkeypatch.undo()

    bm25 = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=1.2, b=0.75, avg_len=256.0, language="english"))
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store, QdrantStore(StoreConfig(qdrant_path=str(clean))) as c:
        after = _points(store, store.resolve("docs"))
        assert store.sparse_spec(store.resolve("docs"))["name"] == "qdrant-bm25"
        assert after.keys() == before.keys()
        for pid, (payload, dense, sparse) in after.items():
            assert payload == before[pid][0] and dense == before[pid][1]  # copied, not recomputed
            if payload["modality"] == "image":
                assert sparse is None
            else:
                v = bm25.embed_document(json.loads(payload["_node_content"])["text"])
                assert sparse == pytest.approx(dict(zip(v.indices, v.values, strict=True)))
        reference = _points(c, c.resolve("docs"))
        assert reference.keys() == after.keys()
        for pid, (payload, dense, sparse) in reference.items():
            assert (
                payload == after[pid][0] and dense == pytest.approx(after[pid][1], abs=1e-6) and sparse == after[pid][2]
            )
    # hybrid search now encodes queries with the collection's (new) encoder and still finds the codes
    for i, code in CODES.items():
        assert (
            cli("search", code, "--collection", "docs", "--qdrant-path", qd, "--hybrid", "--top-k", "1", "--json") == 0
        )
        assert [h["source"] for h in json.loads(capsys.readouterr().out)] == [str(notes / f"note{i:02d}.txt")]
    # switching back re-uses nothing stale and is again keyword-only; asking for what it has is already current
    assert cli("reingest", "--collection", "docs", "--qdrant-path", qd, "--sparse-encoder", "e5v-bm25", "--json") == 0
    back = json.loads(capsys.readouterr().out)
    assert back["swapped"] and back["sparse_only"] and back["target_collection"] == report["source_collection"]
    assert cli("reingest", "--collection", "docs", "--qdrant-path", qd, "--sparse-encoder", "e5v-bm25", "--json") == 0
    assert json.loads(capsys.readouterr().out)["already_current"]


def test_reingest_sparse_encoder_makes_a_dense_collection_hybrid(tmp_path, encoder):
    notes = make_notes(tmp_path / "notes")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        ingest(IngestConfig(collection="docs", paths=[str(notes)], chunk_size=64, chunk_overlap=4), encoder, store)
        with pytest.raises(E5VConfigError, match="reingest --collection docs --sparse-encoder e5v-bm25"):
            search(store, encoder, "docs", text="QZ-7781-K", hybrid=True)  # the refusal names the remedy below
        report = reingest("docs", encoder.config, store, sparse_encoder="e5v-bm25")
        assert (
            report.swapped and report.sparse_only and store.sparse_spec(store.resolve("docs")) == BM25Encoder().spec()
        )
        for i, code in CODES.items():
            hits = search(store, encoder, "docs", text=code, hybrid=True, top_k=1)
            assert [h.source for h in hits] == [str(notes / f"note{i:02d}.txt")]
