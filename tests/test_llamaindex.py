"""E5VEmbedding (LlamaIndex adapter): conformance with E5VEncoder, node routing, Qdrant pipelines and indexes.

Reference vectors come from the session ``encoder`` fixture called directly; the adapter under test only wraps it.
Stored vectors are read back from embedded Qdrant (local mode) with ``with_vectors=True``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, ImageDocument, ImageNode, MetadataMode, TextNode
from llama_index.core.vector_stores import VectorStoreQuery
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.embeddings.e5v import E5VEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from e5v_qdrant import E5VConfigError, E5VEncoder, E5VImageError
from e5v_qdrant.testing import draw_image

TEXTS = ["A red house by the lake.", "Quarterly revenue grew four percent.", "", "Ein Hund läuft am Strand."]


def _close(a, b, min_cos: float = 0.9999) -> bool:
    """Row-wise: same shape and cosine >= min_cos (vectors are unit length, so this is also near-equality)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return bool(np.all(cos >= min_cos)) and np.allclose(a, b, atol=1e-4)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("li_images")
    paths = []
    for i, (w, h) in enumerate([(48, 32), (32, 48), (40, 40)]):
        path = folder / f"img{i}.png"
        draw_image(w, h, seed=10 + i).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def emb(encoder) -> E5VEmbedding:
    return E5VEmbedding(encoder=encoder, embed_batch_size=8)


@pytest.fixture
def count_calls(monkeypatch, encoder):
    """Wrap the shared encoder's embed_* methods to count calls and record the calling thread."""
    calls: list[tuple[str, int, int]] = []

    for name in ("embed_texts", "embed_queries", "embed_images", "embed_composed"):
        original = getattr(encoder, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, len(args[0]), threading.get_ident()))
            return _original(*args, **kwargs)

        monkeypatch.setattr(encoder, name, spy)
    return calls


# ---------------------------------------------------------------------- 1. conformance with E5VEncoder
def test_text_and_query_paths_match_encoder(emb, encoder):
    expected = encoder.embed_texts(TEXTS)
    assert _close([emb.get_text_embedding(t) for t in TEXTS], expected)
    assert _close(emb.get_text_embedding_batch(TEXTS), expected)
    assert _close(emb.get_query_embedding(TEXTS[0]), encoder.embed_queries(TEXTS[:1])[0])
    assert _close(emb.get_query_embedding_batch(TEXTS), encoder.embed_queries(TEXTS))

    async def run():
        singles = await asyncio.gather(*(emb.aget_text_embedding(t) for t in TEXTS))
        batch = await emb.aget_text_embedding_batch(TEXTS)
        query = await emb.aget_query_embedding(TEXTS[1])
        return singles, batch, query

    singles, batch, query = asyncio.run(run())
    assert _close(singles, expected)
    assert _close(batch, expected)
    assert _close(query, encoder.embed_queries(TEXTS[1:2])[0])


def test_image_and_composed_paths_match_encoder(emb, encoder, image_paths):
    expected = encoder.embed_images(image_paths)
    assert _close([emb.get_image_embedding(p) for p in image_paths], expected)
    assert _close(emb.get_image_embedding_batch(image_paths), expected)

    async def run():
        singles = await asyncio.gather(*(emb.aget_image_embedding(p) for p in image_paths))
        batch = await emb.aget_image_embedding_batch(image_paths)
        composed = await emb.aget_composed_embedding(image_paths[0], "make it blue")
        return singles, batch, composed

    singles, batch, composed = asyncio.run(run())
    assert _close(singles, expected)
    assert _close(batch, expected)
    reference = encoder.embed_composed(image_paths[:1], ["make it blue"])[0]
    assert _close(composed, reference)
    assert _close(emb.get_composed_embedding(image_paths[0], "make it blue"), reference)
    assert _close(
        emb.get_composed_embeddings(image_paths[:2], ["a", "b"]), encoder.embed_composed(image_paths[:2], ["a", "b"])
    )
    # A composed query is neither the plain image nor the plain text embedding.
    assert not _close(composed, expected[0], min_cos=0.999)


