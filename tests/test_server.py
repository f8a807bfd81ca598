"""`e5v-qdrant serve`: a real uvicorn server on 127.0.0.1 spoken to by real clients (openai, httpx).

References: ``E5VEncoder`` called directly for the vectors, the authors' prompt written out for token counts,
self-retrieval for search (an indexed item queried with itself is the top hit).
"""

from __future__ import annotations

import base64
import io
import json
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from served import LiveServer  # noqa: E402

from e5v_qdrant.config import IngestConfig, ServeConfig, StoreConfig  # noqa: E402
from e5v_qdrant.ingest import ingest  # noqa: E402
from e5v_qdrant.server import create_app  # noqa: E402
from e5v_qdrant.store import QdrantStore  # noqa: E402

# The authors' Llama-3 chat wrapper and text prompt (E5-V repository, README / demo), written out independently.
AUTHORS_TEXT_PROMPT = (
    "<|start_header_id|>user<|end_header_id|>\n\n{}\nSummary above sentence in one word: "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
)

TEXTS = {
    "harbour.txt": "Fishing boats rest in the harbour while gulls circle the old lighthouse at dawn.",
    "recipe.txt": "Whisk two eggs with flour and milk, then fry thin pancakes in a buttered pan.",
    "physics.txt": "A pendulum's period depends on its length and on gravity, not on its mass.",
}
COLOURS = {"red.png": (220, 30, 30), "green.png": (30, 200, 60), "blue.png": (40, 60, 220)}


def png_bytes(colour, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):  # some structure, so images differ by more than their colour
        image.putpixel((x, x % size[1]), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    image.save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, text in TEXTS.items():
        (root / name).write_text(text)
    for name, colour in COLOURS.items():
        (root / name).write_bytes(png_bytes(colour))
    return root


@pytest.fixture(scope="module")
def store(encoder, corpus):
    s = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    report = ingest(IngestConfig(collection="docs", paths=[str(corpus)]), encoder, s, progress=False)
    assert report.to_dict()["counts"]["new"] == len(TEXTS) + len(COLOURS)
    yield s
    s.close()


@pytest.fixture(scope="module")
def live(encoder, store):
    app = create_app(encoder, store=store, config=ServeConfig(max_items=8, max_body_bytes=2_000_000, max_wait_ms=20))
    with LiveServer(app) as server:
        yield server


@pytest.fixture()
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


# ---------------------------------------------------------------------- vectors equal the library's
def test_openai_client_float_and_base64_equal_encoder(live, encoder):
    texts = ["a red square", "pancakes with syrup", "a"]
    expected = encoder.embed_texts(texts)
    api = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    for fmt in ("float", "base64"):
        response = api.embeddings.create(model="e5-v", input=texts, encoding_format=fmt)
        assert response.model == "e5-v"
        got = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        if fmt == "base64":  # the client returns the base64 string as is when asked explicitly
            got = [np.frombuffer(base64.b64decode(g), dtype="<f4") for g in got]
        for g, e in zip(got, expected, strict=True):
            assert len(g) == encoder.dim
            assert cos(g, e) >= 0.9999
    # the client's default (no encoding_format) asks for base64 and decodes it itself
    single = api.embeddings.create(model="e5-v", input="a red square")
    assert cos(single.data[0].embedding, expected[0]) >= 0.9999


def test_llamaindex_and_langchain_openai_embedding_classes_unmodified(live, encoder):
    """The frameworks' own OpenAI embedding classes, pointed at the server, return the encoder's vectors."""
    docs = ["Fishing boats rest in the harbour.", "Whisk two eggs with flour."]
    expected = encoder.embed_texts(docs + ["boats at dawn"])
    llama = pytest.importorskip("llama_index.embeddings.openai")
    li = llama.OpenAIEmbedding(model_name="e5-v", api_base=live.url + "/v1", api_key="unused")
    got = li.get_text_embedding_batch(docs) + [li.get_query_embedding("boats at dawn")]
    for g, e in zip(got, expected, strict=True):
        assert cos(g, e) >= 0.9999
    lc = pytest.importorskip("langchain_openai")
    # check_embedding_ctx_length=False: send text, not tiktoken ids (token ids are refused with a 400 saying so)
    emb = lc.OpenAIEmbeddings(
        model="e5-v", base_url=live.url + "/v1", api_key="unused", check_embedding_ctx_length=False
    )
    got = emb.embed_documents(docs) + [emb.embed_query("boats at dawn")]
    for g, e in zip(got, expected, strict=True):
        assert cos(g, e) >= 0.9999


def test_usage_counts_the_prompted_tokens(client, encoder):
    texts = ["Fishing boats rest in the harbour.", "x"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "m"}).json()
    reference = sum(len(encoder.tokenizer(AUTHORS_TEXT_PROMPT.format(t))["input_ids"]) for t in texts)
    assert body["usage"] == {"prompt_tokens": reference, "total_tokens": reference}
    assert body["model"] == "m" and body["object"] == "list"


