"""Remote encoders against a real `e5v-qdrant serve` process on the tiny replica (issue 30).

The in-process ``E5VEncoder`` is the independent reference: vectors, collections and search results made through the
endpoint must equal those made in-process; an endpoint serving other vectors is refused (exit 2, naming the option).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from helpers import COMMON, make_corpus, points_of, run_ingest
from served import free_port

from e5v_qdrant.cli import main
from e5v_qdrant.testing import draw_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "remote-k3y-never-printed-91b"


@contextlib.contextmanager
def serving(replica_path, log_path, *options):
    """`e5v-qdrant serve` on the replica as a subprocess, behind a bearer key; yields its URL."""
    port = free_port()
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
        # reingest --encoder-url moves the collection to the endpoint's vectors; then ingest through it is accepted
        assert main(["reingest", "--collection", "docs", "--qdrant-path", str(qd), "--encoder-url", url]) == 0
        assert main(ingest) == 0
    from e5v_qdrant import E5VEncoder
    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore

    llava_next = E5VEncoder(replica_path, device="cpu", dtype="float32", image_layout="llava-next")
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        assert store.stamp(store.resolve("docs")).fingerprint["id"] == llava_next.fingerprint["id"]
    images = [(p["source"], v) for p, v in points_of(qd, vectors=True).values() if p["modality"] == "image"]
    assert len(images) == 3
    for source, vector in images:
        assert _cos(vector, llava_next.embed_images([source])[0]) >= 0.9999, source


# ---------------------------------------------------------------- a foreign endpoint (a scripted stand-in for vLLM)
class _Foreign:
    """An OpenAI-compatible embeddings server that advertises no identity: answers ``fail`` 503s first, records
    every request, and embeds everything as the same 4-d vector."""

    def __init__(self, owned_by: str = "fake", fail: int = 0):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests, self.fail = [], fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "served-e5v", "owned_by": owned_by}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.headers.get("Authorization"), body))
                if outer.fail > 0:
                    outer.fail -= 1
                    return self._send(503, {"error": {"message": "busy"}})
                n = len(body["input"]) if "input" in body else 1
                data = [{"index": i, "embedding": [0.6, 0.8, 0.0, 0.0]} for i in range(n)]
                self._send(200, {"object": "list", "data": data})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


WRAP = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"


def test_foreign_endpoint_declared_identity_prompts_and_retries(replica_path, key):
    from e5v_qdrant.config import EncoderConfig
    from e5v_qdrant.identity import fingerprint
    from e5v_qdrant.remote import EndpointConfig, RemoteEncoder

    fake = _Foreign(fail=2)
    try:
        endpoint = EndpointConfig(encoder_url=fake.url + "/v1/", encoder_retries=3)
        with RemoteEncoder(endpoint, model=str(replica_path)) as remote:  # the probe is retried past two 503s
            declared = fingerprint(EncoderConfig(model=str(replica_path)), dim=4)
            assert remote.fingerprint["id"] == declared["id"] and remote.dim == 4
            assert remote.fingerprint["endpoint"] == {
                "url": fake.url, "served_model": "served-e5v", "identity": "declared", "owned_by": "fake"
            }  # fmt: skip
            fake.requests.clear()
            assert remote.embed_texts(["a cat", "two"]).shape == (2, 4)
            remote.embed_images([draw_image(50, 40, seed=1)])
            remote.embed_composed([draw_image(50, 40, seed=1)], ["make it blue"])
    finally:
        fake.close()
    auth = {a for a, _ in fake.requests}
    assert auth == {f"Bearer {KEY}"}
    texts, image, composed = (body for _, body in fake.requests)
    assert texts["model"] == "served-e5v"
    assert texts["input"] == [
        "<|start_header_id|>user<|end_header_id|>\n\na cat\nSummary above sentence in one word: <|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n \n",
        WRAP.format("two\nSummary above sentence in one word: "),
    ]
    [message] = image["messages"]
    assert message["role"] == "user" and [p["type"] for p in message["content"]] == ["image_url", "text"]
    assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert message["content"][1]["text"] == "\nSummary above image in one word: "
    parts = composed["messages"][0]["content"]
    assert parts[1] == {
        "type": "text",
        "text": 'Modify this image with "make it blue", desribe modified image in one word:',
    }


def test_foreign_endpoint_failures_are_typed(replica_path, key):
    from e5v_qdrant.errors import E5VConfigError
    from e5v_qdrant.remote import EndpointConfig, RemoteEncoder, RemoteEncoderError

    busy = _Foreign(fail=100)
    try:
        with pytest.raises(RemoteEncoderError, match="--encoder-retries"):
            RemoteEncoder(EndpointConfig(encoder_url=busy.url, encoder_retries=1), model=str(replica_path))
        assert len(busy.requests) == 2  # the first try and one retry
    finally:
        busy.close()
    vllm = _Foreign(owned_by="vllm")
    try:  # vLLM lays images out as llava-next only: a paper-layout declaration is refused, llava-next accepted
        with pytest.raises(E5VConfigError, match="--image-layout llava-next"):
            RemoteEncoder(vllm.url, model=str(replica_path))
        RemoteEncoder(vllm.url, model=str(replica_path), image_layout="llava-next").close()
    finally:
        vllm.close()
    with pytest.raises(RemoteEncoderError, match="cannot reach"):
        RemoteEncoder(EndpointConfig(encoder_url=f"http://127.0.0.1:{free_port()}", encoder_retries=0))


def test_adapters_with_an_endpoint_give_in_process_vectors(server, key, encoder, tmp_path):
    """LlamaIndex ``endpoint=``, LangChain ``base_url=`` and the Haystack embedders' ``endpoint=``: vectors equal the
    in-process encoder's, and an option the endpoint does not serve is refused."""
    from haystack import Document
    from haystack_integrations.components.embedders.e5v import (
        E5VDocumentEmbedder,
        E5VDocumentImageEmbedder,
        E5VTextEmbedder,
    )
    from langchain_e5v import E5VEmbeddings
    from llama_index.embeddings.e5v import E5VEmbedding

    from e5v_qdrant.errors import E5VConfigError

    texts = ["a cat on a warm windowsill", "two dogs chasing a ball"]
    path = tmp_path / "pic.png"
    draw_image(500, 333, seed=5).save(path)
    want_texts, want_image = encoder.embed_texts(texts), encoder.embed_images([path])[0]
    want_composed = encoder.embed_composed([path], ["make it red"])[0]

    llama = E5VEmbedding(endpoint=server)
    assert _cos(llama.get_text_embedding_batch(texts), want_texts).min() >= 0.9999
    assert _cos(llama.get_query_embedding(texts[0]), want_texts[0]) >= 0.9999
    assert _cos(llama.get_image_embedding(str(path)), want_image) >= 0.9999
    assert _cos(llama.get_composed_embedding(str(path), "make it red"), want_composed) >= 0.9999
    with pytest.raises(E5VConfigError, match="image-layout"):
        E5VEmbedding(endpoint=server, image_layout="llava-next").get_text_embedding("x")

    chain = E5VEmbeddings(base_url=server)
    assert _cos(chain.embed_documents(texts), want_texts).min() >= 0.9999
    assert _cos(chain.embed_image([str(path)]), [want_image]).min() >= 0.9999

    docs = E5VDocumentEmbedder(endpoint=server).run([Document(content=t) for t in texts])["documents"]
    assert _cos([d.embedding for d in docs], want_texts).min() >= 0.9999
    assert _cos(E5VTextEmbedder(endpoint=server).run(texts[1])["embedding"], want_texts[1]) >= 0.9999
    image_embedder = E5VDocumentImageEmbedder.from_dict(
        E5VDocumentImageEmbedder(endpoint=server, root_path=str(tmp_path)).to_dict()
    )  # the endpoint survives serialisation
    [doc] = image_embedder.run([Document(meta={"file_path": str(path)})])["documents"]
    assert _cos(doc.embedding, want_image) >= 0.9999


