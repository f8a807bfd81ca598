"""The HTTP app: OpenAI/vLLM-compatible embeddings, search over a collection, thumbnails, metrics and the page."""

from __future__ import annotations

import base64
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..anyres import image_token_count
from ..config import IngestConfig, ServeConfig
from ..errors import E5VConfigError, E5VError, E5VInputError
from ..live.config import LiveConfig
from ..media import IMAGE_SUFFIXES
from ..points import CONTENT_HASH, MODALITY, SOURCE
from ..search import search as search_collection
from ..store import CollectionMismatchError
from .batching import DynamicBatcher, QueueFullError
from .exposure import server_key
from .indexed_files import CHANGED, StaleFileError, Thumbnails, unchanged_since_ingest
from .limits import TextLimits, shown
from .live import LiveService, OutsideRootsError
from .metrics import Metrics
from .requests import (
    SEARCH_FILTERS,
    EmbeddingRequest,
    IngestRequest,
    InlineImage,
    SearchRequest,
    inline_image,
    message_texts,
    parse_messages,
)
from .served_model import advertised_identity

__all__ = ["create_app", "APIError"]

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256


class APIError(Exception):
    """A request the server refuses: HTTP status, OpenAI-style error type and a message naming what is wrong."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        self.status, self.message, self.kind = status, message, kind
        super().__init__(message)


class _BodyTooLarge(HTTPException):
    """Raised while reading a streamed body that outgrows the limit (an HTTPException, so FastAPI passes it on)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes (max_body_bytes)")


