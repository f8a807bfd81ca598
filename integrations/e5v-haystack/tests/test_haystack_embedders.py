"""The E5-V Haystack embedders give exactly the vectors of an ``E5VEncoder`` loaded directly over the same replica."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from haystack import Document
from haystack_integrations.components.embedders.e5v import (
    E5VDocumentEmbedder,
    E5VDocumentImageEmbedder,
    E5VTextEmbedder,
)

from e5v_qdrant.errors import E5VConfigError, E5VImageError, E5VInputError, E5VModelError


@pytest.fixture(scope="module")
def options(replica_path):
    return {"model": str(replica_path), "device": "cpu", "dtype": "float32", "batch_size": 2}


def _render(path, page_number, dpi):
    """The written-out recipe: pypdfium2 renders the page at dpi / 72 scale, as RGB."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(path)
    try:
        return pdf[page_number - 1].render(scale=dpi / 72).to_pil().convert("RGB")
    finally:
        pdf.close()


def test_text_embedder_embeds_queries_like_the_encoder(options, reference):
    embedder = E5VTextEmbedder(**options)
    result = embedder.run("a red house")
    assert set(result) == {"embedding"} and isinstance(result["embedding"][0], float)
    np.testing.assert_allclose(result["embedding"], reference.embed_queries(["a red house"])[0], atol=1e-5)
    np.testing.assert_allclose(
        asyncio.run(embedder.run_async("tax forms"))["embedding"], reference.embed_queries(["tax forms"])[0], atol=1e-5
    )
    with pytest.raises(E5VInputError, match="E5VDocumentEmbedder"):
        embedder.run([Document(content="x")])


def test_query_prompt_reaches_the_text_embedder(options, reference):
    from e5v_qdrant.encoder import E5VEncoder

    prompted = E5VTextEmbedder(**options, encoder_kwargs={"query_prompt": "Find the passage: {text}"})
    expected = E5VEncoder(
        options["model"], device="cpu", dtype="float32", query_prompt="Find the passage: {text}"
    ).embed_queries(["a red house"])[0]
    vector = prompted.run("a red house")["embedding"]
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert not np.allclose(vector, reference.embed_queries(["a red house"])[0], atol=1e-3)


def test_document_embedder_embeds_meta_and_content_and_leaves_inputs_alone(options, reference):
    embedder = E5VDocumentEmbedder(**options, meta_fields_to_embed=["title", "missing"], embedding_separator=" | ")
    docs = [
        Document(content="A dog runs on the beach.", meta={"title": "Beach"}),
        Document(content="Revenue grew 4%.", meta={"title": None}),
        Document(content=None, meta={"title": "Only a title"}),
    ]
    out = embedder.run(docs)["documents"]
    expected = reference.embed_texts(["Beach | A dog runs on the beach.", "Revenue grew 4%.", "Only a title | "])
    np.testing.assert_allclose([doc.embedding for doc in out], expected, atol=1e-5)
    assert [doc.id for doc in out] == [doc.id for doc in docs] and all(doc.embedding is None for doc in docs)
    assert embedder.run([])["documents"] == []
    with pytest.raises(E5VInputError, match="E5VTextEmbedder"):
        embedder.run("a query")


def test_image_embedder_embeds_image_files_and_pdf_pages(options, reference, files):
    embedder = E5VDocumentImageEmbedder(**options, root_path=str(files), pdf_dpi=100, progress_bar=False)
    docs = [
        Document(meta={"file_path": "img0.png"}),
        Document(meta={"file_path": "doc.pdf", "page_number": 2}),
        Document(meta={"file_path": "img1.png", "mime_type": "image/png"}),
        Document(meta={"file_path": "doc.pdf", "page_number": 1}),
    ]
    out = embedder.run(docs)["documents"]
    expected = reference.embed_images(
        [files / "img0.png", _render(files / "doc.pdf", 2, 100), files / "img1.png", _render(files / "doc.pdf", 1, 100)]
    )
    np.testing.assert_allclose([doc.embedding for doc in out], expected, atol=1e-5)
    assert out[1].meta == {
        "file_path": "doc.pdf",
        "page_number": 2,
        "embedding_source": {"type": "image", "file_path_meta_field": "file_path"},
    }
    assert not np.allclose(out[1].embedding, out[3].embedding, atol=1e-3)  # the right page, not the first


def test_image_embedder_other_meta_field_and_absolute_paths(options, reference, files):
    embedder = E5VDocumentImageEmbedder(**options, file_path_meta_field="image", progress_bar=False)
    out = embedder.run([Document(content="caption", meta={"image": str(files / "img2.png")})])["documents"]
    np.testing.assert_allclose(out[0].embedding, reference.embed_images([files / "img2.png"])[0], atol=1e-5)


@pytest.mark.parametrize(
    ("meta", "error", "match"),
    [
        ({}, E5VInputError, "file_path"),
        ({"file_path": "../outside.png"}, E5VInputError, "escapes root_path"),
        ({"file_path": "nope.png"}, E5VImageError, "no such file"),
        ({"file_path": "doc.pdf"}, E5VInputError, "page_number"),
        ({"file_path": "doc.pdf", "page_number": 3}, E5VImageError, "has 2 pages"),
    ],
)
def test_image_embedder_refuses_bad_documents_by_name(options, files, meta, error, match):
    (files.parent / "outside.png").write_bytes((files / "img0.png").read_bytes())
    embedder = E5VDocumentImageEmbedder(**options, root_path=str(files), progress_bar=False)
    with pytest.raises(error, match=match):
        embedder.run([Document(meta={"file_path": "img0.png"}), Document(id="bad-doc", meta=meta)])


def test_components_load_nothing_at_construction_and_share_an_encoder(options):
    lazy = E5VTextEmbedder(model="/nonexistent/e5v-checkpoint")  # would fail now if it loaded
    with pytest.raises(E5VModelError, match="nonexistent"):
        lazy.warm_up()
    text, docs = E5VTextEmbedder(**options), E5VDocumentEmbedder(**options)
    text.warm_up()
    docs.warm_up()
    assert text.encoder is docs.encoder  # one model for a pipeline's query and document embedders
    with pytest.raises(E5VConfigError, match="dtype"):
        E5VDocumentImageEmbedder(model=options["model"], dtype="float8")


@pytest.mark.parametrize("cls", [E5VTextEmbedder, E5VDocumentEmbedder, E5VDocumentImageEmbedder])
def test_to_dict_from_dict_round_trip(cls, options):
    extra = {"meta_fields_to_embed": ["title"]} if cls is E5VDocumentEmbedder else {}
    component = cls(**options, encoder_kwargs={"max_text_tokens": 32}, **extra)
    data = component.to_dict()
    assert (
        data["type"]
        == f"haystack_integrations.components.embedders.e5v.{cls.__module__.rsplit('.', 1)[1]}.{cls.__name__}"
    )
    clone = cls.from_dict(data)
    assert clone.to_dict() == data
    assert clone.encoder_config() == component.encoder_config()
