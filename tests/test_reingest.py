"""reingest.py / `e5v-qdrant reingest`: new vectors behind an atomic alias swap, resumable, missing sources refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from helpers import make_corpus, points_of, run_ingest
from qdrant_client import QdrantClient

from e5v_qdrant.cli import main
from e5v_qdrant.config import IngestConfig, StoreConfig
from e5v_qdrant.ingest import ingest
from e5v_qdrant.reingest import reingest
from e5v_qdrant.store import QdrantStore, physical_name


@pytest.fixture(scope="module")
def adapter_path(replica_path, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the replica's language model, saved like `finetune` does."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaNextForConditionalGeneration

    full = LlavaNextForConditionalGeneration.from_pretrained(replica_path)
    lora = get_peft_model(
        full.model.language_model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False),
    )
    out = tmp_path_factory.mktemp("adapter") / "lora"
    lora.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapted(replica_path, adapter_path):
    from e5v_qdrant import E5VEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return E5VEncoder(replica_path, adapter=str(adapter_path), device="cpu", dtype="float32", batch_size=4)


def _vectors(store, name):
    return {str(r.id): (r.payload, np.asarray(r.vector["text-dense"])) for r in store.scroll(name, with_vectors=True)}


def _cfg(root):
    return IngestConfig(collection="docs", paths=[str(root)], chunk_size=96, chunk_overlap=4)


def test_reingest_serves_adapter_vectors_keeps_ids_and_payloads(tmp_path, encoder, adapted):
    root = make_corpus(tmp_path / "corpus")
    store = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(_cfg(root), encoder, store, progress=False)
    before = _vectors(store, "docs")
    old = store.aliases()["docs"]

    report = reingest("docs", adapted, store, progress=False)
    assert report.swapped and report.exit_code == 0 and report.embedded == len(before)
    assert store.aliases()["docs"] == physical_name("docs", adapted.fingerprint["id"]) != old
    after = _vectors(store, "docs")
    assert after.keys() == before.keys()
    for pid, (payload, vector) in after.items():
        old_payload = dict(before[pid][0])
        assert payload.pop("model_fingerprint") == adapted.fingerprint["id"]
        old_payload.pop("model_fingerprint")
        assert payload == old_payload
        # independent computation: the adapter encoder on the original content
        if payload["modality"] == "text":
            expected = adapted.embed_texts([json.loads(payload["_node_content"])["text"]])[0]
        else:
            expected = adapted.embed_images([payload["source"]])[0]
        np.testing.assert_allclose(vector, expected, atol=1e-5)
        assert not np.allclose(vector, before[pid][1], atol=1e-3)  # the adapter really changed the vectors
    assert store.exists(old)  # kept by default

    # ingest now refuses the base model on this alias, and accepts the adapter one (nothing to do)
    again = ingest(_cfg(root), adapted, store, progress=False)
    assert (again.embedded, again.points_written, again.unchanged) == (0, 0, 6)

    # running it again is a no-op; --drop-old then removes the old physical collection
    second = reingest("docs", adapted, store, drop_old=True, progress=False)
    assert second.already_current and second.dropped_old == [old] and not store.exists(old)


def test_concurrent_reader_never_errors_nor_sees_a_mix(tmp_path, encoder, adapted):
    root = make_corpus(tmp_path / "corpus")
    store = QdrantStore(StoreConfig(write_batch_size=2), client=QdrantClient(":memory:"))
    ingest(_cfg(root), encoder, store, progress=False)
    old_fp, new_fp = encoder.fingerprint["id"], adapted.fingerprint["id"]
    query = encoder.embed_texts(["a cat on the table"])[0]
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                hits = store.client.query_points(
                    "docs", query=query.tolist(), using="text-dense", limit=50, with_payload=True
                ).points
                fps = {h.payload["model_fingerprint"] for h in hits}
                assert len(fps) == 1 and len(hits) == count, (fps, len(hits))
                seen.append(fps.pop())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    count = store.count("docs")
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.05)
        report = reingest("docs", adapted, store, progress=False)
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert report.swapped and not errors
    assert seen[0] == old_fp and seen[-1] == new_fp
    switch = seen.index(new_fp)
    assert set(seen[:switch]) == {old_fp} and set(seen[switch:]) == {new_fp}  # one switch, never back


def test_changed_or_missing_image_blocks_the_swap_unless_allowed(tmp_path, encoder, adapted):
    root = make_corpus(tmp_path / "corpus")
    store = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(_cfg(root), encoder, store, progress=False)
    old = store.aliases()["docs"]
    total = store.count("docs")
    (root / "pics" / "two.jpg").unlink()
    from e5v_qdrant.testing import draw_image

    draw_image(120, 90, seed=99).save(root / "pics" / "one.png")

    report = reingest("docs", adapted, store, progress=False)
    assert not report.swapped and report.exit_code == 1 and store.aliases()["docs"] == old
    reasons = {os.path.basename(p["source"]): p["reason"] for p in report.problems}
    assert reasons.keys() == {"two.jpg", "one.png"}
    assert reasons["two.jpg"].startswith("missing") and reasons["one.png"].startswith("changed")

    allowed = reingest("docs", adapted, store, allow_missing=True, progress=False)
    assert allowed.swapped and allowed.exit_code == 1 and len(allowed.problems) == 2
    assert allowed.embedded == 0 and allowed.resumed == total - 2  # continued the first attempt's target
    sources = {p["source"] for _, (p, _) in _vectors(store, "docs").items()}
    assert str(root / "pics" / "two.jpg") not in sources and str(root / "pics" / "one.png") not in sources
    assert store.count("docs") == total - 2


@pytest.mark.slow  # a child process must import torch and load the model before it can be killed
def test_cli_reingest_killed_and_rerun_matches_an_uninterrupted_run(tmp_path, replica_path, adapter_path, capsys):
    root = make_corpus(tmp_path / "corpus")
    clean_qd, crash_qd = tmp_path / "clean", tmp_path / "crash"
    for qd in (clean_qd, crash_qd):
        assert run_ingest([root], qd, replica_path) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "reingest",
                "--collection",
                "docs",
                "--adapter",
                str(adapter_path),
                "--qdrant-path",
                str(clean_qd),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["swapped"] and report["old_fingerprint"] != report["new_fingerprint"]
    clean = points_of(clean_qd, vectors=True)

    # kill -9 while the new collection is half written (the write delay hook applies to ingest, so slow the store)
    cmd = [sys.executable, "-c", _SLOW_REINGEST, str(crash_qd), str(adapter_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target_glob = crash_qd / "collection"
    try:
        deadline = time.monotonic() + 300  # the child loads torch and the model first: slow on a busy machine
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and _target_count(target_glob, report["new_fingerprint"]) < 4
        ):
            time.sleep(0.02)
        assert proc.poll() is None, "reingest finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 < _target_count(target_glob, report["new_fingerprint"]) < len(clean)
    assert points_of(crash_qd)  # alias still serves the old collection
    assert (
        main(
            [
                "reingest",
                "--collection",
                "docs",
                "--adapter",
                str(adapter_path),
                "--qdrant-path",
                str(crash_qd),
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    resumed_report = json.loads(capsys.readouterr().out)
    assert resumed_report["swapped"] and resumed_report["resumed"] > 0
    resumed = points_of(crash_qd, vectors=True)
    assert resumed.keys() == clean.keys()
    for pid, (payload, vector) in clean.items():
        assert resumed[pid][0] == payload
        np.testing.assert_allclose(resumed[pid][1], vector, atol=1e-5)
    assert main(["collections", "--qdrant-path", str(crash_qd), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["aliases"] for r in rows if r["fingerprint"] == report["new_fingerprint"]] == [["docs"]]
    assert [r["points"] for r in rows] == [len(clean), len(clean)]


def _target_count(collection_dir, fingerprint_id) -> int:
    return _stored_count_in(collection_dir / f"docs-e5v-{fingerprint_id}")


def _stored_count_in(folder) -> int:
    import sqlite3

    file = folder / "storage.sqlite"
    if not file.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.Error:
        return 0


# The CLI in a child process with every upsert slowed down (so the kill lands mid-way).
_SLOW_REINGEST = """
import sys, time
from e5v_qdrant import store
original = store.QdrantStore.upsert
def slow(self, collection, points):
    time.sleep(0.4)
    return original(self, collection, points)
