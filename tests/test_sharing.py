"""``e5v_qdrant.sharing``: adapter options -> EncoderConfig, one loaded encoder per config, one lock per encoder."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.sharing import encoder_config, encoder_lock, shared_encoder


def test_encoder_config_leaves_none_options_at_their_defaults_but_passes_extra_as_given():
    config = encoder_config("m", {"dtype": None, "batch_size": None, "revision": "abc"}, {"max_image_pixels": None})
    assert config == EncoderConfig(model="m", revision="abc", max_image_pixels=None)
    assert config.dtype == EncoderConfig(model="m").dtype and config.max_image_pixels is None


def test_encoder_config_names_unknown_and_invalid_options():
    with pytest.raises(E5VConfigError, match="no_such_option"):
        encoder_config("m", {"no_such_option": 1})
    with pytest.raises(E5VConfigError, match="model"):
        encoder_config("m", extra={"model": "other"})  # the model is the first argument, not an option twice
    with pytest.raises(E5VConfigError, match="dtype"):
        encoder_config("m", {"dtype": "float8"})


def test_equal_configs_share_one_encoder_until_nobody_holds_it(replica_path):
    config = encoder_config(str(replica_path), {"device": "cpu", "dtype": "float32", "batch_size": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = shared_encoder(config)
        assert shared_encoder(EncoderConfig(**vars(config))) is first  # an equal config, not the same object
        other = shared_encoder(encoder_config(str(replica_path), {"device": "cpu", "dtype": "float32"}))
    assert other is not first
    assert encoder_lock(first) is encoder_lock(first) and encoder_lock(first) is not encoder_lock(other)
    gone = weakref.ref(first)
    del first, other
    gc.collect()
    assert gone() is None  # the cache holds encoders weakly: the model's memory is freed


#: Written out: the options that change vectors (EncoderConfig's vectors=True) plus where and how the model runs.
_MIRRORED = {"model", "revision", "adapter", "prompts", "query_prompt", "max_text_tokens", "image_layout"} | {
    "device",
    "dtype",
    "batch_size",
}


def test_every_adapter_mirrors_the_same_options_with_encoder_configs_types_defaults_and_help():
    from e5v_qdrant.sharing import adapter_options

    assert set(adapter_options()) == _MIRRORED
    help_of = {name: f.metadata["help"] for name, f in EncoderConfig.__dataclass_fields__.items()}

    llama = pytest.importorskip("llama_index.embeddings.e5v").E5VEmbedding
    renamed = {"model": "model_name", "prompts": "prompt_preset", "batch_size": "embed_batch_size"}
    for name in _MIRRORED:
        field = llama.model_fields[renamed.get(name, name)]
        assert (field.default, field.description) == (getattr(EncoderConfig(), name), help_of[name]), name

    langchain = pytest.importorskip("langchain_e5v").E5VEmbeddings
    assert _MIRRORED <= set(langchain.model_fields)
    assert {langchain.model_fields[name].description for name in _MIRRORED} == {help_of[n] for n in _MIRRORED}
    options = {"prompts": "e5v-typofix", "max_text_tokens": 7, "query_prompt": "Q: {text}"}
    assert langchain(model="m", **options).encoder_config() == EncoderConfig(model="m", **options)

    haystack = pytest.importorskip("haystack_integrations.components.embedders.e5v")
    for component in (haystack.E5VTextEmbedder, haystack.E5VDocumentEmbedder, haystack.E5VDocumentImageEmbedder):
        embedder = component(model="m", **options)
        assert embedder.encoder_config() == EncoderConfig(model="m", **options)
        assert _MIRRORED <= set(embedder.to_dict()["init_parameters"])
        assert component.from_dict(embedder.to_dict()).encoder_config() == embedder.encoder_config()
        with pytest.raises(E5VConfigError, match="max_batch_tokens"):  # names where the others go
            component(model="m", prompt="e5v")
