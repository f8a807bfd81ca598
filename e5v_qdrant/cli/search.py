"""The commands that read collections: ``search``, ``collections``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..config import SEARCH, EncoderConfig, from_namespace
from ..errors import E5VConfigError
from ..live.remote import SERVER_KEY_HELP, RunningOwner
from .arguments import add_arguments, collection_name
from .common import (
    EXIT_OK,
    RECORDED,
    STORE_HELP,
    encoder_config_from,
    print_json,
    store_from,
)
from .remote import EndpointConfig, encoder_from

__all__ = ["add_search", "add_collections"]


def add_search(sub) -> Callable:
    from ..config import SearchConfig, StoreConfig

    p = sub.add_parser(
        "search",
        help="query a collection with text, an image, or both (composed query)",
        description="Search COLLECTION with a text query, an --image, or both (the image modified by the text). "
        "The model defaults to the one recorded in the collection. " + STORE_HELP,
    )
    p.add_argument("text", nargs="?", default=None, metavar="TEXT", help="query text (with --image: the modification)")
    p.add_argument("--image", help="query image path (alone: image query; with TEXT: composed query)")
    p.add_argument("--collection", required=True, type=collection_name, help="collection (alias) to search")
    add_arguments(p, SearchConfig, group="search")
    p.add_argument("--json", action="store_true", help="print results as JSON (score, id, modality, source, page, ...)")
    add_arguments(p, EncoderConfig, group="model", recorded_default=RECORDED)
    add_arguments(p, EndpointConfig, group="remote encoder")
    add_arguments(p, StoreConfig, group="store", scopes=(SEARCH,))
    p.add_argument("--server-api-key-env", metavar="VAR", help=SERVER_KEY_HELP)
    return _run_search


def _run_search(args) -> int:
    from ..config import SearchConfig, StoreConfig
    from ..filters import parse_where
    from ..search import search

    options = from_namespace(SearchConfig, args)
    if args.text is None and args.image is None:
        raise E5VConfigError("give a query TEXT, an --image PATH, or both")
    where = parse_where(options.where)
    ranking = {**dataclasses.asdict(options), "where": where}
    if owner := RunningOwner.of(from_namespace(StoreConfig, args), args.server_api_key_env):
        hits = owner.search(args.collection, text=args.text, image=args.image, **ranking)
    else:
        with store_from(args) as store:
            if store.resolve(args.collection) is None:
                raise E5VConfigError(f"collection {args.collection!r} does not exist in this store; ingest it first")
            encoder = encoder_from(args, encoder_config_from(args, store, args.collection))
            hits = search(store, encoder, args.collection, text=args.text, image=args.image, **ranking)
    if args.json:
        print_json([h.to_dict() for h in hits])
    else:
        for h in hits:
            snippet = ""
            if h.text:
                flat = " ".join(h.text.split())
                snippet = "  " + (flat[:77] + "..." if len(flat) > 80 else flat)
            page = f" p.{h.page}" if h.page is not None else ""
            chunk = f"#{h.chunk_index}" if h.modality == "text" else ""
            print(f"{h.score:.4f}  {h.modality or '?':5}  {h.source}{page}{chunk}{snippet}")
    return EXIT_OK


def add_collections(sub) -> Callable:
    from ..config import StoreConfig

    p = sub.add_parser(
        "collections",
        help="list collections: alias -> physical collection, model fingerprint, point count",
        description="List the store's physical collections with the aliases pointing at them, the model fingerprint "
        "each was built with, and its point count. " + STORE_HELP,
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_arguments(p, StoreConfig, group="store", scopes=())
    return _run_collections


def _run_collections(args) -> int:
    with store_from(args) as store:
        rows = store.collections()
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            alias = ", ".join(r["aliases"]) or "(no alias)"
            adapter = f" + adapter {r['adapter']}" if r["adapter"] else ""
            print(
                f"{alias} -> {r['collection']}  fingerprint {r['fingerprint']}  {r['points']} points  "
                f"model {r['model']}{adapter}  dim {r['dim']}"
            )
    return EXIT_OK