def test_check_endpoint_reports_identity_and_probes(server, key, encoder, capsys):
    import json

    assert main(["check-endpoint", server, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identity"] == "advertised" and report["fingerprint"] == encoder.fingerprint["id"]
    assert report["options"]["image_layout"] == "paper" and report["cosines"] is None and report["agrees"] is None
    assert main(["check-endpoint", server, "--compare", "--device", "cpu", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "identity      advertised" in out and "agrees        yes" in out
    assert out.count("vs the local model") == 3
    assert main(["check-endpoint", server, "--image-layout", "llava-next"]) == 2
    assert "--image-layout 'llava-next' (asked) vs 'paper' (served)" in capsys.readouterr().err


def test_eval_through_the_endpoint_equals_in_process(server, key, replica_path, tmp_path):
    """`eval retrieval --encoder-url`: the same numbers as in-process, and the report names the endpoint."""
    import json

    images = tmp_path / "images"
    images.mkdir()
    captions = [["a red circle", "round red shape"], ["two green squares", "green boxes"], ["a sunset", "orange sky"]]
    for i, (w, h) in enumerate([(64, 48), (48, 64), (90, 60)]):
        draw_image(w, h, seed=20 + i).save(images / f"img{i}.png")
    karpathy = {
        "dataset": "flickr30k",
        "images": [
            {"filename": f"img{i}.png", "split": "test", "sentences": [{"raw": c} for c in caps]}
            for i, caps in enumerate(captions)
        ],
    }
    (tmp_path / "karpathy.json").write_text(json.dumps(karpathy))
    data = ["retrieval", "--images", str(images), "--captions", str(tmp_path / "karpathy.json")]
    reports = {}
    for name, extra in (("local", ["--model", str(replica_path), "--device", "cpu", "--dtype", "float32"]),
                        ("remote", ["--encoder-url", server])):  # fmt: skip
        reports[name] = tmp_path / f"{name}.json"
        assert main(["eval", *data, *extra, "--report", str(reports[name])]) == 0
    local, remote = (json.loads(reports[n].read_text()) for n in ("local", "remote"))
    assert remote["metrics"] == local["metrics"] and remote["image_tokens"] == local["image_tokens"]
    assert remote["model"]["fingerprint"] == local["model"]["fingerprint"]
    assert remote["model"]["endpoint"]["identity"] == "advertised"