def test_vllm_style_messages_image_composed_and_text(client, encoder):
    red = png_bytes(COLOURS["red.png"])
    image_part = {"type": "image_url", "image_url": {"url": data_url(red)}}
    cases = [
        ([image_part], encoder.embed_images([red])[0]),
        ([image_part, {"type": "text", "text": "make it blue"}], encoder.embed_composed([red], ["make it blue"])[0]),
        ([{"type": "text", "text": "a blue square"}], encoder.embed_texts(["a blue square"])[0]),
        ("a blue square", encoder.embed_texts(["a blue square"])[0]),
    ]
    for content, expected in cases:
        response = client.post(
            "/v1/embeddings", json={"model": "e5-v", "messages": [{"role": "user", "content": content}]}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) == 1
        assert cos(body["data"][0]["embedding"], expected) >= 0.9999
        assert body["usage"]["prompt_tokens"] > 0
    # an image costs its placeholder tokens: far more than the prompt alone
    image_usage = client.post("/v1/embeddings", json={"messages": [{"role": "user", "content": [image_part]}]}).json()[
        "usage"
    ]["prompt_tokens"]
    assert (
        image_usage
        == encoder.count_image_tokens(red) + len(encoder.tokenizer(encoder.prompts.for_image())["input_ids"]) - 1
    )


def test_concurrent_requests_are_coalesced_and_each_gets_its_own_vector(live, encoder):
    texts = [f"sentence number {i} about {'boats' if i % 2 else 'pancakes'}" for i in range(24)]
    expected = encoder.embed_texts(texts)
    results: dict[int, list[float]] = {}

    def one(i):
        with httpx.Client(base_url=live.url, timeout=60) as c:
            results[i] = c.post("/v1/embeddings", json={"input": texts[i]}).json()["data"][0]["embedding"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        assert cos(results[i], e) >= 0.9999
    metrics = httpx.get(live.url + "/metrics").text
    sizes = _histogram(metrics, "e5v_batch_inputs", "text")
    assert sizes["count"] < sum(1 for _ in texts) + 10  # fewer calls than requests overall
    assert sizes["max_bucket_over_1"], "no encoder call held more than one request"


def _histogram(text: str, name: str, kind: str) -> dict:
    count, over_one = 0.0, False
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f'{name}_bucket{{kind="{kind}"'):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
        if line.startswith(f'{name}_count{{kind="{kind}"'):
            count = float(line.rsplit(" ", 1)[1])
    if buckets:
        over_one = buckets["+Inf"] > buckets["1.0"]
    return {"count": count, "max_bucket_over_1": over_one}


# ---------------------------------------------------------------------- bad requests: 4xx with a message, server up
def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, "PNG")  # 144 Mpx, a few KB compressed
    return out.getvalue()


