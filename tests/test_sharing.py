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
