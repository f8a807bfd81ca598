"""Tests of the llama-index-embeddings-e5v package as installed: import path, class, and real embeddings.

Self-contained (no fixtures from the e5v-qdrant repository), so they also run from an installed package. They use a
tiny LLaVA-NeXT replica built by ``e5v_qdrant.testing`` — no downloads.
"""

from __future__ import annotations

import asyncio
import io
import warnings

import numpy as np
import pytest
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageNode, TextNode
from llama_index.embeddings.e5v import E5VEmbedding


@pytest.fixture(scope="module")
def embed_model(tmp_path_factory) -> E5VEmbedding:
    from e5v_qdrant.testing import build_replica

    path = build_replica(tmp_path_factory.mktemp("e5v_pkg") / "tiny-e5v")
    model = E5VEmbedding(model_name=str(path), device="cpu", dtype="float32", embed_batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the replica reproduces the published checkpoint's traps, with warnings
        model.encoder  # noqa: B018 - load now
    return model


def test_class_is_a_llamaindex_multimodal_embedding_and_not_a_copy():
    import e5v_qdrant

    assert issubclass(E5VEmbedding, MultiModalEmbedding)
    with pytest.warns(DeprecationWarning, match="from llama_index.embeddings.e5v import E5VEmbedding"):
        assert E5VEmbedding is e5v_qdrant.E5VEmbedding  # the old name still works, not duplicated
    assert E5VEmbedding.class_name() == "E5VEmbedding"


def test_package_metadata_declares_llamahub_import_path():
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("llama-index-embeddings-e5v")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was not installed
        pytest.skip("llama-index-embeddings-e5v is not installed")
    requires = " ".join(dist.requires or [])
    assert "e5v-qdrant" in requires and "llama-index-core" in requires


def test_text_query_and_image_embeddings(embed_model):
    from e5v_qdrant.testing import draw_image

    text = np.asarray(embed_model.get_text_embedding("a red house"))
    query = np.asarray(embed_model.get_query_embedding("a red house"))
    other = np.asarray(embed_model.get_text_embedding("quarterly revenue"))
    assert text.shape == (embed_model.encoder.dim,)
    assert np.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(text, query, atol=1e-5)  # no query prompt configured: queries embed like documents
    assert not np.allclose(text, other, atol=1e-3)

    buf = io.BytesIO()
    draw_image(40, 30, seed=3).save(buf, format="PNG")
    image = np.asarray(embed_model.get_image_embedding(buf))
    again = np.asarray(asyncio.run(embed_model.aget_image_embedding(buf)))  # same BytesIO, already read: rewound
    assert np.allclose(image, again, atol=1e-5)
    assert not np.allclose(image, text, atol=1e-3)


def test_nodes_are_embedded_by_modality(embed_model, tmp_path):
    from e5v_qdrant.testing import draw_image

    path = tmp_path / "pic.png"
    draw_image(32, 32, seed=5).save(path)
    nodes = [TextNode(text="a red house"), ImageNode(image_path=str(path), metadata={"file_name": "pic.png"})]
    embed_model(nodes)
    assert np.allclose(nodes[0].embedding, embed_model.get_text_embedding("a red house"), atol=1e-5)
    assert np.allclose(nodes[1].embedding, embed_model.get_image_embedding(str(path)), atol=1e-5)


def test_serialisation_round_trip(embed_model):
    clone = E5VEmbedding.from_dict(embed_model.to_dict())
    assert clone.to_dict() == embed_model.to_dict()
