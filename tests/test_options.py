"""options.py: declared choices validated for every config, one policy for unknown keys (from_options)."""

from __future__ import annotations

import dataclasses

import pytest

from e5v_qdrant.config import (
    EncoderConfig,
    EvalConfig,
    FinetuneConfig,
    IngestConfig,
    SearchConfig,
    ServeConfig,
    StoreConfig,
)
from e5v_qdrant.errors import E5VConfigError

#: The least each config needs to be built (its required options).
MINIMAL = {
    EncoderConfig: {},
    StoreConfig: {},
    IngestConfig: {"collection": "docs"},
    SearchConfig: {},
    FinetuneConfig: {"train": "t.jsonl", "output": "out"},
    EvalConfig: {},
    ServeConfig: {},
}


def _with_choices():
    for cls, minimal in MINIMAL.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("choices"):
                yield pytest.param(cls, minimal, f, id=f"{cls.__name__}.{f.name}")


@pytest.mark.parametrize(("cls", "minimal", "field"), list(_with_choices()))
def test_every_declared_choice_is_validated_for_the_python_api(cls, minimal, field):
    for value in field.metadata["choices"]:
        assert getattr(cls(**minimal, **{field.name: value}), field.name) == value
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    with pytest.raises(E5VConfigError, match=f"{field.name} 'bogus' is not one of .*\\({flag}\\)"):
        cls(**minimal, **{field.name: "bogus"})


def test_choices_cover_the_options_that_have_a_fixed_set_of_values():
    declared = {(cls.__name__, f.name) for cls in MINIMAL for f in dataclasses.fields(cls) if f.metadata["choices"]}
    assert {
        ("EncoderConfig", "dtype"),
        ("EncoderConfig", "attn_implementation"),
        ("EncoderConfig", "image_layout"),
        ("StoreConfig", "embedded"),
        ("StoreConfig", "vector_datatype"),
        ("StoreConfig", "quantization"),
        ("IngestConfig", "pdf_pages"),
        ("IngestConfig", "engine"),
        ("SearchConfig", "modality"),
        ("SearchConfig", "fusion"),
        ("FinetuneConfig", "dtype"),
    } <= declared


@pytest.mark.parametrize("cls", list(MINIMAL))
def test_from_options_builds_the_config_and_refuses_unknown_keys_naming_the_valid_ones(cls):
    assert cls.from_options(MINIMAL[cls]) == cls(**MINIMAL[cls])
    with pytest.raises(E5VConfigError, match="'no_such' is not an option of " + cls.__name__) as err:
        cls.from_options(MINIMAL[cls], no_such=1)
    assert all(f.name in str(err.value) for f in dataclasses.fields(cls))  # the valid ones, named


def test_from_options_later_keywords_win():
    assert EncoderConfig.from_options({"prompts": "e5v"}, prompts="e5v-typofix").prompts == "e5v-typofix"
