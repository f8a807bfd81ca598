"""``finetune``: the text-only LoRA recipe."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..config import from_namespace
from .arguments import add_arguments
from .common import (
    EXIT_OK,
    print_json,
)

__all__ = ["add_finetune"]


def add_finetune(sub) -> Callable:
    from ..config import FinetuneConfig

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

    from ..config import FinetuneConfig
    from ..finetune import finetune

    result = finetune(from_namespace(FinetuneConfig, args))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate only rank 0 reports
        return EXIT_OK
    manifest = json.loads(result.manifest.read_text(encoding="utf-8")) if result.manifest.exists() else {}
    if args.json:
        print_json(manifest)
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