def create_app(encoder, *, store=None, config: ServeConfig | None = None, live: LiveConfig | None = None,
               ingest: IngestConfig | None = None) -> FastAPI:  # fmt: skip
    """Build the ASGI app around a loaded encoder (and optionally a store for search).

    Args:
        encoder: a loaded ``E5VEncoder``; every model call runs on one worker thread through a ``DynamicBatcher``.
        store: a ``QdrantStore`` for ``/v1/search``, thumbnails and the page; ``None`` turns search off.
        config: limits, batching and the optional bearer key (``ServeConfig``); the key is read once, here.
        live: folders to keep in sync (``--watch``) and roots ingest jobs may read (``--ingest-root``); needs
            ``store``. ingest: the ingest options of the watched folders (``server.live.LiveService``).

    Returns:
        A FastAPI app; run it with uvicorn (``e5v-qdrant serve`` does).

    Example:
        >>> app = create_app(E5VEncoder("royokong/e5-v"), config=ServeConfig())  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    config = config or ServeConfig()
    api_key = server_key(config)
    model_name = config.served_model_name or encoder.config.model
    max_pixels = encoder.config.max_image_pixels
    limits = TextLimits.for_encoder(encoder, max_tokens=config.max_input_tokens, max_chars=config.max_input_chars)
    metrics = Metrics()
    thumbnails = Thumbnails(size=THUMBNAIL_SIZE, max_pixels=max_pixels)
    batcher = DynamicBatcher(
        encoder,
        max_batch_size=config.max_batch_size,
        max_wait_ms=config.max_wait_ms,
        max_batch_tokens=config.max_coalesced_tokens,
        max_queue=config.max_queue,
        on_batch=metrics.observe_batch,
        on_wait=metrics.observe_wait,
    )
    metrics.track_queue(lambda: batcher.waiting)
    created = int(time.time())
    owner = LiveService(encoder, store, metrics, live, ingest) if store is not None else None
    identity = advertised_identity(encoder)  # the vectors' fingerprint, for remote encoders' handshake

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            if owner is not None:
                await owner.start(batcher)
            yield
        finally:  # uvicorn has finished the in-flight requests; run whatever is still queued, then stop
            if owner is not None:
                await owner.stop()  # the sync in progress finishes its writes first
            await batcher.close()

    app = FastAPI(
        title="e5v-qdrant",
        summary="E5-V embeddings (text, image, image + text) and search over Qdrant collections",
        lifespan=lifespan,
        # the interactive docs pages load their scripts from a CDN in the user's browser: off; /openapi.json is
        # served below, behind the key like every route but /health and the page
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.owner = owner

    # ------------------------------------------------------------------ errors: always a 4xx/5xx JSON body
    def error_response(status: int, message: str, kind: str) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse(
            {"error": {"message": message, "type": kind, "code": status}, "detail": message}, status_code=status
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(400, _describe_validation(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http")
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = f"{message}: {request.method} {shown(request.url.path)} (the API: GET /openapi.json)"
        elif exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's, on bad UTF-8
            message = "request body is not valid JSON (it must be UTF-8 text)"
        return error_response(exc.status_code, message, kind)

    @app.exception_handler(E5VInputError)
    async def _bad_input(request: Request, exc: E5VInputError):
        return error_response(400, str(exc), "invalid_input")

    @app.exception_handler(CollectionMismatchError)
    async def _mismatch(request: Request, exc: CollectionMismatchError):
        return error_response(409, str(exc), "collection_mismatch")

    @app.exception_handler(QueueFullError)
    async def _busy(request: Request, exc: QueueFullError):
        return error_response(503, str(exc), "overloaded")

    @app.exception_handler(OutsideRootsError)
    async def _outside(request: Request, exc: OutsideRootsError):
        return error_response(403, str(exc), "forbidden")

    @app.exception_handler(E5VError)
    async def _e5v(request: Request, exc: E5VError):
        status = 400 if isinstance(exc, E5VConfigError) else 500
        return error_response(status, str(exc), "invalid_request_error" if status == 400 else "server_error")

    def crash(path: str, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); the server is still up", "server_error")

    app.add_middleware(_Guard, max_body_bytes=config.max_body_bytes, metrics=metrics, on_crash=crash)

    # ------------------------------------------------------------------ auth
    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "unauthorized")

    guarded = [Depends(authorized)]

    # ------------------------------------------------------------------ health, models, metrics, page
    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and readiness: the model is loaded once the server accepts connections."""
        return {"status": "ok", "model": model_name, "dim": encoder.dim, "waiting_inputs": batcher.waiting}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "e5v-qdrant", **identity}],
        }

    @app.get("/metrics", dependencies=guarded)
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text("utf-8"))

    # ------------------------------------------------------------------ embeddings
    @app.post("/v1/embeddings", dependencies=guarded)
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        """OpenAI-compatible embeddings of ``input`` strings, or one vLLM-style chat ``messages`` embedding."""
        if (body.input is None) == (body.messages is None):
            raise APIError(400, "send exactly one of 'input' (string or list of strings) or 'messages' (chat style)")
        if body.dimensions is not None and body.dimensions != encoder.dim:
            raise APIError(400, f"dimensions={body.dimensions} is not supported: E5-V vectors have {encoder.dim}")
        if body.input is not None:
            texts = body.input
            if len(texts) > config.max_items:
                raise APIError(413, f"'input' has {len(texts)} items, more than max_items={config.max_items}")
            limits.check_chars(texts, "input")
            tokens = await run_in_threadpool(_text_tokens, encoder, texts)
            for i, count in enumerate(tokens):
                limits.check_tokens(count, f"input[{i}]")
            vectors = await batcher.submit("text", texts, tokens=tokens)
            metrics.items.labels("text").inc(len(texts))
        else:
            limits.check_chars("\n".join(message_texts(body.messages)), "messages text")
            convo = await run_in_threadpool(parse_messages, body.messages, max_pixels=max_pixels)
            if convo.image is None:
                tokens = await run_in_threadpool(_text_tokens, encoder, [convo.text])
                limits.check_tokens(tokens[0], "messages")
                vectors = await batcher.submit("text", [convo.text], tokens=tokens[0])
            else:
                tokens = [await run_in_threadpool(_image_tokens, encoder, convo.image, convo.text)]
                limits.check_tokens(tokens[0], "messages")
                item = convo.image.data if convo.text is None else (convo.image.data, convo.text)
                vectors = await batcher.submit(convo.kind, [item], tokens=tokens[0])
            metrics.items.labels(convo.kind).inc()
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        used = int(sum(tokens))
        # a JSONResponse skips FastAPI's response validation, which costs more than the JSON of 4096 floats per input
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.model or model_name,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    # ------------------------------------------------------------------ search, collections, thumbnails
    def need_store():
        if store is None:
            raise APIError(
                404, "search is off: start `e5v-qdrant serve` with --qdrant-path DIR or --qdrant-url URL", "not_found"
            )
        return store

    async def on_model_thread(fn, *args, **kwargs):
        """Run ``fn`` on the model worker thread (store and encoder calls of search stay on one thread)."""
        return await batcher.run(fn, *args, **kwargs)

    def known_collection(name: str) -> None:
        if need_store().resolve(name) is None:
            hint = f"`e5v-qdrant ingest PATH --collection {name}`" if len(name) <= 80 else "`e5v-qdrant ingest`"
            raise APIError(404, f"collection {shown(name)} does not exist; create it with {hint}", "not_found")

    @app.get("/v1/collections", dependencies=guarded)
    async def collections() -> dict[str, Any]:
        s = need_store()
        names = await on_model_thread(lambda: sorted(s.aliases()))
        return {"object": "list", "data": [{"name": n} for n in names]}

    @app.get("/v1/collections/{name}", dependencies=guarded)
    async def collection(name: str) -> dict[str, Any]:
        """A collection's point count and, for the watched one, its sync status (``live.SyncStatus``)."""
        s = need_store()

        def count():
            known_collection(name)
            return s.count(s.resolve(name))

        points = await on_model_thread(count)
        status = owner.collection_status(name) or {"collection": name, "watched": [], "state": "not watched"}
        return {**status, "points": points}

    @app.post("/v1/ingest", dependencies=guarded, status_code=202)
    async def ingest(body: IngestRequest) -> dict[str, Any]:
        """Start ingesting paths of this machine (under ``--ingest-root``) into a collection; poll ``/v1/jobs/{id}``."""
        need_store()
        return await run_in_threadpool(owner.start_job, body.collection, body.paths, body.options, body.encoder)

    @app.get("/v1/jobs/{job_id}", dependencies=guarded)
    async def job(job_id: str) -> dict[str, Any]:
        found = owner.job(job_id) if owner is not None else None
        if found is None:
            raise APIError(404, f"no ingest job {shown(job_id)} on this server", "not_found")
        return found

    @app.post("/v1/search", dependencies=guarded)
    async def search(body: SearchRequest) -> dict[str, Any]:
        """Nearest stored items to a text, an image (data URL), or both (composed query)."""
        s = need_store()
        if body.text is None and body.image is None:
            raise APIError(400, "give 'text', 'image' (a data:image/...;base64 URL), or both (composed query)")
        if body.top_k > config.max_top_k:
            raise APIError(400, f"top_k={body.top_k} is over max_top_k={config.max_top_k}")
        filters = _search_filters(body)
        if body.text is not None:
            limits.check_chars(body.text, "text")
        image = None
        if body.image is not None:
            image = await run_in_threadpool(inline_image, body.image, max_pixels=max_pixels, name="image")
        if image is not None:
            limits.check_tokens(await run_in_threadpool(_image_tokens, encoder, image, body.text), "query")
        elif body.text is not None:
            limits.check_tokens(await run_in_threadpool(_query_tokens, encoder, body.text), "text")
        started = time.perf_counter()

        def run():
            known_collection(body.collection)
            found = search_collection(
                s,
                encoder,
                body.collection,
                text=body.text,
                image=None if image is None else image.data,
                top_k=body.top_k,
                modality=body.modality,
                **filters,
            )
            return found, _unchanged_ids(s, body.collection, found) if found else set()

        hits, current = await on_model_thread(run)
        return {
            "object": "list",
            "collection": body.collection,
            "model": model_name,
            "seconds": round(time.perf_counter() - started, 4),
            "data": [_hit_json(body.collection, h, h.id in current) for h in hits],
        }

    @app.get("/v1/thumbnails/{collection}/{point_id}", dependencies=guarded)
    async def thumbnail(collection: str, point_id: str) -> Response:
        """A JPEG thumbnail of the image file behind one image point of ``collection``.

        The file path comes from the point's payload, never from the request, so only files the collection indexes
        can be read.
        """
        s = need_store()
        try:
            point_id = str(uuid.UUID(point_id))
        except ValueError:
            raise APIError(404, f"{shown(point_id)} is not a point id (a UUID)", "not_found") from None

        def lookup():
            known_collection(collection)
            return s.retrieve(collection, [point_id])

        records = await on_model_thread(lookup)
        payload = (records[0].payload or {}) if records else {}
        source = payload.get(SOURCE)
        if not records or payload.get(MODALITY) != "image" or not _is_image_file(source):
            raise APIError(404, f"no image point {point_id} in collection {shown(collection)}", "not_found")
        indexed_hash = payload.get(CONTENT_HASH)
        if not isinstance(indexed_hash, str):
            raise APIError(404, f"point {point_id} records no content_hash; re-ingest its file", "not_found")
        try:
            jpeg = await thumbnails.get(source, indexed_hash)
        except StaleFileError:
            raise APIError(409, f"the image file of point {point_id} has {CHANGED}", "changed_since_ingest") from None
        except E5VInputError as exc:
            raise APIError(404, f"image of point {point_id} is no longer readable: {exc.reason}", "not_found") from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    return app


