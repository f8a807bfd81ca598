"""identity.py: one declaration of which options change vectors; fingerprint, stamp, LlamaIndex fields derive from it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest

from e5v_qdrant.config import EncoderConfig
from e5v_qdrant.identity import QUERY_TIME_FIELDS, fingerprint, stored_prompts_digest, vector_fields, vector_options

#: A value other than the default for every option that changes vectors. A new vector option makes
#: ``test_every_vector_option_changes_the_fingerprint`` fail until it gets a value here.
ALTERNATIVES = {
    "revision": "v2",
    "prompts": "e5v-cirr-target",  # another image body: stored vectors differ
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
        if name not in QUERY_TIME_FIELDS:
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
    from llama_index.embeddings.e5v import E5VEmbedding

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


# ---------------------------------------------------------------- stored vs query-time prompts (issue 27)
CHAT = (
    "<|start_header_id|>user<|end_header_id|>\n\n{body}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
)
TEXT_BODY = "{text}\nSummary above sentence in one word: "
IMAGE_BODY = "<image>\nSummary above image in one word: "
#: The default composed body as released before issue 27 (with a trailing space), what old stamps hashed.
OLD_COMPOSED = '<image>Modify this image with "{text}", desribe modified image in one word: '


def _sha16(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def old_stamp(new_stamp: dict, query_prompt: str | None, image: str = IMAGE_BODY) -> dict:
    """The stamp the release before issue 27 wrote for the same collection, written out: its prompt digest hashed every
    template (query-time ones included, as they then were) and it had no ``query_prompts``."""
    fp = {k: v for k, v in new_stamp["fingerprint"].items() if k not in ("query_prompts", "id")}
    fp["prompts"] = _sha16(
        {"chat": CHAT, "composed": OLD_COMPOSED, "image": image, "query": query_prompt, "text": TEXT_BODY}
    )
    identity = {k: v for k, v in fp.items() if k != "adapter"} | {"model": None}  # a local model folder
    return {**new_stamp, "fingerprint": {**fp, "id": _sha16(identity)}}


def test_query_time_prompts_are_provenance_not_identity(replica_path):
    base = EncoderConfig(model=str(replica_path))
    for other in (
        dataclasses.replace(base, query_prompt="search query: {text}"),
        dataclasses.replace(base, prompts="e5v-typofix"),  # only the composed body differs
    ):
        assert fingerprint(other)["id"] == fingerprint(base)["id"]
        assert fingerprint(other)["query_prompts"] != fingerprint(base)["query_prompts"]
    assert fingerprint(dataclasses.replace(base, query_prompt="q: {text}"))["query_prompts"] == {
        "composed": '<image>Modify this image with "{text}", desribe modified image in one word:',
        "query": "q: {text}",
    }


def test_composed_body_counts_once_composed_points_are_stored():
    from e5v_qdrant.prompts import get_prompts

    e5v, typofix = get_prompts("e5v"), get_prompts("e5v-typofix")
    assert stored_prompts_digest(e5v) == stored_prompts_digest(typofix)
    kinds = ("text", "image", "composed")
    assert stored_prompts_digest(e5v, kinds) != stored_prompts_digest(typofix, kinds)


def test_default_fingerprint_id_is_the_one_old_stamps_carry(replica_path):
    """The default prompts keep their id: collections of the last release keep their physical name and stamp."""
    new = fingerprint(EncoderConfig(model=str(replica_path)))
    assert old_stamp({"fingerprint": new}, None)["fingerprint"]["id"] == new["id"]


def _rewrite_stamp(store, physical: str, stamp: dict) -> None:
    store.client.update_collection(collection_name=physical, metadata={"e5v_qdrant": stamp})
    assert store.stamp(physical).fingerprint == stamp["fingerprint"]


@pytest.mark.parametrize("engine", ["edge", "local"])
@pytest.mark.parametrize("query_prompt", [None, "search query: {text}"])
def test_collection_stamped_before_the_split_keeps_working(
    tmp_path, replica_path, encoder, engine, query_prompt, monkeypatch
):
    """A collection written by the last release (its stamp rewritten to that format here) is used as it is: a re-run
    ingest embeds nothing, a new file is added, text / image / composed search answer, reingest has nothing to do, and
    the stamp is left alone. With a query prompt the old id differs from today's (it hashed the query prompt)."""
    import warnings

    from helpers import make_corpus

    from e5v_qdrant import E5VEncoder
    from e5v_qdrant.config import IngestConfig, StoreConfig
    from e5v_qdrant.ingest import ingest
    from e5v_qdrant.reingest import reingest
    from e5v_qdrant.search import search
    from e5v_qdrant.store import NEW_FOLDER_ENGINE_ENV, QdrantStore

    monkeypatch.setenv(NEW_FOLDER_ENGINE_ENV, engine)
    if query_prompt is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder = E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=4, query_prompt=query_prompt)
    root = make_corpus(tmp_path / "corpus")
    config = IngestConfig(collection="docs", paths=[str(root)], chunk_size=32, chunk_overlap=4)
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"), retries=1)) as store:
        first = ingest(config, encoder, store, progress=False)
        physical = store.resolve("docs")
        stamp = store.stamp(physical).to_metadata()["e5v_qdrant"]
        old = old_stamp(stamp, query_prompt)
        assert (old["fingerprint"]["id"] == encoder.fingerprint["id"]) == (query_prompt is None)
        _rewrite_stamp(store, physical, old)

        again = ingest(config, encoder, store, progress=False)
        assert again.embedded == 0 and again.unchanged == first.new and again.physical_collection == physical
        (root / "added.txt").write_text("A red bicycle leaning on a stone wall by the sea.")  # one chunk
        more = ingest(config, encoder, store, progress=False)
        assert more.new == 1 and more.embedded >= 1 and store.resolve("docs") == physical
        picture = root / "pics" / "one.png"
        added = "A red bicycle leaning on a stone wall by the sea."
        hits = search(store, encoder, "docs", text=added, top_k=1)
        assert hits and (query_prompt is not None or hits[0].source.endswith("added.txt"))  # self-retrieval
        assert search(store, encoder, "docs", image=str(picture), top_k=1)[0].source.endswith("one.png")
        assert len(search(store, encoder, "docs", image=str(picture), text="make it red", top_k=3)) == 3
        report = reingest("docs", encoder, store, progress=False)
        assert report.already_current and not report.embedded and store.resolve("docs") == physical
        assert store.stamp(physical).fingerprint == old["fingerprint"]  # nothing rewritten


def test_old_stamp_of_a_changed_stored_prompt_is_refused(tmp_path, replica_path, encoder, monkeypatch):
    """e5v-cirr-target's image body lost its trailing space: images stored with the old body are not what the preset
    makes now, so that collection is refused (with the remedy) rather than silently mixed."""
    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.pipeline import EncoderFacts
    from e5v_qdrant.store import CollectionMismatchError, QdrantStore

    facts = EncoderFacts.of(EncoderConfig(model=str(replica_path), prompts="e5v-cirr-target"))
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"), retries=1)) as store:
        physical = store.ensure_collection("docs", facts)
        stamp = store.stamp(physical).to_metadata()["e5v_qdrant"]
        old = old_stamp(stamp, None, image="<image>\n Describe this image in one word: ")  # as released before
        _rewrite_stamp(store, physical, old)
        with pytest.raises(CollectionMismatchError, match="stored prompts of preset .e5v-cirr-target. differ"):
            store.check_compatible("docs", physical, facts)