store.QdrantStore.upsert = slow
from e5v_qdrant.cli import main
sys.exit(main(["reingest", "--collection", "docs", "--adapter", sys.argv[2], "--qdrant-path", sys.argv[1],
               "--device", "cpu", "--write-batch-size", "2"]))
"""


def test_cli_reingest_usage_errors_exit_2(tmp_path, adapter_path, capsys):
    qd = tmp_path / "qd"
    assert main(["reingest", "--collection", "docs", "--qdrant-path", str(qd)]) == 2
    assert "--adapter DIR" in capsys.readouterr().err
    assert main(["reingest", "--collection", "nope", "--adapter", str(adapter_path), "--qdrant-path", str(qd)]) == 2
    assert "no store at" in capsys.readouterr().err and not qd.exists()  # nothing to re-embed: nothing created


def _vector_option_cases(replica_path, adapter_path, tmp_path):
    """A new value per option that changes vectors, and whether reingest must build a new collection for it."""
    from e5v_qdrant.testing import ReplicaSpec, build_replica

    other_model = build_replica(tmp_path / "other-model", ReplicaSpec(legacy_weight_names=True, seed=7))
    return {
        "model": (str(other_model), True),  # other weights
        "revision": ("v2", True),  # recorded by value (for a local folder too)
        "adapter": (str(adapter_path), True),
        "prompts": ("e5v-cirr-target", True),  # another stored image prompt
        "query_prompt": ("Find the passage: {text}", False),  # shapes query vectors only
        "max_text_tokens": (4, True),
        "image_layout": ("llava-next", True),
    }


def test_cli_reingest_accepts_every_vector_option_and_swaps_when_vectors_change(
    tmp_path, replica_path, adapter_path, capsys
):
    import shutil

    from e5v_qdrant.collection_model import recorded_encoder_options
    from e5v_qdrant.identity import vector_fields

    base = tmp_path / "base"
    assert run_ingest([make_corpus(tmp_path / "corpus")], base, replica_path) == 0
    with QdrantStore(StoreConfig(qdrant_path=str(base))) as store:
        old = store.resolve("docs")
    cases = _vector_option_cases(replica_path, adapter_path, tmp_path)
    cases["prompts e5v-typofix"] = ("e5v-typofix", False)  # fixes only the (query-time) composed prompt
    assert {name.split()[0] for name in cases} == set(vector_fields())  # a new vector option needs a case here
    for case, (value, changes) in cases.items():
        name = case.split()[0]
        qd = tmp_path / case.replace(" ", "-")
        shutil.copytree(base, qd)
        capsys.readouterr()
        argv = ["reingest", "--collection", "docs", "--qdrant-path", str(qd), "--device", "cpu", "--json"]
        assert main([*argv, "--" + name.replace("_", "-"), str(value)]) == 0, (case, capsys.readouterr().err)
        report = json.loads(capsys.readouterr().out)
        with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
            now = store.resolve("docs")
            recorded = recorded_encoder_options(store, "docs")
            assert store.count("docs") == report["points"] > 0
        assert (report["swapped"], report["already_current"], now != old) == (changes, not changes, changes), case
        if changes:
            assert now == report["target_collection"] and str(recorded[name]).endswith(str(value)), case


def test_cli_reingest_sigterm_reports_leaves_the_alias_and_resumes(tmp_path, replica_path, capsys):
    """SIGTERM mid-way through a (keyword-only, so model-free and quick to start) reingest: exit 143 with a JSON
    report saying so, the alias still on the old collection; the same command then resumes and swaps, and the result
    equals an uninterrupted switch in another store."""
    from slow_writes import command

    root = make_corpus(tmp_path / "corpus")
    for i in range(30):  # enough points that the slowed run takes a while
        (root / f"extra{i:02d}.txt").write_text(f"Extra note {i} about part QX-{i:04d}.\n")
    crash_qd, clean_qd = tmp_path / "crash", tmp_path / "clean"
    for qd in (crash_qd, clean_qd):
        assert run_ingest([root], qd, replica_path, "--hybrid") == 0
    switch = ["reingest", "--collection", "docs", "--sparse-encoder", "qdrant-bm25", "--json"]
    assert main([*switch, "--qdrant-path", str(clean_qd)]) == 0
    capsys.readouterr()

    cmd = [*command(0.5), *switch, "--qdrant-path", str(crash_qd), "--write-batch-size", "2", "--progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _points_read("".join(seen)) < 6:
            time.sleep(0.05)  # the progress bar (stderr) shows 6 points read: 3 slowed writes are under way
        assert proc.poll() is None, "reingest finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        proc.wait(60)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen)
    assert proc.returncode == 143, err
    stopped = json.loads(out)
    assert stopped["interrupted"] == "SIGTERM" and not stopped["swapped"] and 0 < stopped["embedded"]
    assert "interrupted (SIGTERM)" not in out
    with QdrantStore(StoreConfig(qdrant_path=str(crash_qd))) as store:
        assert store.resolve("docs") == stopped["source_collection"]  # searches still see the old collection

    assert main([*switch, "--qdrant-path", str(crash_qd)]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["swapped"] and resumed["resumed"] >= stopped["embedded"]
    assert points_of(crash_qd, vectors=True).keys() == points_of(clean_qd, vectors=True).keys()
    with (
        QdrantStore(StoreConfig(qdrant_path=str(crash_qd))) as a,
        QdrantStore(StoreConfig(qdrant_path=str(clean_qd))) as b,
    ):

        def dump(store):
            return {str(r.id): (r.payload, r.vector) for r in store.scroll(store.resolve("docs"), with_vectors=True)}

        assert dump(a) == dump(b)


def _points_read(progress: str) -> int:
    """The last count a "re-embedding: ... N/M" progress bar printed (0 before the first)."""
    import re

    counts = re.findall(r"(\d+)/\d+ \[", progress)
    return int(counts[-1]) if counts else 0


def test_reingest_bulk_load_defers_the_index_while_writing_and_restores_it(tmp_path, encoder, monkeypatch):
    """`reingest --bulk-load` on Qdrant Edge: every write into the new collection happens with HNSW m = 0 (read from
    the engine during the write), and the swapped collection has the original m back."""
    root = make_corpus(tmp_path / "corpus")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        if not store.honours_options:
            pytest.skip("local mode has no HNSW index to defer")
        ingest(_cfg(root), encoder, store, progress=False)
        m_before = store.client.get_collection(store.resolve("docs")).config.hnsw_config.m
        seen = []
        upsert = QdrantStore.upsert

        def spy(self, collection, points):
            seen.append(self.client.get_collection(collection).config.hnsw_config.m)
            return upsert(self, collection, points)

        monkeypatch.setattr(QdrantStore, "upsert", spy)
        report = reingest("docs", encoder.config, store, sparse_encoder="e5v-bm25", bulk_load=True, progress=False)
        monkeypatch.undo()
        assert report.swapped and seen and set(seen) == {0}
        assert store.client.get_collection(store.resolve("docs")).config.hnsw_config.m == m_before > 0