# ---------------------------------------------------------------------- helpers
def _search_filters(body: SearchRequest) -> dict[str, Any]:
    """The one place filter and hybrid fields reach ``search.search`` (``where`` is already a field → value mapping)."""
    return {name: getattr(body, name) for name in SEARCH_FILTERS if getattr(body, name) is not None}


def _unchanged_ids(store, collection: str, hits) -> set[str]:
    """Ids of the ``hits`` whose file still has the stat recorded at ingest (``unchanged_since_ingest``)."""
    records = store.retrieve(collection, [h.id for h in hits])
    return {str(r.id) for r in records if unchanged_since_ingest(r.payload or {})}


def _hit_json(collection: str, hit, unchanged: bool) -> dict[str, Any]:
    """A hit as JSON; the snippet only while its file is unchanged since ingest (else ``changed_since_ingest``)."""
    row = hit.to_dict()
    text = row.pop("text", None)
    row["snippet"] = " ".join(text.split())[:400] if text and unchanged else None
    row["changed_since_ingest"] = not unchanged
    row["page"] = getattr(hit, "page", None)
    row["thumbnail_url"] = (
        f"/v1/thumbnails/{quote(collection, safe='')}/{hit.id}"
        if hit.modality == "image" and _is_image_file(hit.source)
        else None
    )
    return row


