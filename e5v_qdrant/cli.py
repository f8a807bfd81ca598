"""The ``e5v-qdrant`` command line: argument parsing, progress display and exit codes only.

Exit status: 0 success; 1 finished, but some inputs were skipped; 2 usage, configuration or permanent error.
Each subcommand is a ``_add_<name>`` (its options, built from the config dataclasses) and a ``_run_<name>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from . import __version__
from .config import EncoderConfig, add_arguments, from_namespace
from .errors import E5VError

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


# ---------------------------------------------------------------- wiring
_COMMANDS: list[Callable] = [_add_info]


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
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_ERROR
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args._run(args)
    except E5VError as exc:
        print(f"e5v-qdrant {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"e5v-qdrant {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
