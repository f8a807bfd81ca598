"""`e5v-qdrant ingest / search / collections` end to end on the embedded store (tiny replica).

Covers: bad-input corpus → every bad file listed, good ones stored, exit 1; transient faults retried and logged;
permanent errors exit 2 fast; model mismatch refused; SIGKILL mid-run then re-run == clean run; the CLI-built
collection read through stock LlamaIndex ``QdrantVectorStore`` + ``E5VEmbedding``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest
import slow_writes
from helpers import COMMON, FlakyClient, make_corpus, points_of, run_ingest
from PIL import Image
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

from e5v_qdrant.cli import main
from e5v_qdrant.store import engines as store_module
from e5v_qdrant.testing import draw_image


def test_bad_inputs_are_listed_good_ones_stored_exit_1(tmp_path, replica_path, capsys):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "good.txt").write_text("A perfectly fine document about sailing boats on a calm lake.")
    draw_image(60, 40, seed=4).save(root / "good.png")
    (root / "latin1.txt").write_bytes("Cr\u00e8me br\u00fbl\u00e9e is a dessert.".encode("latin-1"))
    png = tmp_path / "x.png"
    draw_image(300, 200, seed=5).save(png)
    bad = {
        "zero.png": b"",
        "truncated.png": png.read_bytes()[: len(png.read_bytes()) // 2],
        "corrupt.jpg": b"this is text saved with an image suffix" * 10,
        "empty.txt": b"  \n\n  ",
        "binary.txt": b"\x00\x01\x02 binary",
        "notes.xyz": b"unsupported",
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    Image.new("1", (10_000, 10_000)).save(root / "bomb.png")  # 100 Mpx > the 89.5 Mpx guard, a few KB on disk
    os.mkfifo(root / "pipe.txt")
    os.symlink(root / "loop-b.txt", root / "loop-a.txt")
    os.symlink(root / "loop-a.txt", root / "loop-b.txt")
    os.symlink(root / "missing.txt", root / "dangling.txt")
    os.symlink(root, root / "dirloop")
    report_file = tmp_path / "report.json"

    rc = run_ingest([root], tmp_path / "qd", replica_path, "--report", str(report_file), "--json")
    assert rc == 1
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(report_file.read_text())
    assert printed == report
    reasons = {os.path.basename(s["source"]): s["reason"] for s in report["skipped_inputs"]}
    expected = {
        "zero.png": "zero bytes",
        "truncated.png": "truncated",
        "corrupt.jpg": "not a recognised image",
        "empty.txt": "empty document",
        "binary.txt": "binary",
        "notes.xyz": "unsupported file type",
        "bomb.png": "decompression bomb",
        "pipe.txt": "not a regular file",
        "loop-a.txt": "symlink loop",
        "loop-b.txt": "symlink loop",
        "dangling.txt": "no such file",
        "dirloop": "symlink loop",
    }
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert report["counts"]["skipped"] == len(expected)
    assert [os.path.basename(w["source"]) for w in report["warnings"]] == ["latin1.txt"]
    stored = {os.path.basename(p["source"]) for p in points_of(tmp_path / "qd").values()}
    assert stored == {"good.txt", "good.png", "latin1.txt"}


def test_search_and_collections_commands_use_the_recorded_model(tmp_path, replica_path, capsys):
    root = make_corpus(tmp_path / "corpus")
    qd = tmp_path / "qd"
    assert run_ingest([root], qd, replica_path, "--json") == 0
    capsys.readouterr()
    payloads = points_of(qd)
    pid, payload = next((k, v) for k, v in payloads.items() if v["source"].endswith("page.html"))
    text = json.loads(payload["_node_content"])["text"]
    # no --model: the collection's recorded model is loaded
    assert (
        main(
            [
                "search",
                text,
                "--collection",
                "docs",
                "--qdrant-path",
                str(qd),
                "--device",
                "cpu",
                "--json",
                "--top-k",
                "3",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == pid and hits[0]["text"] == text and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    image = str(root / "pics" / "two.jpg")
    assert main(["search", "--image", image, "--collection", "docs", "--qdrant-path", str(qd), "--device", "cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[1:] == ["image", image] and float(first[0]) == pytest.approx(1.0, abs=1e-4)
    assert main(["collections", "--qdrant-path", str(qd), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["aliases"] == ["docs"] and row["points"] == len(payloads) and row["model"] == str(replica_path)
    assert row["collection"] == f"docs-e5v-{row['fingerprint']}"
    # errors are exit 2 with a readable message
    assert main(["search", "--collection", "docs", "--qdrant-path", str(qd)]) == 2
    assert main(["search", "x", "--collection", "nope", "--qdrant-path", str(qd)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_other_model_is_refused_with_exit_2(tmp_path, replica_path, capsys):
    root = make_corpus(tmp_path / "corpus")
    qd = tmp_path / "qd"
    assert run_ingest([root / "food.md"], qd, replica_path) == 0
    capsys.readouterr()
    # other stored prompts (image body) = other vectors, even with the same weights
    assert run_ingest([root / "food.md"], qd, replica_path, "--prompts", "e5v-cirr-target") == 2
    err = capsys.readouterr().err
    assert "new collection" in err and "e5v-qdrant reingest" in err


def test_transient_faults_are_retried_and_permanent_ones_exit_2(tmp_path, replica_path, monkeypatch, caplog, capsys):
    root = make_corpus(tmp_path / "corpus")
    real_open = store_module.open_client
    monkeypatch.setattr(store_module, "open_client", lambda cfg: FlakyClient(real_open(cfg), "upsert", fail=2))
    with caplog.at_level(logging.WARNING, logger="e5v_qdrant.store"):
        assert run_ingest([root], tmp_path / "qd", replica_path) == 0
    assert sum("retrying upserting" in r.getMessage() for r in caplog.records) == 2
    clean_qd = tmp_path / "clean"
    monkeypatch.setattr(store_module, "open_client", real_open)
    assert run_ingest([root], clean_qd, replica_path) == 0
    assert points_of(tmp_path / "qd") == points_of(clean_qd)

    bad = UnexpectedResponse(400, "Bad Request", b'{"status":{"error":"Wrong input: payload too large"}}', None)
    monkeypatch.setattr(
        store_module, "open_client", lambda cfg: FlakyClient(real_open(cfg), "upsert", fail=99, exc=bad)
    )
    capsys.readouterr()
    start = time.perf_counter()
    rc = main(
        [
            "ingest",
            str(root),
            "--collection",
            "fresh",
            "--qdrant-path",
            str(tmp_path / "qd3"),
            "--model",
            str(replica_path),
            *COMMON[:-2],
            "--retry-wait",
            "20",
        ]
    )
    assert rc == 2 and time.perf_counter() - start < 30  # a single retry would have slept 20 s
    err = capsys.readouterr().err
    assert (
        "e5v-qdrant ingest: error: Qdrant refused upserting" in err and "HTTP 400" in err and "payload too large" in err
    )


def _stored_count(qd) -> int:
    files = glob.glob(str(qd / "collection" / "*" / "storage.sqlite"))
    if not files:
        return 0
    try:
        with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # a child process must import torch and load the model before it can be killed
def test_sigkill_mid_run_then_rerun_equals_clean_run(tmp_path, replica_path):
    root = make_corpus(tmp_path / "corpus")
    clean_qd, crash_qd = tmp_path / "clean", tmp_path / "crash"
    assert run_ingest([root], clean_qd, replica_path) == 0
    clean = points_of(clean_qd, vectors=True)
    assert len(clean) > 10

    # each 2-point write waits 1 s: counting an Edge store (a folder copy) can take seconds on a busy machine
    cmd = slow_writes.slow_ingest(root, crash_qd, replica_path, delay=1.0)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # the child loads torch and the model first: slow on a busy machine
        while _stored_count(crash_qd) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = _stored_count(crash_qd)
    assert 0 < partial < len(clean)

    assert run_ingest([root], crash_qd, replica_path) == 0
    resumed = points_of(crash_qd, vectors=True)
    assert resumed.keys() == clean.keys()
    for pid, (payload, vector) in clean.items():
        assert resumed[pid][0] == payload
        np.testing.assert_allclose(resumed[pid][1], vector, atol=1e-5)


@pytest.mark.local_mode_only  # Edge folders: QdrantEdgeVectorStore (integrations/llama-index-vector-stores-qdrant-edge)
def test_cli_collection_is_readable_by_stock_llamaindex_qdrant_vector_store(tmp_path, replica_path):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import ImageNode, TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.embeddings.e5v import E5VEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    root = make_corpus(tmp_path / "corpus")
    qd = tmp_path / "qd"
    assert run_ingest([root], qd, replica_path) == 0
    stored = points_of(qd)
    chunk_id, chunk = next((k, v) for k, v in stored.items() if v["source"].endswith("food.md"))
    chunk_text = json.loads(chunk["_node_content"])["text"]

    client = QdrantClient(path=str(qd))
    try:
        vector_store = QdrantVectorStore(client=client, collection_name="docs")  # the alias the CLI was given
        embed = E5VEmbedding(model_name=str(replica_path), device="cpu", dtype="float32")
        index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed)
        results = index.as_retriever(similarity_top_k=3).retrieve(chunk_text)
        top = results[0]
        assert top.node.node_id == chunk_id and isinstance(top.node, TextNode)
        assert top.node.get_content() == chunk_text and top.node.metadata["source"] == str(root / "food.md")
        assert top.score == pytest.approx(1.0, abs=1e-4)

        image = root / "pics" / "three.webp"
        result = vector_store.query(
            VectorStoreQuery(query_embedding=embed.get_image_embedding(str(image)), similarity_top_k=1)
        )
        node = result.nodes[0]
        assert isinstance(node, ImageNode) and node.image_path == str(image) and node.metadata["modality"] == "image"
        assert result.ids[0] in stored and stored[result.ids[0]]["source"] == str(image)
    finally:
        client.close()


def test_relative_model_folder_is_recorded_absolute(tmp_path, replica_path, monkeypatch, capsys):
    root = make_corpus(tmp_path / "corpus")
    qd = tmp_path / "qd"
    monkeypatch.chdir(replica_path.parent)
    assert run_ingest([root / "food.md"], qd, replica_path.name) == 0  # --model e5v-tiny (relative)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    # from another directory: the recorded model still loads, and the same model given absolutely is accepted
    assert main(["search", "flour", "--collection", "docs", "--qdrant-path", str(qd), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == str(root / "food.md")
    assert run_ingest([root / "food.md"], qd, replica_path) == 0
