"""Which engine a store is (a server, Qdrant Edge or qdrant-client local mode) and opening its client."""

from __future__ import annotations

import os

from ..config import StoreConfig
from ..errors import E5VConfigError
from .edge import detect_engine
from .retry import StoreError, describe_error, retrying

__all__ = ["NEW_FOLDER_ENGINE_ENV", "ENGINES", "embedded_engine", "engine_of", "require_store", "open_client"]


#: Environment variable naming the engine of NEW embedded store folders when ``StoreConfig.embedded`` is unset.
NEW_FOLDER_ENGINE_ENV = "E5V_QDRANT_EMBEDDED"


def embedded_engine(config: StoreConfig) -> str | None:
    """The engine of ``config``'s embedded store: ``"edge"`` or ``"local"`` (``None`` for a server).

    An existing folder keeps its engine (it is never converted); a new folder gets ``config.embedded``, else
    ``$E5V_QDRANT_EMBEDDED``, else ``"edge"``.

    Raises:
        E5VConfigError: ``config.embedded`` contradicts the engine of the existing folder.
    """
    if config.qdrant_url:
        return None
    found = detect_engine(config.resolved_path)
    if found is None:
        engine = config.embedded or os.environ.get(NEW_FOLDER_ENGINE_ENV) or "edge"
        if engine not in ("edge", "local"):
            raise E5VConfigError(f"${NEW_FOLDER_ENGINE_ENV} must be edge or local, got {engine!r}")
        return engine
    if config.embedded and config.embedded != found:
        raise E5VConfigError(
            f"{config.resolved_path!r} holds an embedded {found!r} store but --embedded {config.embedded} was asked "
            f"for; stores are never converted in place: drop --embedded, or copy it with `e5v-qdrant migrate "
            f"--embedded {found} --to-path NEW_FOLDER --to-embedded {config.embedded}`"
        )
    return found


def require_store(config: StoreConfig) -> None:
    """Refuse an embedded store folder that holds no store (read-only commands must not create one).

    Raises:
        E5VConfigError: naming the folder and the remedy.
    """
    if not config.qdrant_url and detect_engine(config.resolved_path) is None:
        raise E5VConfigError(
            f"no store at {os.path.abspath(config.resolved_path)!r}: ingest into it first, or pass --qdrant-path (or --qdrant-url) "
            "of an existing store; nothing was created"
        )


def open_client(config: StoreConfig):
    """Open a client: embedded store in ``config.resolved_path`` (Qdrant Edge or local mode) or a server by URL.

    The API key is read from the environment variable ``config.api_key_env``; it is never logged. An Edge folder is
    opened through ``edge.EdgeClient``, which answers the same ``QdrantClient`` methods this package calls.

    Raises:
        StoreError: the store cannot be opened (folder locked by another process after retries, bad URL…).
        E5VConfigError: ``config.embedded`` contradicts the existing folder's engine.
    """
    from qdrant_client import QdrantClient

    engine = embedded_engine(config)

    def connect():
        if config.qdrant_url:
            return QdrantClient(
                url=config.qdrant_url,
                api_key=config.api_key,
                prefer_grpc=config.prefer_grpc,
                timeout=int(config.timeout),
            )
        if engine == "edge":
            from .edge import EdgeClient

            return EdgeClient(config.resolved_path)
        return QdrantClient(path=config.resolved_path)

    where = config.qdrant_url or f"embedded {engine} store {config.resolved_path!r}"
    try:
        return retrying(config, f"opening {where}")(connect)
    except Exception as exc:
        hint = (
            " Another process holds this folder: wait for it, or use a Qdrant server for concurrent access."
            if "already accessed" in str(exc)
            else ""
        )
        raise StoreError(f"cannot open {where}: {describe_error(exc)}.{hint}") from exc


#: What ``QdrantStore.engine`` may be (the store's engine; ``IngestConfig.engine`` is the ingest executor instead).
ENGINES = ("server", "edge", "local")


def engine_of(config: StoreConfig, client) -> str:
    """The engine of an open ``client``: ``"server"`` (``config.qdrant_url``), ``"edge"`` (an ``EdgeClient``, or a
    wrapper that delegates its attributes) or ``"local"`` (qdrant-client local mode, ``:memory:`` included)."""
    if config.qdrant_url:
        return "server"
    return "edge" if getattr(client, "e5v_engine", None) == "edge" else "local"
