"""``serve``: the HTTP embedding server, search API and page, live folders."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..config import SEARCH, EncoderConfig, from_namespace, namespace_options
from ..live.config import SERVE_INGEST_EXCLUDED, LiveConfig
from .arguments import add_arguments
from .common import (
    EXIT_OK,
)

__all__ = ["add_serve"]


def add_serve(sub) -> Callable:
    from ..config import IngestConfig, ServeConfig, StoreConfig
    from ..server import SERVE_DESCRIPTION

    p = sub.add_parser(
        "serve",
        help="HTTP embedding server (OpenAI/vLLM-compatible), search API and search page",
        description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(
        p,
        EncoderConfig,
        group="model",
        recorded_default="as recorded in the collections served",
    )
    add_arguments(p, ServeConfig, group="server")
    add_arguments(p, LiveConfig, group="keep a folder in sync (--watch); ingest jobs (--ingest-root)")
    add_arguments(p, IngestConfig, group="ingest options of the --watch folders", exclude=SERVE_INGEST_EXCLUDED)
    store = p.add_argument_group("store searched by /v1/search and the page (optional; default: search off)")
    add_arguments(store, StoreConfig, exclude=("api_key_env",), scopes=(SEARCH,))
    store.add_argument(
        "--qdrant-api-key-env",
        default="QDRANT_API_KEY",
        metavar="VAR",
        help="name of the environment variable holding the Qdrant server's API key (default: QDRANT_API_KEY)",
    )
    return _run_serve


def _run_serve(args) -> int:
    from ..config import IngestConfig, ServeConfig, StoreConfig
    from ..server import serve

    store_config, live = None, from_namespace(LiveConfig, args)
    if getattr(args, "qdrant_path", None) or getattr(args, "qdrant_url", None) or live.watch or live.ingest_root:
        store_config = from_namespace(StoreConfig, args, api_key_env=args.qdrant_api_key_env)
    ingest = from_namespace(IngestConfig, args, collection=live.collection, paths=live.watch) if live.watch else None
    # encoder options not typed come from the served collections' stamps (as for `search`), else the defaults
    encoder = namespace_options(EncoderConfig, args)
    serve(from_namespace(ServeConfig, args), encoder, store_config, live=live, ingest=ingest)
    return EXIT_OK
