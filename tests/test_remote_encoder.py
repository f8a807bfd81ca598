"""Remote encoders against a real `e5v-qdrant serve` process on the tiny replica (issue 30).

The in-process ``E5VEncoder`` is the independent reference: vectors, collections and search results made through the
endpoint must equal those made in-process; an endpoint serving other vectors is refused (exit 2, naming the option).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from helpers import COMMON, make_corpus, points_of, run_ingest

from e5v_qdrant.cli import main
from e5v_qdrant.testing import draw_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "remote-k3y-never-printed-91b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(replica_path, log_path, *options):
    """`e5v-qdrant serve` on the replica as a subprocess, behind a bearer key; yields its URL."""
    port = _free_port()
    env = {**os.environ, "E5V_SERVE_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--model", str(replica_path), "--device", "cpu",
             "--dtype", "float32", "--port", str(port), "--api-key-env", "E5V_SERVE_KEY", "--max-wait-ms", "5",
             *options],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, open(log_path).read()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def server(replica_path, tmp_path_factory):
    with serving(replica_path, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("E5V_ENCODER_API_KEY", KEY)


def _cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_vectors_equal_in_process(server, key, encoder, tmp_path):
    from e5v_qdrant.remote import RemoteEncoder

    texts = ["a red bicycle leaning on a wall", "", "chunk two {braces} literally"] + [
        f"text number {i}" for i in range(20)
    ]
    images = [draw_image(336, 336, seed=1), draw_image(500, 333, seed=2), draw_image(90, 300, seed=3)]
    path = tmp_path / "wide.png"
    images[1].save(path)
    with RemoteEncoder(server) as remote:
        assert remote.advertised and remote.fingerprint["id"] == encoder.fingerprint["id"]
        assert remote.fingerprint["endpoint"] == {
            "url": server,
            "served_model": str(encoder.config.model),
            "identity": "advertised",
        }
        assert remote.dim == encoder.dim
        assert _cos(remote.embed_texts(texts), encoder.embed_texts(texts)).min() >= 0.9999
        assert _cos(remote.embed_queries(texts[:3]), encoder.embed_queries(texts[:3])).min() >= 0.9999
        got = remote.embed_images([*images, str(path), path.read_bytes()])
        want = encoder.embed_images([*images, path, path])
        assert _cos(got, want).min() >= 0.9999
        edits = ["make it blue", "", "add a dog"]
        assert _cos(remote.embed_composed(images, edits), encoder.embed_composed(images, edits)).min() >= 0.9999
        assert remote.embed_texts([]).shape == (0, encoder.dim)


def test_key_is_required_and_never_printed(server, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("E5V_ENCODER_API_KEY", raising=False)
    rc = main(["search", "anything", "--collection", "docs", "--encoder-url", server, "--qdrant-path", str(tmp_path)])
    assert rc == 2
    monkeypatch.setenv("E5V_ENCODER_API_KEY", "wrong")
    from e5v_qdrant.remote import RemoteEncoder, RemoteEncoderError

    with pytest.raises(RemoteEncoderError, match="E5V_ENCODER_API_KEY"):
        RemoteEncoder(server)
    monkeypatch.setenv("E5V_ENCODER_API_KEY", KEY)
    RemoteEncoder(server).close()
    out = capsys.readouterr()
    assert KEY not in out.out + out.err


def _search(qd, *extra):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["search", "the dog sleeps under the bench", "--collection", "docs", "--qdrant-path", str(qd),
                     "--json", "--top-k", "5", *extra]) == 0  # fmt: skip
    return [(hit["id"], round(hit["score"], 4)) for hit in __import__("json").loads(buf.getvalue())]


def test_ingest_through_serve_equals_in_process(server, key, replica_path, tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    draw_image(500, 333, seed=7).save(corpus / "pics" / "wide.png")
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert run_ingest([corpus], local, replica_path) == 0
    args = ["ingest", str(corpus), "--collection", "docs", "--qdrant-path", str(remote), *COMMON[4:]]
    assert main([*args, "--encoder-url", server, "--encoder-concurrency", "3"]) == 0
    want, got = points_of(local, vectors=True), points_of(remote, vectors=True)
    assert set(got) == set(want) and len(want) >= 8
    for pid, (payload, vector) in want.items():
        assert got[pid][0]["source"] == payload["source"]
        assert _cos(got[pid][1], vector) >= 0.9999, payload["source"]
    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore

    with QdrantStore(StoreConfig(qdrant_path=str(local))) as a, QdrantStore(StoreConfig(qdrant_path=str(remote))) as b:
        assert a.resolve("docs") == b.resolve("docs")  # the same fingerprint names the same physical collection
        assert b.stamp(b.resolve("docs")).fingerprint["endpoint"]["identity"] == "advertised"
    # a re-run through the endpoint finds everything current; searches agree either way
    assert main([*args, "--encoder-url", server]) == 0
    in_process = _search(local, "--device", "cpu", "--dtype", "float32")
    assert [h[0] for h in _search(remote, "--encoder-url", server)] == [h[0] for h in in_process]
    assert _search(local, "--encoder-url", server) == _search(remote, "--device", "cpu", "--dtype", "float32")


def test_other_identity_is_refused_exit_2(replica_path, key, tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    qd = tmp_path / "qd"
    assert run_ingest([corpus], qd, replica_path) == 0  # paper layout (the default)
    capsys.readouterr()
    with serving(replica_path, tmp_path / "serve.log", "--image-layout", "llava-next") as url:
        ingest = ["ingest", str(corpus), "--collection", "docs", "--qdrant-path", str(qd), "--encoder-url", url]
        assert main(ingest) == 2
        err = capsys.readouterr().err
        assert "image_layout 'paper' (collection) vs 'llava-next' (now)" in err
        assert main([*ingest, "--image-layout", "paper"]) == 2  # asked for what the endpoint does not serve
        assert "--image-layout 'paper' (asked) vs 'llava-next' (served)" in capsys.readouterr().err
        assert main(["search", "dog", "--collection", "docs", "--qdrant-path", str(qd), "--encoder-url", url]) == 2
        assert "image_layout" in capsys.readouterr().err
        # the same endpoint writes a new collection of its own
        assert main([*ingest[:2], "--collection", "next", *ingest[4:]]) == 0
    assert len(points_of(qd, "next")) == len(points_of(qd, "docs"))