def test_query_prompt_changes_only_queries(replica_path):
    enc = E5VEncoder(
        replica_path, device="cpu", dtype="float32", query_prompt="Query: {text}\nSummary above sentence in one word: "
    )
    emb = E5VEmbedding(encoder=enc)
    assert emb.query_prompt == enc.config.query_prompt
    assert _close(emb.get_query_embedding("a dog"), enc.embed_queries(["a dog"])[0])
    assert _close(emb.get_text_embedding("a dog"), enc.embed_texts(["a dog"])[0])
    assert not _close(emb.get_query_embedding("a dog"), emb.get_text_embedding("a dog"), min_cos=0.999)


def test_lazy_loading_from_fields_matches_shared_encoder(replica_path, encoder, image_paths):
    emb = E5VEmbedding(model_name=str(replica_path), device="cpu", dtype="float32")
    assert emb._encoder is None  # nothing loaded until the first embedding
    assert _close(emb.get_text_embedding(TEXTS[0]), encoder.embed_texts(TEXTS[:1])[0])
    assert _close(emb.get_image_embedding(image_paths[0]), encoder.embed_images(image_paths[:1])[0])
    assert emb.encoder is not encoder and emb.encoder.config.model == str(replica_path)


def test_a_batch_is_one_encoder_call(emb, count_calls, image_paths):
    emb.get_text_embedding_batch(TEXTS)
    emb.get_image_embedding_batch(image_paths)
    asyncio.run(emb.aget_text_embedding_batch(TEXTS))
    assert [(name, n) for name, n, _ in count_calls] == [
        ("embed_texts", len(TEXTS)),
        ("embed_images", len(image_paths)),
        ("embed_texts", len(TEXTS)),
    ]
    count_calls.clear()
    small = E5VEmbedding(encoder=emb.encoder, embed_batch_size=2)
    small.get_text_embedding_batch(TEXTS)  # LlamaIndex splits by embed_batch_size; each chunk is one call
    assert [n for _, n, _ in count_calls] == [2, 2]


def test_async_runs_the_model_off_the_event_loop_thread(emb, count_calls, image_paths):
    async def run():
        loop_thread = threading.get_ident()
        await emb.aget_image_embedding(image_paths[0])
        await emb.aget_query_embedding("q")
        await emb.aget_text_embedding_batch(["a", "b"])
        return loop_thread

    loop_thread = asyncio.run(run())
    assert len(count_calls) == 3
    assert all(thread != loop_thread for _, _, thread in count_calls)


