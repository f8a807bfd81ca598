"""Issue 28's attack matrix against a real `e5v-qdrant serve` process on 127.0.0.1.

Every hostile request gets the right 4xx, the same keep-alive connection answers the next request (``auto_open = 0``:
http.client raises instead of silently reconnecting), ``/health`` stays 200 and the server log holds no traceback.
Memory is the server process's resident set read from outside through ``/proc/<pid>/status``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from e5v_qdrant.config import IngestConfig, ServeConfig, StoreConfig  # noqa: E402
from e5v_qdrant.ingest import ingest  # noqa: E402
from e5v_qdrant.store import QdrantStore  # noqa: E402

KEY = "hardening-key-5b2e"
TEXTS = {"harbour.txt": "Fishing boats rest in the harbour while gulls circle the old lighthouse at dawn."}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRSS:
    """Samples a process's RSS every few milliseconds from another thread; ``growth`` = peak minus the start."""

    def __init__(self, pid: int):
        self.pid, self.start, self.peak = pid, rss_bytes(pid), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.003)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return max(self.peak, rss_bytes(self.pid)) - self.start


class Server:
    """`python -m e5v_qdrant.cli serve` over the tiny replica and an ingested store, log in a file."""

    def __init__(self, args: list[str], log_path, env: dict[str, str]):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--port", str(self.port), *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not come up: " + self.output()
            time.sleep(0.2)

    def output(self) -> str:
        return open(self.log_path).read()

    def get(self, path: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.auto_open = 0  # a connection the server dropped raises, instead of reconnecting behind our back
        conn.connect()
        return conn

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def call(conn, method: str, path: str, body: bytes | None = None, key: str | None = KEY):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data, response.getheader("connection")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, text in TEXTS.items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def qdrant_path(encoder, corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("qdrant")
    store = QdrantStore(StoreConfig(qdrant_path=str(path)))
    try:
        ingest(IngestConfig(collection="docs", paths=[str(corpus)]), encoder, store, progress=False)
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def server(replica_path, qdrant_path, tmp_path_factory):
    # the key is exported with a trailing newline, as `export KEY=$(cat keyfile)` leaves it: stripped, clients work
    s = Server(
        ["--model", str(replica_path), "--device", "cpu", "--dtype", "float32", "--qdrant-path", str(qdrant_path),
         "--api-key-env", "E5V_HARDENING_KEY"],
        tmp_path_factory.mktemp("log") / "serve.log",
        {"E5V_HARDENING_KEY": KEY + "\n"},
    )  # fmt: skip
    yield s
    s.stop()
    assert "Traceback" not in s.output(), s.output()
    assert KEY not in s.output()


def _messages(text: str) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}


LONG_WORDS = "word " * 8300  # over the replica's 8192 positions, under the character cap (16 x 8192)

# name, method, path, raw body (bytes, sent as is), status, text the error message must hold
ATTACKS = [
    ("surrogate in input", "POST", "/v1/embeddings", b'{"input": "half an emoji \\ud83d"}', 400, "surrogate"),
    ("surrogate in input list", "POST", "/v1/embeddings", b'{"input": ["ok", "\\udc00x"]}', 400, "input[1]"),
    ("surrogate in message", "POST", "/v1/embeddings", json.dumps(_messages("a")).replace('"a"', '"\\ud800"').encode(),
     400, "surrogate"),
    ("surrogate in model", "POST", "/v1/embeddings", b'{"input": "a", "model": "\\ud800"}', 400, "model"),
    ("surrogate in search text", "POST", "/v1/search", b'{"collection": "docs", "text": "\\udfff"}', 400, "surrogate"),
    ("surrogate in a where key", "POST", "/v1/search", b'{"collection": "docs", "text": "a", "where": {"\\ud800": 1}}',
     400, "surrogate"),
    ("invalid UTF-8 bytes", "POST", "/v1/embeddings", b'{"input": "\xff\xfe"}', 400, "JSON"),
    ("text over the character cap", "POST", "/v1/embeddings", json.dumps({"input": "x" * 140_000}).encode(), 400,
     "max_input_chars"),
    ("text over the model's positions", "POST", "/v1/embeddings", json.dumps({"input": ["a", LONG_WORDS]}).encode(),
     400, "8192"),
    ("message text over the character cap", "POST", "/v1/embeddings", json.dumps(_messages("y" * 140_000)).encode(),
     400, "max_input_chars"),
    ("search text over the character cap", "POST", "/v1/search",
     json.dumps({"collection": "docs", "text": "z" * 140_000}).encode(), 400, "max_input_chars"),
    ("search text over the positions", "POST", "/v1/search",
     json.dumps({"collection": "docs", "text": LONG_WORDS}).encode(), 400, "8192"),
    ("NaN score_threshold", "POST", "/v1/search", b'{"collection": "docs", "text": "a", "score_threshold": NaN}', 400,
     "score_threshold"),
    ("empty search text", "POST", "/v1/search", b'{"collection": "docs", "text": ""}', 400, "text"),
    ("huge collection name", "POST", "/v1/search", json.dumps({"collection": "c" * 10_000, "text": "a"}).encode(), 404,
     "10000 characters"),
    ("unknown route", "GET", "/docs", None, 404, "Not Found"),
    ("no key", "POST", "/v1/embeddings", b'{"input": "a"}', 401, "API key"),
    ("openapi without the key", "GET", "/openapi.json", None, 401, "API key"),
]  # fmt: skip


def test_attack_matrix_4xx_and_the_connection_stays_usable(server):
    conn = server.connection()
    try:
        for name, method, path, body, status, needle in ATTACKS:
            key = None if name in ("no key", "openapi without the key") else KEY
            got, data, connection = call(conn, method, path, body, key=key)
            assert got == status, (name, data[:500])
            message = json.loads(data)["error"]["message"]
            assert needle in message, (name, message[:500])
            assert len(data) < 2000, (name, len(data))  # nothing echoed back at length
            assert "see /docs" not in message, name  # /docs is not served, so it is not advertised
            assert connection != "close", name
            # the same connection serves the next request
            ok, health, _ = call(conn, "GET", "/health")
            assert ok == 200, (name, health)
        # and a real embedding on it still works
        ok, data, _ = call(conn, "POST", "/v1/embeddings", b'{"input": "still here"}')
        assert ok == 200 and len(json.loads(data)["data"][0]["embedding"]) > 0
        ok, data, _ = call(conn, "GET", "/openapi.json")
        assert ok == 200 and "/v1/embeddings" in json.loads(data)["paths"]
    finally:
        conn.close()
    assert "Traceback" not in server.output()


def test_a_30_mb_text_is_refused_fast_and_cheaply(server):
    body = json.dumps({"input": "lorem ipsum " * 2_600_000}).encode()  # 31.2 MB, under the 32 MiB body limit
    assert 25_000_000 < len(body) < 35_000_000
    conn = server.connection()
    try:
        with PeakRSS(server.proc.pid) as rss:
            started = time.perf_counter()
            status, data, _ = call(conn, "POST", "/v1/embeddings", body)
            seconds = time.perf_counter() - started
        assert status == 400 and "max_input_chars" in json.loads(data)["error"]["message"]
        ok, _, _ = call(conn, "GET", "/health")
        assert ok == 200
    finally:
        conn.close()
    print(f"30 MB text: {status} in {seconds:.2f} s, peak RSS growth {rss.growth / 2**20:.0f} MiB")
    assert seconds < 10
    assert rss.growth < 400 * 2**20


def test_non_loopback_bind_without_a_key_exits_2_naming_both_ways_out(replica_path):
    env = {k: v for k, v in os.environ.items() if k != "E5V_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--model", str(replica_path), "--host", "0.0.0.0",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--api-key-env" in done.stderr and "--allow-unauthenticated" in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout


def test_allow_unauthenticated_logs_a_warning_and_loopback_needs_nothing(caplog):
    from e5v_qdrant.errors import E5VConfigError
    from e5v_qdrant.server.exposure import check_exposure

    check_exposure(ServeConfig(host="127.0.0.1"), None)
    check_exposure(ServeConfig(host="::1"), None)
    check_exposure(ServeConfig(host="10.0.0.5"), "some key")
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.org"):
        with pytest.raises(E5VConfigError, match="allow-unauthenticated"):
            check_exposure(ServeConfig(host=host), None)
    with caplog.at_level("WARNING"):
        check_exposure(ServeConfig(host="0.0.0.0", allow_unauthenticated=True), None)
    assert "WITHOUT an API key" in caplog.text


def test_a_key_of_only_whitespace_is_refused(monkeypatch):
    from e5v_qdrant.errors import E5VConfigError
    from e5v_qdrant.server.exposure import server_key

    monkeypatch.setenv("E5V_BLANK_KEY", " \n")
    with pytest.raises(E5VConfigError, match="whitespace"):
        server_key(ServeConfig(api_key_env="E5V_BLANK_KEY"))
    monkeypatch.setenv("E5V_BLANK_KEY", "  abc\n")
    assert server_key(ServeConfig(api_key_env="E5V_BLANK_KEY")) == "abc"
