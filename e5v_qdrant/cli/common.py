"""What every command shares: exit codes, printing, the store and encoder options of a command."""

from __future__ import annotations

import json

from ..config import EncoderConfig, from_namespace, namespace_options

__all__ = [
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_ERROR",
    "STORE_HELP",
    "RECORDED",
    "print_json",
    "print_report",
    "store_from",
    "encoder_config_from",
]

#: 0 success; 1 finished, but some supported inputs failed; 2 usage, configuration or permanent error.
EXIT_OK, EXIT_PARTIAL, EXIT_ERROR = 0, 1, 2


def print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_report(args, data, report) -> int:
    """Print a run's report (``--json``: ``data``, else its summary); return its exit code."""
    print_json(data) if args.json else print(report.summary())
    return report.exit_code


STORE_HELP = (
    "Vectors go to the embedded Qdrant store in ./qdrant_data (override with --qdrant-path DIR) unless --qdrant-url "
    "names a server; a server API key is read from the environment variable named by --api-key-env, never from argv."
)
#: What options that change vectors default to in commands that read them from the collection's stamp
RECORDED = "as recorded in the collection"


def store_from(args, *, must_exist: bool = True):
    """The store the options name; read-only commands (``must_exist``) refuse a folder holding none, creating nothing."""
    from ..config import StoreConfig
    from ..store import QdrantStore

    return QdrantStore(from_namespace(StoreConfig, args), must_exist=must_exist)


def encoder_config_from(args, store, collection: str) -> EncoderConfig:
    """Encoder options: those typed on the command line, else those recorded in the collection, else defaults."""
    from ..collection_model import encoder_config_for

    return encoder_config_for(store, collection, **namespace_options(EncoderConfig, args))