def test_every_image_input_type_gives_the_same_vector(emb, encoder, image_paths):
    path = image_paths[1]
    raw = Path(path).read_bytes()
    expected = encoder.embed_images([path])[0]
    moved = io.BytesIO(raw)
    moved.seek(len(raw) // 2)  # LlamaIndex may hand over a BytesIO that was already read: it must be rewound
    from PIL import Image

    for source in (path, Path(path), moved, raw, Image.open(path)):
        assert _close(emb.get_image_embedding(source), expected), type(source)
    with pytest.raises(E5VImageError, match="URL"):
        emb.get_image_embedding("https://example.com/cat.png")
    with pytest.raises(E5VImageError, match="no such file"):
        emb.get_image_embedding(str(Path(path).with_name("missing.png")))


# ---------------------------------------------------------------------- __call__ / acall (IngestionPipeline)
def _nodes(image_paths):
    b64 = base64.b64encode(Path(image_paths[2]).read_bytes()).decode()
    return [
        TextNode(text="A red house by the lake.", metadata={"source": "notes.txt"}),
        ImageNode(image_path=image_paths[0], metadata={"file_name": "img0.png"}),
        ImageNode(image=b64, text="a caption that must not be embedded"),
        ImageDocument(image_path=image_paths[1]),
        Document(text="Quarterly revenue grew."),
        TextNode(text="already embedded", embedding=[0.5] * 64),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_call_routes_image_nodes_to_the_image_path(emb, encoder, image_paths, count_calls, mode):
    nodes = _nodes(image_paths)
    out = emb(nodes) if mode == "sync" else asyncio.run(emb.acall(nodes))
    assert [n.node_id for n in out] == [n.node_id for n in nodes]
    assert all(o is n for i, (o, n) in enumerate(zip(out, nodes, strict=True)) if i != 3)  # embedded in place
    # The ImageDocument comes back as the equivalent ImageNode (what vector stores and the multimodal index read).
    doc, converted = nodes[3], out[3]
    assert isinstance(converted, ImageNode) and converted.image_path == image_paths[1]
    assert converted.ref_doc_id == doc.node_id and converted.embedding == doc.embedding
    text_ref = encoder.embed_texts([nodes[0].get_content(MetadataMode.EMBED), nodes[4].get_content(MetadataMode.EMBED)])
    image_ref = encoder.embed_images([image_paths[0], image_paths[2], image_paths[1]])
    assert _close([nodes[0].embedding, nodes[4].embedding], text_ref)
    assert _close([nodes[1].embedding, nodes[2].embedding, nodes[3].embedding], image_ref)
    # Not what BaseEmbedding.__call__ would store for an image node: the embedding of its metadata / text string.
    meta_text = encoder.embed_texts([nodes[1].get_content(MetadataMode.EMBED)])[0]
    assert not _close(nodes[1].embedding, meta_text, min_cos=0.99)
    assert nodes[5].embedding == [0.5] * 64  # left alone
    # One text batch and one image batch, nothing else (the 3 reference calls come after).
    assert [(name, n) for name, n, _ in count_calls[:2]] == [("embed_texts", 2), ("embed_images", 3)]


def test_image_documents_become_image_nodes_with_their_image(emb, encoder, image_paths):
    b64 = base64.b64encode(Path(image_paths[2]).read_bytes()).decode()
    docs = [
        ImageDocument(image=b64, metadata={"file_name": "img2.png"}, excluded_embed_metadata_keys=["file_name"]),
        ImageDocument(image_path=image_paths[0], text="a caption"),
    ]
    out = emb(docs)
    assert [type(n) for n in out] == [ImageNode, ImageNode]
    assert base64.b64decode(out[0].image) == Path(image_paths[2]).read_bytes()
    assert out[0].metadata == {"file_name": "img2.png"} and out[0].excluded_embed_metadata_keys == ["file_name"]
    assert out[1].image_path == image_paths[0] and out[1].text == "a caption"
    assert _close([n.embedding for n in out], encoder.embed_images([image_paths[2], image_paths[0]]))
    # Already embedded documents are left alone entirely.
    done = ImageDocument(image_path=image_paths[0], embedding=[0.25] * 64)
    assert emb([done])[0] is done and done.embedding == [0.25] * 64


def test_call_refuses_url_only_and_empty_image_nodes(emb):
    with pytest.raises(E5VImageError, match="not fetched"):
        emb([ImageNode(image_url="https://example.com/a.png")])
    with pytest.raises(E5VImageError, match="without image"):
        emb([ImageNode(text="no picture")])


# ---------------------------------------------------------------------- fields, serialisation, cache keys
def test_vector_changing_options_are_fields(replica_path, tmp_path):
    base = E5VEmbedding(model_name=str(replica_path), device="cpu")
    variants = [
        E5VEmbedding(model_name=str(replica_path), device="cpu", revision="v2"),
        E5VEmbedding(model_name=str(replica_path), device="cpu", dtype="bfloat16"),
        E5VEmbedding(model_name=str(replica_path), device="cpu", prompt_preset="e5v-typofix"),
        E5VEmbedding(model_name=str(replica_path), device="cpu", query_prompt="Q: {text}\nOne word: "),
        E5VEmbedding(model_name=str(replica_path), device="cpu", max_text_tokens=32),
        E5VEmbedding(model_name=str(replica_path), device="cpu", adapter=str(tmp_path)),
        E5VEmbedding(model_name=str(tmp_path), device="cpu"),
    ]
    nodes = [TextNode(text="x")]
    hashes = {get_transformation_hash(nodes, e) for e in [base, *variants]}
    assert len(hashes) == len(variants) + 1
    clone = E5VEmbedding.from_dict(base.to_dict())
    assert clone.to_dict() == base.to_dict() and clone._encoder is None
    assert base.to_dict()["class_name"] == "E5VEmbedding"


def test_pickles_without_the_model(encoder):
    import pickle

    emb = E5VEmbedding(encoder=encoder)
    clone = pickle.loads(pickle.dumps(emb))
    assert clone.to_dict() == emb.to_dict() and clone._encoder is None and emb._encoder is encoder
    assert _close(clone.get_text_embedding("pickled"), encoder.embed_texts(["pickled"])[0])


def test_encoder_mirroring_and_validation(encoder, replica_path):
    emb = E5VEmbedding(encoder=encoder)
    assert (emb.model_name, emb.dtype, emb.device, emb.prompt_preset) == (encoder.config.model, "float32", "cpu", "e5v")
    assert emb.embed_batch_size == encoder.config.batch_size
    assert E5VEmbedding(encoder=encoder, dtype="float32").encoder is encoder
    with pytest.raises(E5VConfigError, match="contradicts"):
        E5VEmbedding(encoder=encoder, prompt_preset="e5v-typofix")
    with pytest.raises(E5VConfigError, match="unknown prompt preset"):
        E5VEmbedding(model_name=str(replica_path), prompt_preset="nope")
    with pytest.raises(E5VConfigError, match="adapter"):
        E5VEmbedding(model_name=str(replica_path), adapter="/no/such/adapter")
    with pytest.raises(E5VConfigError, match="encoder_kwargs"):
        E5VEmbedding(model_name=str(replica_path), encoder_kwargs={"prompts": "e5v"})


# ---------------------------------------------------------------------- Qdrant: one collection, both modalities
@pytest.fixture(scope="module", params=["splitter", "embedding-only"])
def mixed_store(request, encoder, image_paths, tmp_path_factory):
    """IngestionPipeline([SentenceSplitter,] E5VEmbedding) over text + image documents into one Qdrant collection."""
    b64 = base64.b64encode(Path(image_paths[2]).read_bytes()).decode()
    docs = [
        Document(text="A red house by the lake."),
        Document(text="Quarterly revenue grew four percent."),
        ImageDocument(image_path=image_paths[0], metadata={"file_name": "img0.png"}),
        ImageDocument(image_path=image_paths[1]),
        ImageDocument(image=b64, metadata={"file_name": "img2.png"}),
    ]
    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant_mixed")))
    store = QdrantVectorStore(client=client, collection_name="mixed")
    emb = E5VEmbedding(encoder=encoder)
    # The pipeline's cache keys image documents by their (empty) text: disabled, see README "LlamaIndex".
    steps = [SentenceSplitter(), emb] if request.param == "splitter" else [emb]
    pipeline = IngestionPipeline(transformations=steps, vector_store=store, disable_cache=True)
    pipeline.run(documents=docs)
    points, _ = client.scroll("mixed", with_vectors=True, with_payload=True, limit=100)
    yield {"client": client, "store": store, "emb": emb, "points": points}
    client.close()


def _image_bytes_of(node) -> bytes:
    return Path(node.image_path).read_bytes() if node.image_path else base64.b64decode(node.image)


def test_pipeline_stores_image_vectors_for_image_documents(mixed_store, encoder, image_paths):
    emb, points = mixed_store["emb"], mixed_store["points"]
    nodes = [(metadata_dict_to_node(p.payload), np.asarray(p.vector)) for p in points]
    images = [(n, v) for n, v in nodes if isinstance(n, ImageNode)]
    texts = [(n, v) for n, v in nodes if not isinstance(n, ImageNode)]
    assert len(images) == 3 and len(texts) == 2
    for node, vector in images:
        data = _image_bytes_of(node)
        assert _close(vector, emb.get_image_embedding(io.BytesIO(data)))
        assert _close(vector, encoder.embed_images([data])[0])
        assert not _close(vector, encoder.embed_texts([node.get_content(MetadataMode.EMBED)])[0], min_cos=0.99)
    assert {n.image_path for n, _ in images} == {image_paths[0], image_paths[1], None}
    for node, vector in texts:
        assert _close(vector, encoder.embed_texts([node.get_content(MetadataMode.EMBED)])[0])


def test_vector_store_index_text_image_and_composed_retrieval(mixed_store, encoder, image_paths):
    emb, points = mixed_store["emb"], mixed_store["points"]
    index = VectorStoreIndex.from_vector_store(mixed_store["store"], embed_model=emb)
    retriever = index.as_retriever(similarity_top_k=len(points))
    for text in ("A red house by the lake.", "Quarterly revenue grew four percent."):
        hits = retriever.retrieve(text)
        assert hits[0].node.get_content() == text and not isinstance(hits[0].node, ImageNode)
    for path in image_paths[:2]:
        hits = retriever.retrieve(emb.query_bundle(image=path))
        assert isinstance(hits[0].node, ImageNode) and hits[0].node.image_path == path
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    # Composed query: the ranking equals an independent numpy ranking of the stored vectors.
    bundle = emb.query_bundle(image=image_paths[0], text="make it blue")
    assert _close(bundle.embedding, encoder.embed_composed(image_paths[:1], ["make it blue"])[0])
    hits = retriever.retrieve(bundle)
    stored = {str(p.id): np.asarray(p.vector) for p in points}
    expected = sorted(stored, key=lambda pid: -float(stored[pid] @ np.asarray(bundle.embedding)))
    assert [h.node.node_id for h in hits] == expected
    # The same vector through the store's own query API.
    result = mixed_store["store"].query(VectorStoreQuery(query_embedding=bundle.embedding, similarity_top_k=2))
    assert result.ids == expected[:2]


# ---------------------------------------------------------------------- MultiModalVectorStoreIndex, two stores
def test_multimodal_index_builds_reloads_and_retrieves(encoder, image_paths, tmp_path):
    emb = E5VEmbedding(encoder=encoder)
    texts = [TextNode(text="A red house by the lake."), TextNode(text="Quarterly revenue grew four percent.")]
    # MultiModalVectorStoreIndex skips nodes whose embed content is empty: image nodes need metadata (or text).
    images = [ImageNode(image_path=p, metadata={"file_name": Path(p).name}) for p in image_paths]
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        text_store = QdrantVectorStore(client=client, collection_name="mm_text")
        image_store = QdrantVectorStore(client=client, collection_name="mm_images")
        storage = StorageContext.from_defaults(vector_store=text_store, image_store=image_store)
        MultiModalVectorStoreIndex(texts + images, storage_context=storage, embed_model=emb, image_embed_model=emb)
        stored, _ = client.scroll("mm_images", with_vectors=True, limit=100)
        by_path = {metadata_dict_to_node(p.payload).image_path: np.asarray(p.vector) for p in stored}
        assert set(by_path) == set(image_paths)
        assert _close([by_path[p] for p in image_paths], encoder.embed_images(image_paths))

        index = MultiModalVectorStoreIndex.from_vector_store(
            vector_store=text_store, image_vector_store=image_store, embed_model=emb, image_embed_model=emb
        )
        retriever = index.as_retriever(similarity_top_k=1, image_similarity_top_k=len(image_paths))
        assert retriever.text_retrieve("A red house by the lake.")[0].node.get_content() == "A red house by the lake."
        for path in image_paths:
            assert retriever.image_to_image_retrieve(path)[0].node.image_path == path
        t2i = retriever.text_to_image_retrieve("a red picture")
        query = encoder.embed_queries(["a red picture"])[0]
        expected = sorted(image_paths, key=lambda p: -float(by_path[p] @ query))
        assert [h.node.image_path for h in t2i] == expected
        both = retriever.retrieve("A red house by the lake.")
        assert {type(h.node) for h in both} == {TextNode, ImageNode}
    finally:
        client.close()


@pytest.mark.parametrize(
    ("old", "new", "name", "dist"),
    [
        ("e5v_qdrant.llamaindex", "llama_index.embeddings.e5v", "E5VEmbedding", "llama-index-embeddings-e5v"),
        (
            "e5v_qdrant.llamaindex_edge",
            "llama_index.vector_stores.qdrant_edge",
            "QdrantEdgeVectorStore",
            "llama-index-vector-stores-qdrant-edge",
        ),
    ],
)
def test_moved_adapters_keep_their_old_import_with_a_warning_or_name_the_package(monkeypatch, old, new, name, dist):
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"use from {new} import {name}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    monkeypatch.delitem(sys.modules, old)
    monkeypatch.setitem(sys.modules, new, None)  # the integration package is not installed
    with pytest.raises(ImportError, match=f"pip install {dist}, then from {new} import {name}"):
        importlib.import_module(old)
    if name == "E5VEmbedding":
        with pytest.raises(ImportError, match=f"pip install {dist}"):
            from e5v_qdrant import E5VEmbedding  # noqa: F401


def test_the_cli_imports_no_llamaindex_adapter():
    import subprocess
    import sys

    code = "import sys, e5v_qdrant.cli, e5v_qdrant.search; print(sorted(m for m in sys.modules if 'e5v' in m and 'llama' in m))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
