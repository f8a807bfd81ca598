"""Retrieval through ``qdrant-haystack`` (QdrantDocumentStore + QdrantEmbeddingRetriever, embedded mode) and pipelines
that survive ``Pipeline.dumps()`` -> ``Pipeline.loads()``.

The reference ranking is computed with numpy from vectors of an ``E5VEncoder`` loaded directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner
from haystack.components.writers import DocumentWriter
from haystack_integrations.components.embedders.e5v import (
    E5VDocumentEmbedder,
    E5VDocumentImageEmbedder,
    E5VTextEmbedder,
)
from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

TEXTS = ["a red house by the sea", "quarterly revenue grew 4%", "a dog runs on the beach", "tax forms for 2024"]
IMAGES = [{"file_path": "img0.png"}, {"file_path": "img1.png"}, {"file_path": "doc.pdf", "page_number": 2}]


@pytest.fixture(scope="module")
def options(replica_path):
    return {"model": str(replica_path), "device": "cpu", "dtype": "float32", "batch_size": 2}


def _documents():
    texts = [Document(id=f"text{i}", content=text, meta={"kind": "text"}) for i, text in enumerate(TEXTS)]
    images = [Document(id=f"image{i}", meta={**meta, "kind": "image"}) for i, meta in enumerate(IMAGES)]
    return texts, images


def _indexing(options, files, store=None) -> Pipeline:
    pipe = Pipeline()
    pipe.add_component("texts", E5VDocumentEmbedder(**options, progress_bar=False))
    pipe.add_component("images", E5VDocumentImageEmbedder(**options, root_path=str(files), progress_bar=False))
    if store is not None:
        pipe.add_component("joiner", DocumentJoiner())
        pipe.add_component("writer", DocumentWriter(document_store=store))
        pipe.connect("texts.documents", "joiner.documents")
        pipe.connect("images.documents", "joiner.documents")
        pipe.connect("joiner.documents", "writer.documents")
    return pipe


def _querying(options, store) -> Pipeline:
    pipe = Pipeline()
    pipe.add_component("query", E5VTextEmbedder(**options))
    pipe.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=len(TEXTS) + len(IMAGES)))
    pipe.connect("query.embedding", "retriever.query_embedding")
    return pipe


def _brute_force(reference, files, query_vector):
    import pypdfium2

    pdf = pypdfium2.PdfDocument(files / "doc.pdf")
    page = pdf[1].render(scale=150 / 72).to_pil().convert("RGB")  # the image embedder's default pdf_dpi
    pdf.close()
    matrix = np.vstack(
        [reference.embed_texts(TEXTS), reference.embed_images([files / "img0.png", files / "img1.png", page])]
    )
    ids = [f"text{i}" for i in range(len(TEXTS))] + [f"image{i}" for i in range(len(IMAGES))]
    scores = matrix @ np.asarray(query_vector)
    order = np.argsort(-scores)
    return [ids[i] for i in order], scores[order]


def _open(path, recreate: bool) -> QdrantDocumentStore:
    return QdrantDocumentStore(
        path=str(path), embedding_dim=64, similarity="cosine", recreate_index=recreate, progress_bar=False
    )


@pytest.fixture(scope="module")
def store(options, files, tmp_path_factory):
    """An embedded (local-folder) store indexed by the E5-V indexing pipeline, reopened without ``recreate_index``."""
    path = tmp_path_factory.mktemp("qdrant") / "store"
    writer_store = _open(path, recreate=True)
    texts, images = _documents()
    _indexing(options, files, writer_store).run({"texts": {"documents": texts}, "images": {"documents": images}})
    writer_store.close()  # one client per folder in embedded mode
    store = _open(path, recreate=False)
    yield store
    store.close()


@pytest.mark.parametrize("query", ["a red house", "revenue"])
def test_text_query_ranks_texts_images_and_pdf_pages_like_brute_force(store, options, reference, files, query):
    found = _querying(options, store).run({"query": {"text": query}})["retriever"]["documents"]
    expected, scores = _brute_force(reference, files, reference.embed_queries([query])[0])
    assert [doc.id for doc in found] == expected
    np.testing.assert_allclose([doc.score for doc in found], scores, atol=1e-4)
    assert {doc.meta["kind"] for doc in found} == {"text", "image"}  # image documents found by a text query


def test_image_query_finds_itself_then_ranks_like_brute_force(store, reference, files):
    vector = reference.embed_images([files / "img1.png"])[0]
    found = QdrantEmbeddingRetriever(document_store=store, top_k=7).run(query_embedding=vector.tolist())["documents"]
    expected, scores = _brute_force(reference, files, vector)
    assert found[0].id == "image1" and found[0].score == pytest.approx(1.0, abs=1e-4)
    assert [doc.id for doc in found] == expected


def test_query_pipeline_survives_dumps_and_loads(store, options):
    original = _querying(options, store)
    before = original.run({"query": {"text": "a dog on the beach"}})["retriever"]["documents"]
    yaml_text = original.dumps()
    assert "E5VTextEmbedder" in yaml_text and str(options["model"]) in yaml_text
    store.close()  # embedded mode allows one client per folder: the loaded pipeline opens its own (store reopens lazily)
    loaded = Pipeline.loads(yaml_text)
    after = loaded.run({"query": {"text": "a dog on the beach"}})["retriever"]["documents"]
    assert [doc.id for doc in after] == [doc.id for doc in before]
    np.testing.assert_allclose([doc.score for doc in after], [doc.score for doc in before], atol=1e-6)
    assert loaded.get_component("query").to_dict() == original.get_component("query").to_dict()
    loaded_store = loaded.get_component("retriever").to_dict()["init_parameters"]["document_store"]
    assert loaded_store["init_parameters"]["path"] == store.to_dict()["init_parameters"]["path"]


def test_indexing_pipeline_survives_dumps_and_loads(options, files):
    texts, images = _documents()
    inputs = {"texts": {"documents": texts}, "images": {"documents": images}}
    original = _indexing(options, files)
    loaded = Pipeline.loads(original.dumps())
    before, after = original.run(inputs), loaded.run(inputs)
    for name in ("texts", "images"):
        assert [doc.id for doc in after[name]["documents"]] == [doc.id for doc in before[name]["documents"]]
        np.testing.assert_allclose(
            [doc.embedding for doc in after[name]["documents"]], [doc.embedding for doc in before[name]["documents"]]
        )
