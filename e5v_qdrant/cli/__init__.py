"""The ``e5v-qdrant`` command line: argument parsing, progress display and exit codes only.

Exit status: 0 success; 1 finished, but some supported inputs failed; 2 usage, configuration or permanent error.
One module per group of commands; each command is an ``add_<name>(subparsers)`` that declares its options (built from
the config dataclasses through ``arguments``) and returns the function that runs it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable

from .. import __version__
from ..errors import E5VError
from .common import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL
from .evaluate import add_eval
from .finetune import add_finetune
from .info import add_info
from .ingest import add_ingest, add_migrate, add_reingest
from .remote import add_check_endpoint
from .search import add_collections, add_search
from .serve import add_serve

__all__ = ["EXIT_OK", "EXIT_PARTIAL", "EXIT_ERROR", "build_parser", "main"]

_DESCRIPTION = """\
E5-V multimodal embeddings (texts, images, image + edit text in one space) into Qdrant.

The model defaults to the hub checkpoint royokong/e5-v (~16 GB, downloaded once by transformers); pass
--model /path/to/folder to use a local copy. Vectors go to an embedded Qdrant store in ./qdrant_data unless
--qdrant-url names a server. Run `e5v-qdrant COMMAND --help` for each command's options.
"""


_COMMANDS: list[Callable] = [
    add_info,
    add_ingest,
    add_search,
    add_collections,
    add_eval,
    add_finetune,
    add_reingest,
    add_migrate,
    add_serve,
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
