"""identity.py: one declaration of which options change vectors; fingerprint, stamp, LlamaIndex fields derive from it."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.identity import fingerprint, vector_fields, vector_options

#: A value other than the default for every option that changes vectors. A new vector option makes
#: ``test_every_vector_option_changes_the_fingerprint`` fail until it gets a value here.
ALTERNATIVES = {
    "revision": "v2",
    "prompts": "e5v-typofix",
    "query_prompt": "search query: {text}",
    "max_text_tokens": 32,
    "image_layout": "llava-next",
}


@pytest.fixture(scope="module")
def other_folders(replica_path, tmp_path_factory):
    """A second model folder (one weight byte differs) and a folder with adapter files."""
    root = tmp_path_factory.mktemp("identity")
    other = root / "other-model"
    shutil.copytree(replica_path, other)
    config = json.loads((other / "config.json").read_text())
    config["e5v_test_marker"] = 1  # another checkpoint: its files differ
    (other / "config.json").write_text(json.dumps(config))
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    return {"model": str(other), "adapter": str(adapter)}


def test_every_vector_option_changes_the_fingerprint(replica_path, other_folders):
    base = EncoderConfig(model=str(replica_path))
    ids = {"default": fingerprint(base)["id"]}
    alternatives = {**ALTERNATIVES, **other_folders}
    assert set(vector_fields()) <= set(alternatives), "give every vector option a test value"
    for name in vector_fields():
        ids[name] = fingerprint(dataclasses.replace(base, **{name: alternatives[name]}))["id"]
    assert len(set(ids.values())) == len(ids), ids  # each option alone moves the id


def test_options_that_do_not_change_vectors_leave_the_fingerprint_alone(replica_path):
    base = EncoderConfig(model=str(replica_path))
    same = dataclasses.replace(
        base, device="cpu", dtype="bfloat16", batch_size=3, max_batch_tokens=77, preprocess_workers=0
    )
    assert fingerprint(same)["id"] == fingerprint(base)["id"]
    assert not {"device", "dtype", "batch_size", "max_batch_tokens", "preprocess_workers"} & set(vector_fields())


def test_fingerprint_without_weights_equals_the_loaded_encoders(replica_path, encoder):
    """Read from config.json alone (no weights), the fingerprint is the loaded encoder's."""
    assert fingerprint(EncoderConfig(model=str(replica_path))) == encoder.fingerprint
    assert fingerprint(EncoderConfig(model=str(replica_path)))["dim"] == encoder.dim


def test_stamp_and_llamaindex_fields_cover_every_vector_option(encoder):
    from e5v_qdrant.llamaindex import E5VEmbedding
    from e5v_qdrant.store import encoder_record

    assert set(encoder_record(encoder)) == set(vector_fields())
    assert encoder_record(encoder) == vector_options(encoder.config)
    mirrored = E5VEmbedding(encoder=encoder).encoder_config()
    assert vector_options(mirrored) == vector_options(encoder.config)


def test_truncated_vectors_cannot_join_an_untruncated_collection(tmp_path, replica_path, capsys):
    """The gap issue 18 suspected: --max-text-tokens was not part of the fingerprint id, so a truncating run could
    write truncated vectors into a collection built without truncation. Now it is refused (exit 2)."""
    from e5v_qdrant.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a long sentence about cats and dogs and rivers and bread " * 8)
    common = ["--collection", "docs", "--qdrant-path", str(tmp_path / "qd"), "--model", str(replica_path)]
    common += ["--device", "cpu", "--dtype", "float32"]
    assert main(["ingest", str(docs), *common]) == 0
    (docs / "b.txt").write_text("another document about snow and mountains " * 8)
    capsys.readouterr()
    assert main(["ingest", str(docs), *common, "--max-text-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "max_text_tokens None (collection) vs 4 (now)" in err and "reingest" in err
