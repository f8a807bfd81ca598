"""`e5v-qdrant serve`: an OpenAI/vLLM-compatible embedding server with dynamic batching, search API and page.

Needs the ``serve`` extra: ``pip install 'e5v-qdrant[serve]'`` (FastAPI, uvicorn, prometheus-client).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import EncoderConfig, IngestConfig, ServeConfig, StoreConfig
from ..live.config import LiveConfig

__all__ = ["create_app", "serve", "SERVE_DESCRIPTION"]

#: `e5v-qdrant serve --help`'s description.
SERVE_DESCRIPTION = """\
Serve the model over HTTP until Ctrl-C / SIGTERM (in-flight requests finish first):
  POST /v1/embeddings   OpenAI-compatible (input: string or list of strings; encoding_format float or base64) and
                        vLLM-style chat messages with image_url data URLs (image, image + text, or text)
  POST /v1/search       search a collection (needs --qdrant-path or --qdrant-url), GET / a search page
  GET  /health, /v1/models, /metrics (Prometheus), /v1/collections/NAME (points; sync status of a watched folder)
  POST /v1/ingest       ingest paths under --ingest-root as a job; its progress and report: GET /v1/jobs/ID
Concurrent requests are batched together (--max-batch-size, --max-wait-ms). Binds 127.0.0.1 unless --host says
otherwise; --server-api-key-env VAR makes clients send 'Authorization: Bearer $VAR'. Needs: pip install 'e5v-qdrant[serve]'.
--watch FOLDER --collection NAME keeps the collection in step with the folder (catch-up at start, then file events;
renames run no model) while serving; `ingest` and `search` on the store folder then go through this server.
"""


def create_app(encoder, *, store=None, config: ServeConfig | None = None, live=None, ingest=None):
    """Build the ASGI app around a loaded encoder; see ``e5v_qdrant.server.app.create_app``."""
    from .app import create_app as build

    return build(encoder, store=store, config=config, live=live, ingest=ingest)


def serve(
    config: ServeConfig,
    encoder_config: EncoderConfig | Mapping[str, Any],
    store_config: StoreConfig | None = None,
    *,
    live: LiveConfig | None = None,
    ingest: IngestConfig | None = None,
) -> None:
    """Load the model (and open the store, if given) and serve until SIGINT/SIGTERM, finishing in-flight requests.

    Args:
        config: where to listen, batching and limits, the optional bearer key's environment variable.
        encoder_config: the model to serve, or the encoder options given (a mapping, as the command line passes
            them): the others then come from the collections of the store, as ``search`` takes them
            (``served_model.served_encoder_config``).
        store_config: the Qdrant store searched by ``/v1/search`` and the page; ``None`` turns search off.
        live: folders kept in sync with ``live.collection`` (``--watch``; the store is created if new) and roots
            ingest jobs may read (``--ingest-root``); ingest: the ingest options of the watched folders.

    Raises:
        E5VConfigError: a non-loopback ``host`` without a key (and no ``allow_unauthenticated``), an unset key
            variable, or collections built with different models and no model given; all before the model loads.
        CollectionMismatchError: the ``--watch`` collection holds vectors of another model (before the load too).

    Example:
        >>> serve(ServeConfig(port=8000), EncoderConfig(model="royokong/e5-v"))  # doctest: +SKIP
        >>> serve(ServeConfig(), {}, StoreConfig(qdrant_path="qdrant_data"))  # the collections' model  # doctest: +SKIP
        >>> serve(ServeConfig(), {}, StoreConfig(), live=LiveConfig(watch=["notes"], collection="notes"),
        ...       ingest=IngestConfig(collection="notes", paths=["notes"], hybrid=True))  # doctest: +SKIP
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import E5VConfigError

        raise E5VConfigError("the server needs its extra: pip install 'e5v-qdrant[serve]'") from exc
    from ..encoder import E5VEncoder
    from ..store import QdrantStore
    from ..store.edge.folder import record_holder_address
    from .exposure import check_exposure, server_key
    from .live import check_owner
    from .served_model import served_encoder_config

    check_exposure(config, server_key(config))  # before the slow model load
    # a store to search must exist: serving an empty folder would create a store no command filled
    writes = live is not None and bool(live.watch or live.ingest_root)  # it may fill a new store
    store = QdrantStore(store_config, must_exist=not writes) if store_config is not None else None
    try:
        if not isinstance(encoder_config, EncoderConfig):
            encoder_config = served_encoder_config(store, encoder_config)
        if store is not None and live is not None:
            check_owner(store, live, ingest, encoder_config)  # a collection of another model: before the load
        encoder = E5VEncoder(config=encoder_config)
        app = create_app(encoder, store=store, config=config, live=live, ingest=ingest)
        if store is not None and store.engine == "edge":  # other commands on this folder go through this server
            record_holder_address(
                store.config.resolved_path, f"http://{_client_host(config.host)}:{config.port}", config.api_key_env
            )
        uvicorn.run(app, host=config.host, port=config.port, log_level="info")
    finally:
        if store is not None:
            store.close()


def _client_host(host: str) -> str:
    """The host a client on this machine connects to for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
