"""The vLLM recipe (issue 30): the E5-V chat template, the vLLM-compatible replica and, with a vLLM virtualenv
(``E5V_VLLM_PYTHON=/path/to/vllm-venv/bin/python``, made by ``e5v_qdrant/vllm/setup_cpu_venv.sh``), a real vLLM server:
its vectors equal ``E5VEncoder(image_layout="llava-next")`` and ingest through it equals in-process ingest.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import warnings

import httpx
import numpy as np
import pytest
from helpers import COMMON, make_corpus, points_of, run_ingest

from e5v_qdrant.cli import main
from e5v_qdrant.testing import ReplicaSpec, build_replica, draw_image

VLLM_PYTHON = os.environ.get("E5V_VLLM_PYTHON")
needs_vllm = pytest.mark.skipif(not VLLM_PYTHON, reason="set E5V_VLLM_PYTHON to the python of a vLLM virtualenv")

#: E5-V's prompts written out (E5V_REFERENCE.md §1), with the BOS a chat template must add itself.
BOS_WRAP = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n \n"
)


def test_chat_template_renders_e5v_prompts():
    jinja2 = pytest.importorskip("jinja2")
    from e5v_qdrant.vllm import chat_template

    template = jinja2.Environment().from_string(chat_template())

    def render(content):
        return template.render(bos_token="<|begin_of_text|>", messages=[{"role": "user", "content": content}])

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    assert render([image, {"type": "text", "text": "\nSummary above image in one word: "}]) == BOS_WRAP.format(
        "<image>\nSummary above image in one word: "
    )
    composed = [image, {"type": "text", "text": 'Modify this image with "red", desribe modified image in one word:'}]
    assert render(composed) == BOS_WRAP.format(
        '<image>Modify this image with "red", desribe modified image in one word:'
    )
    assert render("a cat\nSummary above sentence in one word: ") == BOS_WRAP.format(
        "a cat\nSummary above sentence in one word: "
    )


def test_vllm_compatible_replica(tmp_path):
    """Head size 32, the published weight names (which vLLM alone loads), the chat template saved with the tokenizer;
    in-process vectors equal those of the same replica saved with transformers' own names."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from e5v_qdrant import E5VEncoder

    spec = ReplicaSpec.vllm_compatible()
    hub = build_replica(tmp_path / "hub", spec)
    plain = build_replica(tmp_path / "plain", ReplicaSpec(**{**spec.__dict__, "legacy_weight_names": False}))
    assert spec.hidden_size // spec.num_attention_heads >= 32 and spec.vision_hidden_size // spec.vision_heads >= 32
    with safe_open(str(hub / "model.safetensors"), "pt") as f:
        prefixes = {".".join(k.split(".")[:2]) for k in f.keys()}
    assert {"vision_tower.vision_model", "language_model.model", "language_model.lm_head"} <= prefixes
    assert not any(p.startswith(("model.", "vision_tower.embeddings")) for p in prefixes)
    assert AutoTokenizer.from_pretrained(hub).chat_template.startswith("{#- E5-V's exact chat wrapper")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = E5VEncoder(hub, device="cpu", dtype="float32", image_layout="llava-next")
        b = E5VEncoder(plain, device="cpu", dtype="float32", image_layout="llava-next")
    images = [draw_image(500, 333, seed=2)]
    np.testing.assert_allclose(a.embed_texts(["a cat"]), b.embed_texts(["a cat"]), atol=1e-6)
    np.testing.assert_allclose(a.embed_images(images), b.embed_images(images), atol=1e-6)


# ---------------------------------------------------------------- a real vLLM server (E5V_VLLM_PYTHON)
@pytest.fixture(scope="module")
def vllm_replica(tmp_path_factory):
    return build_replica(tmp_path_factory.mktemp("vllm") / "e5v-tiny-vllm", ReplicaSpec.vllm_compatible())


@pytest.fixture(scope="module")
def vllm_server(vllm_replica, tmp_path_factory):
    from e5v_qdrant.vllm import serve_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    command = serve_command(vllm_replica, python=VLLM_PYTHON, port=port, dtype="float32", memory_fraction=0.06)
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 900
            while True:
                assert proc.poll() is None, open(log_path).read()[-5000:]
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "vLLM did not come up"
                time.sleep(1)
            yield url
        finally:
            os.killpg(proc.pid, 15)  # its engine core and worker processes too
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@needs_vllm
def test_vllm_vectors_equal_llava_next_encoder(vllm_server, vllm_replica):
    from e5v_qdrant import E5VEncoder
    from e5v_qdrant.remote import RemoteEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = E5VEncoder(vllm_replica, device="cpu", dtype="float32", image_layout="llava-next")
    texts = ["a red bicycle leaning on a wall", "", "the invoice was charged twice"]
    sizes = [(336, 336), (500, 333), (333, 500), (1000, 300), (60, 40)]
    images = [draw_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    edits = ["make it blue", "add a dog", "", "remove the sky", "night"]
    with RemoteEncoder(vllm_server, model=str(vllm_replica), image_layout="llava-next") as remote:
        assert remote.fingerprint["id"] == local.fingerprint["id"]
        assert remote.fingerprint["endpoint"]["identity"] == "declared"
        assert remote.fingerprint["endpoint"]["owned_by"] == "vllm"
        assert _cos(remote.embed_texts(texts), local.embed_texts(texts)).min() >= 0.9999
        assert _cos(remote.embed_images(images), local.embed_images(images)).min() >= 0.9999
        assert _cos(remote.embed_composed(images, edits), local.embed_composed(images, edits)).min() >= 0.9999


@needs_vllm
def test_ingest_through_vllm_equals_in_process(vllm_server, vllm_replica, tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert run_ingest([corpus], local, vllm_replica, "--image-layout", "llava-next") == 0
    ingest = ["ingest", str(corpus), "--collection", "docs", "--qdrant-path", str(remote), *COMMON[4:]]
    ingest += ["--model", str(vllm_replica), "--encoder-url", vllm_server]
    capsys.readouterr()
    assert main(ingest) == 2  # the paper layout (the default) is not what vLLM makes: refused, named
    assert "--image-layout llava-next" in capsys.readouterr().err
    assert main([*ingest, "--image-layout", "llava-next"]) == 0
    want, got = points_of(local, vectors=True), points_of(remote, vectors=True)
    assert set(got) == set(want) and len(want) >= 8
    for pid, (payload, vector) in want.items():
        assert _cos(got[pid][1], vector) >= 0.9999, payload["source"]
    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore

    with QdrantStore(StoreConfig(qdrant_path=str(local))) as a, QdrantStore(StoreConfig(qdrant_path=str(remote))) as b:
        assert a.resolve("docs") == b.resolve("docs")
        stamp = b.stamp(b.resolve("docs")).fingerprint["endpoint"]
        assert stamp == {
            "url": vllm_server,
            "served_model": str(vllm_replica),
            "identity": "declared",
            "owned_by": "vllm",
        }
