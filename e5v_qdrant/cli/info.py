"""``info``: load a model and print its facts."""

from __future__ import annotations

from collections.abc import Callable

from ..config import EncoderConfig, from_namespace
from .arguments import add_arguments
from .common import (
    EXIT_OK,
    print_json,
)

__all__ = ["add_info"]


def add_info(sub) -> Callable:
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
    from ..encoder import E5VEncoder

    encoder = E5VEncoder(config=from_namespace(EncoderConfig, args))
    facts = encoder.describe()
    if args.image:
        sample, label = args.image, args.image
    else:
        from PIL import Image

        sample, label = Image.new("RGB", (640, 480), (120, 160, 200)), "640x480 sample"
    facts["image_tokens"] = {label: encoder.count_image_tokens(sample)}
    if args.json:
        print_json(facts)
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            if key == "prompts":
                for name, text in value.items():
                    print(f"{'prompt.' + name:<{width + 8}} {text!r}")
            else:
                print(f"{key:<{width + 8}} {value}")
    return EXIT_OK
