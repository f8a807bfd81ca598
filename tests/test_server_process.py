"""`e5v-qdrant serve` as a real process: 127.0.0.1 by default, bearer key never printed, SIGTERM drains the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from served import free_port

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "k3y-never-printed-7f1c"


@pytest.mark.slow
def test_serve_process_key_and_graceful_sigterm(replica_path, encoder, tmp_path):
    port = free_port()
    env = {**os.environ, "E5V_SERVE_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--model", str(replica_path), "--device", "cpu",
         "--dtype", "float32", "--port", str(port), "--api-key-env", "E5V_SERVE_KEY", "--max-wait-ms", "3000"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, open(tmp_path / "serve.log").read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(url + "/v1/embeddings", json={"input": "a"}, timeout=30).status_code == 401

        texts = [f"request {i} in flight at SIGTERM" for i in range(6)]
        results = {}

        def one(i):
            results[i] = httpx.post(url + "/v1/embeddings", json={"input": texts[i]}, headers=headers, timeout=60)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        while httpx.get(url + "/health", timeout=5).json()["waiting_inputs"] < len(texts):
            assert time.monotonic() < deadline + 60, "requests did not reach the queue"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # all requests are queued in the 3 s batching window
        for t in threads:
            t.join(60)
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is -SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert all(not t.is_alive() for t in threads)
    finally:
        if proc.poll() is None:
            proc.kill()
    expected = encoder.embed_texts(texts)
    for i, e in enumerate(expected):
        assert results[i].status_code == 200, results[i].text
        got = np.asarray(results[i].json()["data"][0]["embedding"])
        assert float(got @ e / np.linalg.norm(got)) >= 0.9999
    output = open(tmp_path / "serve.log").read()
    assert f"http://127.0.0.1:{port}" in output  # uvicorn's startup line: loopback by default
    assert "Application shutdown complete" in output
    assert KEY not in output


def test_serve_refuses_an_unset_key_variable_before_loading(replica_path, monkeypatch):
    from e5v_qdrant.cli import main

    monkeypatch.delenv("E5V_NO_SUCH_KEY", raising=False)
    assert main(["serve", "--model", str(replica_path), "--api-key-env", "E5V_NO_SUCH_KEY"]) == 2
