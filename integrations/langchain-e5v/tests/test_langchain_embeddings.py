"""``E5VEmbeddings`` gives exactly the vectors of an ``E5VEncoder`` loaded directly over the same checkpoint."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_e5v import E5VEmbeddings

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.errors import E5VConfigError, E5VImageError, E5VInputError, E5VModelError

TEXTS = ["a red house by the sea", "quarterly revenue grew 4%", ""]


@pytest.fixture(scope="module")
def embeddings(replica_path):
    return E5VEmbeddings(model=str(replica_path), device="cpu", dtype="float32", batch_size=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from e5v_qdrant.testing import draw_image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed, size in enumerate([(40, 30), (32, 64), (50, 50)]):
        path = folder / f"pic{seed}.png"
        draw_image(*size, seed=seed).save(path)
        paths.append(str(path))
    return paths


def test_is_a_langchain_embeddings():
    assert issubclass(E5VEmbeddings, Embeddings)


def test_documents_and_queries_equal_the_encoder(embeddings, reference):
    docs = embeddings.embed_documents(TEXTS)
    assert isinstance(docs, list) and all(isinstance(v, list) and isinstance(v[0], float) for v in docs)
    np.testing.assert_allclose(docs, reference.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), reference.embed_queries(TEXTS[:1])[0], atol=1e-5)
    np.testing.assert_allclose(asyncio.run(embeddings.aembed_documents(TEXTS)), reference.embed_texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(
        asyncio.run(embeddings.aembed_query(TEXTS[1])), reference.embed_queries(TEXTS[1:2])[0], atol=1e-5
    )


def test_images_and_composed_equal_the_encoder(embeddings, reference, images):
    np.testing.assert_allclose(embeddings.embed_image(images), reference.embed_images(images), atol=1e-5)
    edits = ["make it blue", "add a dog", "zoom out"]
    np.testing.assert_allclose(
        embeddings.embed_composed(images, edits), reference.embed_composed(images, edits), atol=1e-5
    )
    # the modalities really differ (a mix-up of prompts would make the comparisons above fail, not pass)
    assert not np.allclose(embeddings.embed_image(images[:1]), embeddings.embed_composed(images[:1], edits[:1]))


def test_query_prompt_reaches_queries_only(replica_path, reference):
    prompted = E5VEmbeddings(
        model=str(replica_path), device="cpu", dtype="float32", query_prompt="Find the passage: {text}"
    )
    query = np.asarray(prompted.embed_query("a red house"))
    np.testing.assert_allclose(
        prompted.embed_documents(["a red house"])[0], reference.embed_texts(["a red house"])[0], atol=1e-5
    )
    assert not np.allclose(query, reference.embed_queries(["a red house"])[0], atol=1e-3)
    direct = EncoderConfig(**{**dataclasses.asdict(reference.config), "query_prompt": "Find the passage: {text}"})
    from e5v_qdrant.encoder import E5VEncoder

    np.testing.assert_allclose(query, E5VEncoder(config=direct).embed_queries(["a red house"])[0], atol=1e-5)


def test_nothing_loads_at_construction():
    lazy = E5VEmbeddings(model="/nonexistent/e5v-checkpoint")  # would fail if it loaded now
    with pytest.raises(E5VModelError, match="nonexistent"):
        lazy.embed_query("a red house")


def test_equal_options_share_one_encoder_and_encoder_can_be_passed(embeddings, replica_path, reference):
    twin = E5VEmbeddings(model=str(replica_path), device="cpu", dtype="float32", batch_size=2)
    assert twin.encoder is embeddings.encoder
    other = E5VEmbeddings(model=str(replica_path), device="cpu", dtype="float32", batch_size=3)
    assert other.encoder is not embeddings.encoder

    given = E5VEmbeddings(encoder=reference)
    assert given.encoder is reference
    assert given.model == reference.config.model and given.batch_size == reference.config.batch_size
    assert given.encoder_config() == reference.config
    with pytest.raises(E5VConfigError, match="batch_size"):
        E5VEmbeddings(encoder=reference, batch_size=7)


def test_options_are_validated_at_construction(replica_path):
    with pytest.raises(E5VConfigError, match="dtype"):
        E5VEmbeddings(model=str(replica_path), dtype="float8")
    with pytest.raises(E5VConfigError, match="no_such_option"):
        E5VEmbeddings(model=str(replica_path), encoder_kwargs={"no_such_option": 1})


def test_image_layout_passes_through_and_none_keeps_defaults(replica_path):
    emb = E5VEmbeddings(model=str(replica_path), image_layout="llava-next")
    assert emb.encoder_config().image_layout == "llava-next"
    with pytest.raises(E5VConfigError, match="image_layout"):
        E5VEmbeddings(model=str(replica_path), image_layout="no-such-layout")
    # None leaves every option at EncoderConfig's default
    assert E5VEmbeddings(model=str(replica_path)).encoder_config() == EncoderConfig(model=str(replica_path))


def test_bad_inputs_are_named(embeddings, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(E5VImageError, match="broken.png"):
        embeddings.embed_image(uris=[images[0], str(bad)])  # by keyword, as Chroma's add_images calls it
    with pytest.raises(E5VInputError, match="wrap it in a list"):
        embeddings.embed_image(images[0])  # one path, not a list: not split into characters
    with pytest.raises(E5VInputError, match="one text per image"):
        embeddings.embed_composed(images, ["only one edit"])