BAD_REQUESTS = [
    ("invalid JSON", "/v1/embeddings", b'{"input": ["a", }', 400, "not valid JSON"),
    ("not an object", "/v1/embeddings", b'["a"]', 400, "valid dictionary"),
    ("input wrong type", "/v1/embeddings", {"input": {"a": 1}}, 400, "string or a list of strings"),
    ("item wrong type", "/v1/embeddings", {"input": ["a", None]}, 400, "item 1 must be a string"),
    ("token ids", "/v1/embeddings", {"input": [[101, 2023]]}, 400, "token-id inputs are not supported"),
    ("token ids flat", "/v1/embeddings", {"input": [101, 2023]}, 400, "token-id inputs are not supported"),
    ("empty input", "/v1/embeddings", {"input": []}, 400, "empty list"),
    ("empty string", "/v1/embeddings", {"input": ""}, 400, "empty string"),
    ("no input", "/v1/embeddings", {"model": "m"}, 400, "exactly one of 'input'"),
    ("too many items", "/v1/embeddings", {"input": ["a"] * 9}, 413, "max_items=8"),
    ("bad encoding_format", "/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ("wrong dimensions", "/v1/embeddings", {"input": "a", "dimensions": 3}, 400, "dimensions=3"),
    (
        "bad base64",
        "/v1/embeddings",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}
            ]
        },
        400,
        "invalid base64",
    ),
    (
        "not an image",
        "/v1/embeddings",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(b"hello")}}]}]},
        400,
        "not a recognised image format",
    ),
    (
        "http URL",
        "/v1/embeddings",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}
            ]
        },
        400,
        "never fetched",
    ),
    (
        "file URL",
        "/v1/embeddings",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
            ]
        },
        400,
        "file:// URLs are refused",
    ),
    ("two images", "/v1/embeddings", None, 400, "only one image"),  # body built in the test
    ("decompression bomb", "/v1/embeddings", None, 400, "too many pixels"),
    ("assistant role", "/v1/embeddings", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "only user"),
    ("unknown collection", "/v1/search", {"collection": "nope", "text": "a"}, 404, "'nope' does not exist"),
    ("search without query", "/v1/search", {"collection": "docs"}, 400, "give 'text', 'image'"),
    ("search unknown field", "/v1/search", {"collection": "docs", "text": "a", "topk": 3}, 400, "topk"),
    ("search bad modality", "/v1/search", {"collection": "docs", "text": "a", "modality": "video"}, 400, "modality"),
    ("search file URL", "/v1/search", {"collection": "docs", "image": "file:///etc/hosts"}, 400, "file://"),
    ("thumbnail path traversal", "/v1/thumbnails/docs/..%2F..%2Fetc%2Fpasswd", None, 404, "Not Found"),
    ("thumbnail not a uuid", "/v1/thumbnails/docs/passwd", None, 404, "not a point id"),
]


@pytest.mark.parametrize("name,path,body,status,message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_4xx_with_a_message_and_server_stays_up(client, name, path, body, status, message):
    if name == "two images":
        part = {"type": "image_url", "image_url": {"url": data_url(png_bytes((1, 2, 3)))}}
        body = {"messages": [{"role": "user", "content": [part, part]}]}
    elif name == "decompression bomb":
        body = {
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(_bomb())}}]}]
        }
    if path.startswith("/v1/thumbnails"):
        response = client.get(path)
    elif isinstance(body, bytes):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"], error
    assert client.get("/health").status_code == 200


