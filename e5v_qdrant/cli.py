"""The ``e5v-qdrant`` command line: argument parsing, progress display and exit codes only.

Exit status: 0 success; 1 finished, but some supported inputs failed; 2 usage, configuration or permanent error.
Each subcommand is a ``_add_<name>`` (its options, built from the config dataclasses) and a ``_run_<name>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable

from . import __version__
from .cli_options import add_arguments, collection_name
from .cli_remote import EndpointConfig, add_check_endpoint, encoder_from
from .config import CREATE, SEARCH, WRITE, EncoderConfig, from_namespace, namespace_options
from .errors import E5VError
from .live.config import SERVE_INGEST_EXCLUDED, LiveConfig
from .live.remote import SERVER_KEY_HELP, RunningOwner
from .options import flag_of

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR = 0, 1, 2

_DESCRIPTION = """\
E5-V multimodal embeddings (texts, images, image + edit text in one space) into Qdrant.

The model defaults to the hub checkpoint royokong/e5-v (~16 GB, downloaded once by transformers); pass
--model /path/to/folder to use a local copy. Vectors go to an embedded Qdrant store in ./qdrant_data unless
--qdrant-url names a server. Run `e5v-qdrant COMMAND --help` for each command's options.
"""


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# ---------------------------------------------------------------- info
def _print_report(args, data, report) -> int:
    """Print a run's report (``--json``: ``data``, else its summary); return its exit code."""
    _print_json(data) if args.json else print(report.summary())
    return report.exit_code


