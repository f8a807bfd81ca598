"""Issue 28's attack matrix against a real `e5v-qdrant serve` process on 127.0.0.1.

Every hostile request gets the right 4xx, the same keep-alive connection answers the next request (``auto_open = 0``:
http.client raises instead of silently reconnecting), ``/health`` stays 200 and the server log holds no traceback.
Memory is the server process's resident set read from outside through ``/proc/<pid>/status``.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing

import numpy as np
import pytest
from PIL import Image
from served import free_port

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from e5v_qdrant.config import IngestConfig, ServeConfig, StoreConfig  # noqa: E402
from e5v_qdrant.ingest import ingest  # noqa: E402
from e5v_qdrant.store import QdrantStore  # noqa: E402

KEY = "hardening-key-5b2e"
TEXTS = {
    "harbour.txt": "Fishing boats rest in the harbour while gulls circle the old lighthouse at dawn.",
    "will_change.txt": "The recipe calls for two eggs, flour and a pinch of salt.",
}
BIG_SIDE = 9300  # 86.5 megapixels, under the 89.5-megapixel default limit


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def big_png() -> bytes:
    return png(Image.new("RGB", (BIG_SIDE, BIG_SIDE), (90, 140, 200)))  # ~250 KB on disk, 260 MB decoded


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
    (root / "transparent.png").write_bytes(png(Image.new("RGBA", (40, 30), (0, 0, 0, 0))))
    (root / "will_change.png").write_bytes(png(Image.new("RGB", (40, 30), (200, 30, 30))))
    (root / "big.png").write_bytes(big_png())
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
    # no --model: the one recorded in the collection (the replica) is served, as `search` would use it.
    # The key is exported with a trailing newline, as `export KEY=$(cat keyfile)` leaves it: stripped, clients work.
    s = Server(
        ["--device", "cpu", "--dtype", "float32", "--qdrant-path", str(qdrant_path), "--server-api-key-env",
         "E5V_HARDENING_KEY"],
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


def test_serve_without_model_serves_the_collections_recorded_model(server, replica_path):
    with closing(server.connection()) as conn:
        status, data, _ = call(conn, "GET", "/v1/models")
    assert status == 200 and json.loads(data)["data"][0]["id"] == str(replica_path)


def test_collections_of_different_models_need_an_explicit_model():
    from types import SimpleNamespace

    from e5v_qdrant.errors import E5VConfigError
    from e5v_qdrant.server.served_model import served_encoder_config

    class Store:  # two collections stamped with different models
        def __init__(self, models):
            self.models = models

        def aliases(self):
            return {alias: alias + "-phys" for alias in self.models}

        def resolve(self, name):
            return self.aliases().get(name)

        def stamp(self, physical):
            return SimpleNamespace(encoder={"model": self.models[physical.removesuffix("-phys")], "adapter": None})

    with pytest.raises(E5VConfigError, match=r"docs: org/model-a; pics: org/model-b.*--model"):
        served_encoder_config(Store({"docs": "org/model-a", "pics": "org/model-b"}), {})
    assert served_encoder_config(Store({"docs": "org/a", "pics": "org/b"}), {"model": "org/b"}).model == "org/b"
    assert served_encoder_config(Store({"docs": "org/a", "pics": "org/a"}), {}).model == "org/a"
    assert served_encoder_config(Store({}), {}).model == "royokong/e5-v"


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


def search_hits(conn, text: str) -> list[dict]:
    body = json.dumps({"collection": "docs", "text": text, "top_k": 20}).encode()
    status, data, _ = call(conn, "POST", "/v1/search", body)
    assert status == 200, data
    return json.loads(data)["data"]


def test_changed_files_get_no_thumbnail_and_no_snippet(server, corpus):
    conn = server.connection()
    try:
        hits = {os.path.basename(h["source"]): h for h in search_hits(conn, "eggs")}
        assert hits["will_change.txt"]["snippet"] == TEXTS["will_change.txt"]
        assert hits["will_change.txt"]["changed_since_ingest"] is False
        url = hits["will_change.png"]["thumbnail_url"]
        status, jpeg, _ = call(conn, "GET", url)
        assert status == 200 and Image.open(io.BytesIO(jpeg)).format == "JPEG"

        (corpus / "will_change.png").write_bytes(png(Image.new("RGB", (40, 30), (10, 10, 240))))  # another picture
        (corpus / "will_change.txt").write_text("Now this file holds something else entirely.")
        status, data, _ = call(conn, "GET", url)
        assert status == 409 and "changed since ingest" in json.loads(data)["error"]["message"]
        changed = {os.path.basename(h["source"]): h for h in search_hits(conn, "eggs")}
        assert changed["will_change.txt"]["snippet"] is None
        assert changed["will_change.txt"]["changed_since_ingest"] is True
        assert changed["harbour.txt"]["snippet"] == TEXTS["harbour.txt"]  # unchanged files keep theirs

        (corpus / "will_change.png").unlink()
        status, data, _ = call(conn, "GET", url)
        assert status == 404 and "no longer readable" in json.loads(data)["error"]["message"]
    finally:
        conn.close()


def test_transparent_png_thumbnail_is_on_white(server):
    conn = server.connection()
    try:
        hits = {os.path.basename(h["source"]): h for h in search_hits(conn, "a picture")}
        status, jpeg, _ = call(conn, "GET", hits["transparent.png"]["thumbnail_url"])
        assert status == 200
        pixel = Image.open(io.BytesIO(jpeg)).convert("RGB").getpixel((20, 15))
        assert min(pixel) > 245, pixel  # white, as a browser shows transparency, not the black RGB underneath
    finally:
        conn.close()


def test_six_concurrent_thumbnails_of_an_86_megapixel_png_cost_one_decode(server):
    with closing(server.connection()) as conn:
        url = next(h for h in search_hits(conn, "big") if h["source"].endswith("big.png"))["thumbnail_url"]
    results = []

    def one():
        with closing(server.connection()) as c:
            results.append(call(c, "GET", url)[0])

    with PeakRSS(server.proc.pid) as rss:
        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert results == [200] * 6
    print(f"6 thumbnails of an 86-megapixel PNG: peak RSS growth {rss.growth / 2**20:.0f} MiB")
    assert rss.growth < 0.5 * 2**30


def test_three_concurrent_86_megapixel_images_stay_under_1_2_gb(server):
    message = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(big_png()).decode()}}
    ]}]}  # fmt: skip
    body = json.dumps(message).encode()
    results = []

    def one():
        with closing(server.connection(timeout=300)) as c:
            status, data, _ = call(c, "POST", "/v1/embeddings", body)
            results.append((status, len(json.loads(data)["data"][0]["embedding"]) if status == 200 else data))

    with PeakRSS(server.proc.pid) as rss:
        started = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        seconds = time.perf_counter() - started
    assert [r[0] for r in results] == [200] * 3, results
    print(f"3 concurrent 86-megapixel images: {seconds:.1f} s, peak RSS growth {rss.growth / 2**20:.0f} MiB")
    assert rss.growth < 1.2 * 2**30


@pytest.mark.slow
def test_a_two_word_request_is_not_held_behind_a_250k_token_one(server):
    """32 texts of ~7.6k tokens (~245k tokens) in one request; 2 words sent 1 s later finish in <= 25% of its time."""
    big = json.dumps({"input": ["word " * 7600] * 32}).encode()
    outcome = {}

    def run_big():
        with closing(server.connection(timeout=600)) as c:
            started = time.perf_counter()
            status, data, _ = call(c, "POST", "/v1/embeddings", big)
            outcome["big"] = (status, time.perf_counter() - started, json.loads(data))

    thread = threading.Thread(target=run_big)
    thread.start()
    time.sleep(1.0)
    with closing(server.connection()) as conn:
        started = time.perf_counter()
        status, data, _ = call(conn, "POST", "/v1/embeddings", b'{"input": "two words"}')
        small_seconds = time.perf_counter() - started
        assert status == 200
    thread.join(600)
    big_status, big_seconds, body = outcome["big"]
    assert big_status == 200 and len(body["data"]) == 32 and body["usage"]["prompt_tokens"] > 240_000
    with closing(server.connection()) as conn:  # a new one: uvicorn closes connections idle for 5 s
        _, metrics, _ = call(conn, "GET", "/metrics")
    print(
        f"2-word request {small_seconds:.2f} s while a {body['usage']['prompt_tokens']}-token one took {big_seconds:.1f} s"
    )
    assert small_seconds <= 0.25 * big_seconds
    text = metrics.decode()
    assert 'e5v_queue_wait_seconds_count{size="<=512"}' in text and 'e5v_queue_wait_seconds_count{size=">32k"}' in text


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
    assert "--server-api-key-env" in done.stderr and "--allow-unauthenticated" in done.stderr
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


def test_thumbnail_of_a_big_jpeg_is_decoded_small_and_matches_a_full_decode():
    from e5v_qdrant.media import load_thumbnail

    side = 6000  # 36 megapixels: 108 MB decoded in full, ~1.7 MB at the 1/8 scale draft mode picks
    gradient = Image.linear_gradient("L").resize((side, side))
    source = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), Image.new("L", (side, side), 90))
    )
    out = io.BytesIO()
    source.save(out, "JPEG", quality=90)
    data = out.getvalue()
    del source, gradient
    reference = Image.open(io.BytesIO(data))
    reference.load()
    reference.thumbnail((256, 256))
    with PeakRSS(os.getpid()) as rss:
        thumb = load_thumbnail(data, size=256, max_pixels=None, name="big.jpg")
    assert thumb.size == reference.size == (256, 256) and thumb.mode == "RGB"
    diff = np.abs(np.asarray(thumb, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert diff.mean() < 3  # the same picture, to JPEG noise
    assert rss.growth < 40 * 2**20, rss.growth  # a full decode alone is 108 MB


def test_image_size_reads_the_upright_size_from_the_header():
    from e5v_qdrant.media import image_size, load_image

    image = Image.new("RGB", (64, 32), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 64 wide, shown 32 wide
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    decoded = load_image(out.getvalue())
    assert image_size(out.getvalue(), max_pixels=None, name="x") == (decoded.height, decoded.width) == (64, 32)
    plain = png(image)
    assert image_size(plain, max_pixels=None, name="x") == (32, 64)


def test_an_unexpected_error_is_a_500_on_a_connection_that_stays_open(encoder, caplog):
    """A bug (here: a store that raises) answers 500 and the keep-alive connection serves the next request."""
    import uvicorn

    from e5v_qdrant.server import create_app

    class BrokenStore:
        def aliases(self):
            raise RuntimeError("disk on fire")

    app = create_app(encoder, store=BrokenStore(), config=ServeConfig())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=30)
        conn.auto_open = 0
        conn.connect()
        with caplog.at_level("ERROR"):
            status, data, connection = call(conn, "GET", "/v1/collections", key=None)
        assert status == 500 and "RuntimeError" in json.loads(data)["error"]["message"]
        assert "disk on fire" not in data.decode()  # the exception's text stays in the log
        assert "disk on fire" in caplog.text
        assert call(conn, "GET", "/health", key=None)[0] == 200  # same connection
        conn.close()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


async def test_thumbnail_cache_makes_each_content_once_and_stays_bounded(tmp_path):
    import asyncio
    import hashlib

    from e5v_qdrant.server.indexed_files import StaleFileError, Thumbnails

    paths, hashes = [], []
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        data = png(Image.new("RGB", (300, 200), colour))
        path = tmp_path / f"{i}.png"
        path.write_bytes(data)
        paths.append(str(path))
        hashes.append(hashlib.sha256(data).hexdigest())
    thumbs = Thumbnails(max_pixels=None, max_cache_bytes=1)  # room for one thumbnail only
    got = await asyncio.gather(*(thumbs.get(paths[0], hashes[0]) for _ in range(6)))
    assert thumbs.made == 1 and len(set(got)) == 1  # six concurrent requests, one decode
    assert Image.open(io.BytesIO(got[0])).size == (256, 171)
    await thumbs.get(paths[0], hashes[0])
    assert thumbs.made == 1  # cached
    await thumbs.get(paths[1], hashes[1])
    await thumbs.get(paths[0], hashes[0])
    assert thumbs.made == 3  # the bound dropped the first when the second came
    with pytest.raises(StaleFileError, match="changed since ingest"):
        await thumbs.get(paths[2], hashes[0])  # a file whose content is not the indexed one