def test_oversized_body_is_refused_by_declared_and_streamed_length(client):
    big = json.dumps({"input": ["x" * 3_000_000]}).encode()
    declared = client.post("/v1/embeddings", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "max_body_bytes" in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: the server counts as it reads
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    streamed = client.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "max_body_bytes" in streamed.json()["error"]["message"]
    assert client.get("/health").status_code == 200


def test_text_longer_than_the_model_fails_alone_in_a_shared_batch(live, encoder):
    """A text over the model's positions gets 400 (refused before it is queued); concurrent requests succeed."""
    too_long = "word " * (encoder.max_positions + 50)
    outcomes = {}

    def one(key, text):
        with httpx.Client(base_url=live.url, timeout=60) as c:
            outcomes[key] = c.post("/v1/embeddings", json={"input": text})

    threads = [threading.Thread(target=one, args=("bad", too_long))] + [
        threading.Thread(target=one, args=(i, f"short text {i}")) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["bad"].status_code == 400 and "positions" in outcomes["bad"].json()["error"]["message"]
    for i in range(6):
        assert outcomes[i].status_code == 200
        assert cos(outcomes[i].json()["data"][0]["embedding"], encoder.embed_texts([f"short text {i}"])[0]) >= 0.9999


# ---------------------------------------------------------------------- health, models, metrics
def test_health_models_and_metrics(client, encoder):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["dim"] == encoder.dim
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == encoder.config.model
    client.post("/v1/embeddings", json={"input": "count me"})
    client.post("/v1/embeddings", content=b"{", headers={"Content-Type": "application/json"})
    metrics = client.get("/metrics").text
    assert 'e5v_requests_total{route="/v1/embeddings",status="200"}' in metrics
    assert 'e5v_errors_total{kind="invalid_request_error"}' in metrics
    assert 'e5v_embedded_inputs_total{kind="text"}' in metrics
    assert "e5v_request_seconds_bucket" in metrics and "e5v_waiting_inputs" in metrics


# ---------------------------------------------------------------------- search and thumbnails
def test_search_text_self_retrieval_returns_snippet_and_source(client, corpus):
    text = TEXTS["recipe.txt"]
    body = client.post("/v1/search", json={"collection": "docs", "text": text, "top_k": 3}).json()
    top = body["data"][0]
    assert top["modality"] == "text" and top["source"] == str(corpus / "recipe.txt")
    assert top["snippet"] == text and top["chunk_index"] == 0 and top["thumbnail_url"] is None
    assert top["score"] > 0.999
    only_images = client.post("/v1/search", json={"collection": "docs", "text": text, "modality": "image"}).json()
    assert {h["modality"] for h in only_images["data"]} == {"image"}


def test_search_image_self_retrieval_and_its_thumbnail(client, corpus):
    green = png_bytes(COLOURS["green.png"])
    body = client.post("/v1/search", json={"collection": "docs", "image": data_url(green), "top_k": 2}).json()
    top = body["data"][0]
    assert top["modality"] == "image" and top["source"] == str(corpus / "green.png") and top["score"] > 0.999
    thumb = client.get(top["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    pixel = Image.open(io.BytesIO(thumb.content)).convert("RGB").getpixel((20, 20))
    assert max(abs(p - c) for p, c in zip(pixel, COLOURS["green.png"], strict=True)) < 12
    composed = client.post(
        "/v1/search", json={"collection": "docs", "image": data_url(green), "text": "make it red"}
    ).json()
    assert len(composed["data"]) == len(TEXTS) + len(COLOURS)  # top_k 10 > all points


def test_thumbnails_only_for_image_points_of_the_collection(client, store, corpus):
    text_point = next(r for r in store.scroll("docs") if r.payload["modality"] == "text")
    assert client.get(f"/v1/thumbnails/docs/{text_point.id}").status_code == 404
    assert client.get("/v1/thumbnails/docs/00000000-0000-0000-0000-000000000000").status_code == 404
    image_point = next(r for r in store.scroll("docs") if r.payload["modality"] == "image")
    assert client.get(f"/v1/thumbnails/other/{image_point.id}").status_code == 404
    assert client.get("/v1/thumbnails/docs/%2Fetc%2Fpasswd").status_code == 404


def test_search_filters_reach_search(client, corpus):
    """under / where / score_threshold are forwarded to ``search.search`` and narrow the hits."""
    text = TEXTS["recipe.txt"]
    under = client.post("/v1/search", json={"collection": "docs", "text": text, "under": str(corpus / "red.png")})
    assert [h["source"] for h in under.json()["data"]] == [str(corpus / "red.png")]
    where = client.post("/v1/search", json={"collection": "docs", "text": text, "where": {"modality": "image"}})
    assert {h["modality"] for h in where.json()["data"]} == {"image"} and len(where.json()["data"]) == len(COLOURS)
    best = client.post("/v1/search", json={"collection": "docs", "text": text, "score_threshold": 0.999})
    assert [h["source"] for h in best.json()["data"]] == [str(corpus / "recipe.txt")]
    bad = client.post("/v1/search", json={"collection": "docs", "text": text, "where": ["modality=image"]})
    assert bad.status_code == 400 and "where" in bad.json()["error"]["message"]


# ---------------------------------------------------------------------- auth
def test_bearer_key_from_environment(encoder, monkeypatch):
    monkeypatch.setenv("E5V_TEST_KEY", "s3cret")
    app = create_app(encoder, config=ServeConfig(api_key_env="E5V_TEST_KEY"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/v1/embeddings", json={"input": "a"}).status_code == 401
        wrong = c.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        api = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret")
        assert len(api.embeddings.create(model="x", input="a").data[0].embedding) == encoder.dim
        assert (
            c.post(
                "/v1/search", json={"collection": "d", "text": "a"}, headers={"Authorization": "Bearer s3cret"}
            ).status_code
            == 404
        )


def test_unset_key_variable_is_a_config_error(monkeypatch):
    from e5v_qdrant.errors import E5VConfigError

    monkeypatch.delenv("E5V_UNSET_KEY", raising=False)
    with pytest.raises(E5VConfigError, match="E5V_UNSET_KEY"):
        _ = ServeConfig(api_key_env="E5V_UNSET_KEY").api_key


# ---------------------------------------------------------------------- the search page in a real browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture()
def browser(tmp_path):
    import os

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_search_page_text_snippet_and_image_thumbnail(live, browser, corpus, tmp_path):
    """Type a text: its snippet and source show. Choose an image: its thumbnail shows (a loaded JPEG)."""
    import os

    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    artifacts = os.environ.get("E5V_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(artifacts, exist_ok=True)
    # the second search replaces the first one's results: an element read while they are swapped is stale, so ask again
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(live.url + "/")
    wait.until(lambda d: [o.text for o in d.find_elements(By.CSS_SELECTOR, "#collection option")] == ["docs"])

    text = TEXTS["harbour.txt"]
    browser.find_element(By.ID, "q").send_keys(text)
    browser.find_element(By.ID, "search").click()
    first = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .hit")))
    assert first.find_element(By.CLASS_NAME, "snippet").text == text
    assert str(corpus / "harbour.txt") in first.find_element(By.CLASS_NAME, "meta").text
    browser.save_screenshot(os.path.join(artifacts, "search_page_text.png"))

    browser.find_element(By.ID, "q").clear()
    file_input = browser.find_element(By.ID, "file")
    browser.execute_script("arguments[0].hidden = false", file_input)  # the drop zone's own file chooser
    file_input.send_keys(str(corpus / "blue.png"))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#drop img")))
    browser.find_element(By.ID, "search").click()
    wait.until(lambda d: "blue.png" in d.find_element(By.CSS_SELECTOR, "#results .hit .meta").text)
    loaded = "const t = document.querySelector('#results .hit img.thumb'); return t && t.complete && t.naturalWidth"
    wait.until(lambda d: d.execute_script(loaded))
    thumb = browser.find_element(By.CSS_SELECTOR, "#results .hit img.thumb")
    assert thumb.get_attribute("src").startswith("blob:")
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) == 64  # the 64x48 original, unscaled
    browser.save_screenshot(os.path.join(artifacts, "search_page_image.png"))
