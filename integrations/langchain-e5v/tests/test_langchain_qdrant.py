"""Retrieval through ``langchain-qdrant``'s ``QdrantVectorStore`` (in memory) equals brute force over encoder vectors.

The reference ranking is computed with numpy from vectors of an ``E5VEncoder`` loaded directly; the store must return
the same documents, texts and images mixed, in the same order, with the same cosine scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from langchain_e5v import E5VEmbeddings, add_images
from langchain_qdrant import QdrantVectorStore

TEXTS = ["a red house by the sea", "quarterly revenue grew 4%", "a dog runs on the beach", "tax forms for 2024"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from e5v_qdrant.testing import draw_image

    folder = tmp_path_factory.mktemp("qdrant_images")
    paths = []
    for seed in range(3):
        path = folder / f"img{seed}.png"
        draw_image(36 + 8 * seed, 40, seed=10 + seed).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def store(replica_path, images):
    embeddings = E5VEmbeddings(model=str(replica_path), device="cpu", dtype="float32", batch_size=2)
    store = QdrantVectorStore.from_texts(
        TEXTS, embeddings, metadatas=[{"kind": "text"} for _ in TEXTS], location=":memory:", collection_name="mixed"
    )
    add_images(store, images, [{"kind": "image"} for _ in images])
    return store


def _brute_force(reference, query_vector, images):
    contents = TEXTS + images
    matrix = np.vstack([reference.embed_texts(TEXTS), reference.embed_images(images)])
    scores = matrix @ np.asarray(query_vector)
    order = np.argsort(-scores)
    return [contents[i] for i in order], scores[order]


@pytest.mark.parametrize("query", ["a red house", "revenue"])
def test_text_query_ranks_texts_and_images_like_brute_force(store, reference, images, query):
    expected, scores = _brute_force(reference, reference.embed_queries([query])[0], images)
    found = store.similarity_search_with_score(query, k=len(expected))
    assert [doc.page_content for doc, _ in found] == expected
    np.testing.assert_allclose([score for _, score in found], scores, atol=1e-4)
    assert {doc.metadata["kind"] for doc, _ in found} == {"text", "image"}  # image documents found by a text query


def test_image_query_finds_itself_first_then_ranks_like_brute_force(store, reference, images):
    vector = store.embeddings.embed_image(images[1:2])[0]
    expected, scores = _brute_force(reference, reference.embed_images(images[1:2])[0], images)
    found = store.similarity_search_with_score_by_vector(vector, k=len(expected))
    assert found[0][0].page_content == images[1] and found[0][1] == pytest.approx(1.0, abs=1e-4)
    assert [doc.page_content for doc, _ in found] == expected
    np.testing.assert_allclose([score for _, score in found], scores, atol=1e-4)


def test_composed_query_ranks_like_brute_force(store, reference, images):
    vector = store.embeddings.embed_composed(images[:1], ["make it night"])[0]
    expected, _ = _brute_force(reference, reference.embed_composed(images[:1], ["make it night"])[0], images)
    found = store.similarity_search_by_vector(vector, k=len(expected))
    assert [doc.page_content for doc in found] == expected


def test_add_images_refuses_mismatched_lengths_and_other_embeddings(store, images):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from e5v_qdrant.errors import E5VConfigError, E5VInputError

    before = store.client.count(store.collection_name).count
    with pytest.raises(E5VInputError, match="one per image"):
        add_images(store, images, [{}])
    assert store.client.count(store.collection_name).count == before  # nothing written
    fake = QdrantVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=8), location=":memory:")
    with pytest.raises(E5VConfigError, match="E5VEmbeddings"):
        add_images(fake, images)