def _is_image_file(source: Any) -> bool:
    return isinstance(source, str) and source.lower().endswith(IMAGE_SUFFIXES)


def _text_tokens(encoder, texts: list[str]) -> list[int]:
    """Tokens the model reads for each text: the prompted text (chat template included), as vLLM counts usage.

    Raises:
        E5VInputError: a text is longer than the model's positions (so the request fails before it is queued).
    """
    return [len(encoder.text_input_ids(t)) for t in texts]


def _query_tokens(encoder, text: str) -> int:
    """Tokens the model reads for a search text (the query prompt, as ``search`` embeds it)."""
    return len(encoder.text_input_ids(text, query=True))


def _image_tokens(encoder, image: InlineImage, text: str | None) -> int:
    """Tokens the model reads for an image (or image + text) input: the prompt with ``<image>`` expanded to the
    image's placeholder tokens under the encoder's ``image_layout``."""
    prompt = encoder.prompts.for_image() if text is None else encoder.prompts.for_composed(text)
    placeholders = image_token_count(image.size, encoder.geometry, encoder.config.image_layout)
    return len(encoder.tokenizer(prompt)["input_ids"]) - 1 + placeholders


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's encodings: a list of floats, or base64 of the little-endian float32 bytes."""
    vector = np.asarray(vector, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    return vector.tolist()


def _describe_validation(exc: RequestValidationError) -> str:
    messages = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            return f"request body is not valid JSON ({ctx})" if ctx else "request body is not valid JSON"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "missing" and not loc:
            msg = "request body is missing; send a JSON object"
        messages.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(messages) or "invalid request"


class _Guard:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` (413), record per-route request metrics, and answer an
    unexpected error with ``on_crash(path, exc)``'s 500 on the same connection (Starlette's own last-resort handler
    re-raises after answering, and uvicorn then drops the keep-alive connection)."""

    def __init__(self, app, *, max_body_bytes: int, metrics: Metrics, on_crash):
        self.app, self.max_body_bytes, self.metrics, self.on_crash = app, max_body_bytes, metrics, on_crash

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = JSONResponse(
                {
                    "error": {
                        "message": f"request body of {int(declared)} bytes is over max_body_bytes={self.max_body_bytes}",
                        "type": "too_large",
                        "code": 413,
                    }
                },
                status_code=413,
            )
            self.metrics.errors.labels("too_large").inc()
            await response(scope, receive, send)
            self.metrics.observe_request(_route(scope), 413, time.perf_counter() - started)
            return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                started_response["yes"] = True
            await send(message)

        started_response = {"yes": False}
        try:
            await self.app(scope, limited_receive, recording_send)
        except Exception as exc:
            if started_response["yes"]:
                raise
            await self.on_crash(scope.get("path", ""), exc)(scope, receive, recording_send)
        finally:
            self.metrics.observe_request(_route(scope), status["code"], time.perf_counter() - started)


def _route(scope) -> str:
    """The route template (``/v1/thumbnails/{collection}/{point_id}``) so metrics labels stay few."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    raw = scope.get("path", "")
    return raw if raw in ("/", "/health", "/metrics", "/v1/models", "/v1/embeddings", "/v1/search") else "other"
