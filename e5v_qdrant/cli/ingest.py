"""The commands that write collections: ``ingest``, ``reingest``, ``migrate``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable

from ..config import CREATE, WRITE, EncoderConfig, from_namespace, namespace_options
from ..errors import E5VConfigError
from ..live.remote import SERVER_KEY_HELP, RunningOwner
from ..options import flag_of
from .arguments import add_arguments, collection_name
from .common import (
    EXIT_OK,
    RECORDED,
    STORE_HELP,
    encoder_config_from,
    print_json,
    print_report,
    store_from,
)
from .remote import EndpointConfig, encoder_from

__all__ = ["add_ingest", "add_reingest", "add_migrate"]


def add_ingest(sub) -> Callable:
    from ..config import IngestConfig, StoreConfig

    p = sub.add_parser(
        "ingest",
        help="embed folders of documents and images into a Qdrant collection (idempotent, resumable)",
        description="Embed files into COLLECTION. Text: .txt .md .markdown .rst .html .htm (and .pdf with the optional "
        "extra: pip install 'e5v-qdrant[pdf]'), chunked with LlamaIndex's SentenceSplitter; images: .jpg .jpeg .png "
        ".webp .gif .bmp .tif .tiff. Compressed text (.gz .bz2 .xz) is read, files without a type extension (README, "
        "copyright) are ingested when they hold UTF-8 text. Re-running skips unchanged files without opening them "
        "(same size, mtime and inode; --verify re-reads all), replaces the chunks of changed ones, with --sync removes "
        "files that vanished, and loads the model only if something needs embedding. A file that cannot be read is "
        "skipped and listed, the run goes on. "
        + STORE_HELP
        + " Exit status: 0 every supported file ingested (unsupported types are ignored and counted), 1 some "
        "supported files failed, 2 usage/config/store error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to ingest")
    add_arguments(p, IngestConfig, group="ingest")
    add_arguments(p, EncoderConfig, group="model", recorded_default=RECORDED)
    add_arguments(p, EndpointConfig, group="remote encoder")
    add_arguments(p, StoreConfig, group="store", scopes=(CREATE, WRITE))
    p.add_argument("--report", metavar="FILE.json", help="also write the run report (counts, skipped inputs) as JSON")
    p.add_argument("--server-api-key-env", metavar="VAR", help=SERVER_KEY_HELP)
    p.add_argument("--json", action="store_true", help="print the run report as JSON instead of a summary")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only on a terminal)",
    )
    return _run_ingest


def _run_ingest(args) -> int:
    from ..config import IngestConfig, StoreConfig
    from ..ingest import IngestInterrupted, check_paths, ingest

    config = from_namespace(IngestConfig, args, paths=list(args.paths))
    check_paths(config.paths)  # before the store folder or the model is touched
    try:  # the model loads in `ingest` (or on the Ray workers), only when needed; or a server holding the folder
        if owner := RunningOwner.of(from_namespace(StoreConfig, args), args.server_api_key_env):
            report = owner.ingest(config, namespace_options(EncoderConfig, args), progress=args.progress)
        else:
            with store_from(args, must_exist=False) as store:
                encoder = encoder_from(args, encoder_config_from(args, store, config.collection), load=False)
                report = ingest(config, encoder, store, progress=args.progress)
    except IngestInterrupted as exc:  # Ctrl-C / SIGTERM: the write in progress was finished; report what was done
        report = exc.report
    data = report.to_dict()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
    return print_report(args, data, report)


def add_reingest(sub) -> Callable:
    from ..config import IngestConfig, StoreConfig

    p = sub.add_parser(
        "reingest",
        help="re-embed a collection with a new model, adapter or vector option, then swap its alias (zero downtime)",
        description="Re-embed every point of COLLECTION (an alias made by ingest) with --adapter DIR (on the model "
        "recorded in the collection), --model M or any other option that changes vectors (--prompts, --image-layout, "
        "...; the others stay as recorded) into a new physical collection, verify it, and switch the alias in one "
        "atomic call; searches keep working throughout. Options that shape only query vectors (--query-prompt) or "
        "give the same vectors leave the collection as it is (reported as already current). --sparse-encoder alone "
        "switches the keyword encoder of a hybrid collection (or makes it hybrid): dense vectors are copied and the "
        "model is not loaded. Images are re-read from their source paths and checked "
        "against the stored content hash: missing or changed ones are reported and block the swap unless "
        "--allow-missing. Resumable: re-run the same command after a crash. "
        + STORE_HELP
        + " Exit status: 0 swapped, 1 sources missing/changed (swap refused, or done with --allow-missing), 2 error.",
    )
    p.add_argument("--collection", required=True, type=collection_name, help="collection (alias) to re-embed")
    old = p.add_mutually_exclusive_group()
    old.add_argument(
        "--keep-old", dest="drop_old", action="store_false", help="keep the old physical collection (default)"
    )
    old.add_argument(
        "--drop-old", dest="drop_old", action="store_true", help="delete the old physical collection after the swap"
    )
    p.set_defaults(drop_old=False)
    p.add_argument(
        "--allow-missing", action="store_true", help="swap even if some image sources are missing or changed"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )
    add_arguments(
        p,
        EncoderConfig,
        group="new model (--adapter applies to the recorded model unless --model is given)",
        recorded_default=RECORDED,
    )
    add_arguments(p, IngestConfig, only=("sparse_encoder", "bulk_load"), group="new collection")
    add_arguments(p, EndpointConfig, group="remote encoder (its vectors are the new model's)")
    add_arguments(p, StoreConfig, group="store", scopes=(CREATE, WRITE))
    return _run_reingest


def _run_reingest(args) -> int:
    from ..config import StoreConfig
    from ..reingest import ReingestInterrupted, reingest

    vector_options = [f for f in dataclasses.fields(EncoderConfig) if f.metadata["vectors"]]
    given = vars(args).keys()
    if not {"encoder_url", "sparse_encoder", *(f.name for f in vector_options)} & given:  # any, or an endpoint
        others = ", ".join(flag_of(f) for f in vector_options if f.name not in ("model", "adapter"))
        raise E5VConfigError(
            f"give what changes: --adapter DIR (fine-tuned on the recorded model), --model M, one of {others}, or "
            f"--sparse-encoder NAME (the keyword side only)"
        )
    if owner := RunningOwner.of(from_namespace(StoreConfig, args), getattr(args, "server_api_key_env", None)):
        raise E5VConfigError(  # at once, instead of waiting out the lock: reingest does not go through a server
            f"the server at {owner.url} holds this store folder; reingest builds the new collection beside it, in "
            "this process: stop the server, run reingest, start it again (or keep the collection on a Qdrant server "
            "by --qdrant-url, which many processes share)"
        )
    with store_from(args) as store:
        # the model loads in reingest only if dense vectors change (or the endpoint embeds them)
        encoder = encoder_from(args, encoder_config_from(args, store, args.collection), load=False)
        try:
            report = reingest(
                args.collection,
                encoder,
                store,
                sparse_encoder=getattr(args, "sparse_encoder", None),
                bulk_load=getattr(args, "bulk_load", False),
                drop_old=args.drop_old,
                allow_missing=args.allow_missing,
                progress=args.progress,
            )
        except ReingestInterrupted as exc:  # Ctrl-C / SIGTERM: report what was written; a re-run resumes
            report = exc.report
    return print_report(args, report.to_dict(), report)


def add_migrate(sub) -> Callable:
    from ..config import StoreConfig

    p = sub.add_parser(
        "migrate",
        help="copy a collection to a server or another embedded store (resumable, alias pointed last)",
        description="Copy a collection (ids, vectors, payloads, model stamp) from the store given by --qdrant-path / "
        "--qdrant-url to a server (--to-url) or another embedded folder (--to-path, engine --to-embedded). The "
        "physical collection is created with the storage options given here (--quantization, --on-disk-vectors, ...), "
        "the alias is pointed at it last; a killed run resumes where it stopped, a repeated run copies nothing; a "
        "target collection of another model is refused. Example: e5v-qdrant migrate --collection docs "
        "--qdrant-path ./qdrant_data --to-url http://localhost:6333",
    )
    p.add_argument("--collection", required=True, type=collection_name, help="collection (alias) to copy")
    p.add_argument("--to-url", help="target Qdrant server URL (its API key: the variable named by --api-key-env)")
    p.add_argument("--to-path", help="target embedded store folder")
    p.add_argument("--to-embedded", choices=("edge", "local"), help="engine of a new --to-path folder (default edge)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_arguments(p, StoreConfig, group="source store and target collection options", scopes=(CREATE, WRITE))
    return _run_migrate


def _run_migrate(args) -> int:
    import dataclasses

    from ..config import StoreConfig
    from ..migrate import migrate
    from ..store import QdrantStore

    if bool(args.to_url) == bool(args.to_path):
        raise E5VConfigError("give exactly one of --to-url (server) or --to-path (embedded folder)")
    source_config = from_namespace(StoreConfig, args)
    target_config = dataclasses.replace(
        source_config, qdrant_url=args.to_url, qdrant_path=args.to_path, embedded=args.to_embedded
    )
    with QdrantStore(source_config, must_exist=True) as source, QdrantStore(target_config) as target:
        report = migrate(args.collection, source, target, progress=sys.stderr.isatty())
    if args.json:
        print_json(report.as_dict())
    else:
        print(
            f"{report.collection} -> {report.physical}: {report.source_points} points, {report.already_there} were "
            f"already there, {report.copied} copied; alias {'pointed' if report.alias_pointed else 'unchanged'}"
        )
    return EXIT_OK