def _add_info(sub) -> Callable:
    p = sub.add_parser(
        "info",
        help="load a model and print its facts (dim, dtype, device, prompts, image tokens)",
        description="Load an E5-V checkpoint through the same path every command uses and print what it will do: "
        "embedding size, dtype, device, prompts, fingerprint and the image-token count of a sample image.",
    )
    add_arguments(p, EncoderConfig, group="model")
    p.add_argument("--image", help="image whose token count to report (default: a generated 640x480 picture)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return _run_info


def _run_info(args) -> int:
    from .encoder import E5VEncoder

    encoder = E5VEncoder(config=from_namespace(EncoderConfig, args))
    facts = encoder.describe()
    if args.image:
        sample, label = args.image, args.image
    else:
        from PIL import Image

        sample, label = Image.new("RGB", (640, 480), (120, 160, 200)), "640x480 sample"
    facts["image_tokens"] = {label: encoder.count_image_tokens(sample)}
    if args.json:
        _print_json(facts)
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            if key == "prompts":
                for name, text in value.items():
                    print(f"{'prompt.' + name:<{width + 8}} {text!r}")
            else:
                print(f"{key:<{width + 8}} {value}")
    return EXIT_OK


# ---------------------------------------------------------------- eval
_EVAL_DESCRIPTION = """\
Measure quality through the same encoder ingestion uses, print a table and (with --report FILE) write the same
numbers as JSON together with everything that changes them: model, revision, adapter, dtype, device, prompts,
transformers/torch versions, image-token counts, data file hashes, counts, timings, and warnings for settings that
explain a gap to the paper (non-default prompts or dtype, unpinned revision, subsets, truncation).
"""


def _add_eval(sub) -> Callable:
    p = sub.add_parser(
        "eval",
        help="evaluate retrieval / composed retrieval / image-to-image / STS / triplets and write a diagnosable report",
        description=_EVAL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK")
    from .config import EvalConfig, StoreConfig
    from .evaluate import TASKS

    for task in TASKS.values():
        tp = tasks.add_parser(task.name, help=task.help, description=task.description)
        for spec in task.inputs:
            tp.add_argument(
                f"--{spec.name.replace('_', '-')}",
                required=spec.required,
                default=spec.default,
                choices=spec.choices,
                help=spec.help,
            )
        add_arguments(tp, EvalConfig, exclude=() if task.via_qdrant else ("via_qdrant",), group="evaluation")
        add_arguments(tp, EncoderConfig, group="model")
        add_arguments(tp, EndpointConfig, group="remote encoder")
        if task.via_qdrant:
            store_group = "qdrant (used with --via-qdrant)"
            add_arguments(tp, StoreConfig, exclude=("qdrant_path",), group=store_group, scopes=(CREATE, WRITE, SEARCH))
    return _run_eval


def _run_eval(args) -> int:
    import time

    from .config import EvalConfig, StoreConfig
    from .evaluate import TASKS

    task = TASKS.get(getattr(args, "eval_task", None) or "")
    if not task:
        print(f"e5v-qdrant eval: choose a task: {', '.join(TASKS)} (see `e5v-qdrant eval --help`)", file=sys.stderr)
        return EXIT_ERROR
    options = from_namespace(EvalConfig, args)
    store = from_namespace(StoreConfig, args) if options.via_qdrant else None
    limited = options.limit is not None
    # Read and check the data before loading the model: a typo in a path must not cost a 16 GB load.
    inputs = {
        stage: {s.name: getattr(args, s.name) for s in task.inputs if s.stage in (stage, "both")}
        for stage in ("read", "evaluate")
    }
    data = task.read(limit=options.limit, **inputs["read"])
    config = from_namespace(EncoderConfig, args)
    preset = task.prompts(inputs["read"]) if task.prompts else None
    if preset and config.prompts == EncoderConfig.__dataclass_fields__["prompts"].default:
        config = dataclasses.replace(config, prompts=preset)  # the task's own prompts unless --prompts was given
    start = time.perf_counter()
    encoder = encoder_from(args, config)
    load_s = time.perf_counter() - start
    common = {"show_progress": options.progress, "limited": limited}
    qdrant = {"via_qdrant": options.via_qdrant, "store": store} if task.via_qdrant else {}
    report = task.evaluate(encoder, data, **common, **qdrant, **inputs["evaluate"])
    report.model["load_warnings"] = list(encoder.load_fixes)
    report.timings = {"model_load_s": round(load_s, 4), **report.timings}
    print(report.format_table())
    if options.report:
        report.write(options.report)
        print(f"report written to {options.report}")
    return EXIT_OK


# ---------------------------------------------------------------- ingest / search / collections
_STORE_HELP = (
    "Vectors go to the embedded Qdrant store in ./qdrant_data (override with --qdrant-path DIR) unless --qdrant-url "
    "names a server; a server API key is read from the environment variable named by --api-key-env, never from argv."
)
#: What options that change vectors default to in commands that read them from the collection's stamp
_RECORDED = "as recorded in the collection"


def _store_from(args, *, must_exist: bool = True):
    """The store the options name; read-only commands (``must_exist``) refuse a folder holding none, creating nothing."""
    from .config import StoreConfig
    from .store import QdrantStore

    return QdrantStore(from_namespace(StoreConfig, args), must_exist=must_exist)


def _encoder_config_from(args, store, collection: str) -> EncoderConfig:
    """Encoder options: those typed on the command line, else those recorded in the collection, else defaults."""
    from .collection_model import encoder_config_for

    return encoder_config_for(store, collection, **namespace_options(EncoderConfig, args))


def _add_ingest(sub) -> Callable:
    from .config import IngestConfig, StoreConfig

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
        + _STORE_HELP
        + " Exit status: 0 every supported file ingested (unsupported types are ignored and counted), 1 some "
        "supported files failed, 2 usage/config/store error.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to ingest")
    add_arguments(p, IngestConfig, group="ingest")
    add_arguments(p, EncoderConfig, group="model", recorded_default=_RECORDED)
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
    from .config import IngestConfig, StoreConfig
    from .ingest import IngestInterrupted, check_paths, ingest

    config = from_namespace(IngestConfig, args, paths=list(args.paths))
    check_paths(config.paths)  # before the store folder or the model is touched
    try:  # the model loads in `ingest` (or on the Ray workers), only when needed; or a server holding the folder
        if owner := RunningOwner.of(from_namespace(StoreConfig, args), args.server_api_key_env):
            report = owner.ingest(config, namespace_options(EncoderConfig, args), progress=args.progress)
        else:
            with _store_from(args, must_exist=False) as store:
                encoder = encoder_from(args, _encoder_config_from(args, store, config.collection), load=False)
                report = ingest(config, encoder, store, progress=args.progress)
    except IngestInterrupted as exc:  # Ctrl-C / SIGTERM: the write in progress was finished; report what was done
        report = exc.report
    data = report.to_dict()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
    return _print_report(args, data, report)


def _add_search(sub) -> Callable:
    from .config import SearchConfig, StoreConfig

    p = sub.add_parser(
        "search",
        help="query a collection with text, an image, or both (composed query)",
        description="Search COLLECTION with a text query, an --image, or both (the image modified by the text). "
        "The model defaults to the one recorded in the collection. " + _STORE_HELP,
    )
    p.add_argument("text", nargs="?", default=None, metavar="TEXT", help="query text (with --image: the modification)")
    p.add_argument("--image", help="query image path (alone: image query; with TEXT: composed query)")
    p.add_argument("--collection", required=True, type=collection_name, help="collection (alias) to search")
    add_arguments(p, SearchConfig, group="search")
    p.add_argument("--json", action="store_true", help="print results as JSON (score, id, modality, source, page, ...)")
    add_arguments(p, EncoderConfig, group="model", recorded_default=_RECORDED)
    add_arguments(p, EndpointConfig, group="remote encoder")
    add_arguments(p, StoreConfig, group="store", scopes=(SEARCH,))
    p.add_argument("--server-api-key-env", metavar="VAR", help=SERVER_KEY_HELP)
    return _run_search


def _run_search(args) -> int:
    from .config import SearchConfig, StoreConfig
    from .errors import E5VConfigError
    from .filters import parse_where
    from .search import search

    options = from_namespace(SearchConfig, args)
    if args.text is None and args.image is None:
        raise E5VConfigError("give a query TEXT, an --image PATH, or both")
    where = parse_where(options.where)
    ranking = {**dataclasses.asdict(options), "where": where}
    if owner := RunningOwner.of(from_namespace(StoreConfig, args), args.server_api_key_env):
        hits = owner.search(args.collection, text=args.text, image=args.image, **ranking)
    else:
        with _store_from(args) as store:
            if store.resolve(args.collection) is None:
                raise E5VConfigError(f"collection {args.collection!r} does not exist in this store; ingest it first")
            encoder = encoder_from(args, _encoder_config_from(args, store, args.collection))
            hits = search(store, encoder, args.collection, text=args.text, image=args.image, **ranking)
    if args.json:
        _print_json([h.to_dict() for h in hits])
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


def _add_collections(sub) -> Callable:
    from .config import StoreConfig

    p = sub.add_parser(
        "collections",
        help="list collections: alias -> physical collection, model fingerprint, point count",
        description="List the store's physical collections with the aliases pointing at them, the model fingerprint "
        "each was built with, and its point count. " + _STORE_HELP,
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_arguments(p, StoreConfig, group="store", scopes=())
    return _run_collections


def _run_collections(args) -> int:
    with _store_from(args) as store:
        rows = store.collections()
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            alias = ", ".join(r["aliases"]) or "(no alias)"
            adapter = f" + adapter {r['adapter']}" if r["adapter"] else ""
            print(
                f"{alias} -> {r['collection']}  fingerprint {r['fingerprint']}  {r['points']} points  "
                f"model {r['model']}{adapter}  dim {r['dim']}"
            )
    return EXIT_OK


# ---------------------------------------------------------------- finetune
def _add_finetune(sub) -> Callable:
    from .config import FinetuneConfig

    p = sub.add_parser(
        "finetune",
        help="text-only LoRA fine-tuning on your domain's triplets (the paper's recipe)",
        description="Adapt E5-V to a domain: LoRA on the language model only, InfoNCE on text triplets (anchor, "
        "positive, optional hard negative) with the exact inference prompt; images follow. Writes a PEFT adapter "
        "for `--adapter DIR`, manifest.json and metrics.json to --output; --merge also writes DIR/merged. "
        "Defaults are the paper's (r=64, alpha=16, lr 4e-4, batch 768, tau 0.05, 32 tokens). Multi-GPU: "
        "torchrun --nproc-per-node N -m e5v_qdrant.cli finetune ...",
    )
    add_arguments(p, FinetuneConfig)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON when done")
    return _run_finetune


def _run_finetune(args) -> int:
    import os

    from .config import FinetuneConfig
    from .finetune import finetune

    result = finetune(from_namespace(FinetuneConfig, args))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate only rank 0 reports
        return EXIT_OK
    manifest = json.loads(result.manifest.read_text(encoding="utf-8")) if result.manifest.exists() else {}
    if args.json:
        _print_json(manifest)
        return EXIT_OK
    metrics = manifest.get("metrics", {})
    print(f"adapter   {result.adapter}  (use: --adapter {result.adapter})")
    if result.merged:
        print(f"merged    {result.merged}  (use: --model {result.merged})")
    print(f"steps     {manifest.get('steps')}  loss {metrics.get('first_loss')} -> {metrics.get('final_loss')}")
    before, after = metrics.get("eval_before"), metrics.get("eval_after")
    if before and after:
        print(f"recall@1  {before['recall@1']:.4f} -> {after['recall@1']:.4f}  ({after['queries']} eval queries)")
    print(f"manifest  {result.manifest}")
    return EXIT_OK


# ---------------------------------------------------------------- reingest
def _add_reingest(sub) -> Callable:
    from .config import IngestConfig, StoreConfig

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
        + _STORE_HELP
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
        recorded_default=_RECORDED,
    )
    add_arguments(p, IngestConfig, only=("sparse_encoder", "bulk_load"), group="new collection")
    add_arguments(p, EndpointConfig, group="remote encoder (its vectors are the new model's)")
    add_arguments(p, StoreConfig, group="store", scopes=(CREATE, WRITE))
    return _run_reingest


def _run_reingest(args) -> int:
    from .errors import E5VConfigError
    from .reingest import ReingestInterrupted, reingest

    vector_options = [f for f in dataclasses.fields(EncoderConfig) if f.metadata["vectors"]]
    given = vars(args).keys()
    if not {"encoder_url", "sparse_encoder", *(f.name for f in vector_options)} & given:  # any, or an endpoint
        others = ", ".join(flag_of(f) for f in vector_options if f.name not in ("model", "adapter"))
        raise E5VConfigError(
            f"give what changes: --adapter DIR (fine-tuned on the recorded model), --model M, one of {others}, or "
            f"--sparse-encoder NAME (the keyword side only)"
        )
    with _store_from(args) as store:
        # the model loads in reingest only if dense vectors change (or the endpoint embeds them)
        encoder = encoder_from(args, _encoder_config_from(args, store, args.collection), load=False)
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
    return _print_report(args, report.to_dict(), report)


# ---------------------------------------------------------------- serve


def _add_serve(sub) -> Callable:
    from .config import IngestConfig, ServeConfig, StoreConfig
    from .server import SERVE_DESCRIPTION

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
    from .config import IngestConfig, ServeConfig, StoreConfig
    from .server import serve

    store_config, live = None, from_namespace(LiveConfig, args)
    if getattr(args, "qdrant_path", None) or getattr(args, "qdrant_url", None) or live.watch or live.ingest_root:
        store_config = from_namespace(StoreConfig, args, api_key_env=args.qdrant_api_key_env)
    ingest = from_namespace(IngestConfig, args, collection=live.collection, paths=live.watch) if live.watch else None
    # encoder options not typed come from the served collections' stamps (as for `search`), else the defaults
    encoder = namespace_options(EncoderConfig, args)
    serve(from_namespace(ServeConfig, args), encoder, store_config, live=live, ingest=ingest)
    return EXIT_OK


# ---------------------------------------------------------------- migrate
def _add_migrate(sub) -> Callable:
    from .config import StoreConfig

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

    from .config import StoreConfig
    from .errors import E5VConfigError
    from .migrate import migrate
    from .store import QdrantStore

    if bool(args.to_url) == bool(args.to_path):
        raise E5VConfigError("give exactly one of --to-url (server) or --to-path (embedded folder)")
    source_config = from_namespace(StoreConfig, args)
    target_config = dataclasses.replace(
        source_config, qdrant_url=args.to_url, qdrant_path=args.to_path, embedded=args.to_embedded
    )
    with QdrantStore(source_config, must_exist=True) as source, QdrantStore(target_config) as target:
        report = migrate(args.collection, source, target, progress=sys.stderr.isatty())
    if args.json:
        _print_json(report.as_dict())
    else:
        print(
            f"{report.collection} -> {report.physical}: {report.source_points} points, {report.already_there} were "
            f"already there, {report.copied} copied; alias {'pointed' if report.alias_pointed else 'unchanged'}"
        )
    return EXIT_OK


# ---------------------------------------------------------------- wiring
_COMMANDS: list[Callable] = [
    _add_info,
    _add_ingest,
    _add_search,
    _add_collections,
    _add_eval,
    _add_finetune,
    _add_reingest,
    _add_migrate,
    _add_serve,
    add_check_endpoint,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e5v-qdrant", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        run = add(sub)
        name = list(sub.choices)[-1]
        sub.choices[name].set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    shown, previous = warnings.showwarning, ()
    prog = ["e5v-qdrant"]
    # one readable line per warning (a deprecated flag, the checkpoint fixes applied on load), not Python's file:line
    warnings.showwarning = lambda message, *_, **__: print(f"{prog[0]}: warning: {message}", file=sys.stderr)
    try:
        args = parser.parse_args(argv)
        prog[0] = f"e5v-qdrant {args.command}"
        if threading.current_thread() is threading.main_thread():  # SIGTERM stops like Ctrl-C (reports, exit 143)
            previous = (signal.signal(signal.SIGTERM, _terminated),)
        if not getattr(args, "_run", None):
            parser.print_help()
            return EXIT_ERROR
        logging.basicConfig(
            level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
            format="%(levelname)s %(name)s: %(message)s",
        )
        return args._run(args)
    except E5VError as exc:
        print(f"{prog[0]}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) == "SIGTERM" else "SIGINT"
        print(f"{prog[0]}: interrupted ({name})", file=sys.stderr)
        return 128 + int(getattr(signal, name))
    finally:
        warnings.showwarning = shown
        for handler in previous:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if handler is None else handler)


def _terminated(signum, frame) -> None:
    """SIGTERM handler: stop like Ctrl-C, named, so ingest finishes its write, reports and exits 143."""
    raise KeyboardInterrupt("SIGTERM")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
