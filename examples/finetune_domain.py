"""Domain adaptation end to end: write triplets, fine-tune, compare recall@1 of the base and the adapted encoder.

By default it runs on a tiny random replica (CPU, under a minute) with a synthetic "product code" domain: each
product has an anchor code and a different positive code, so the base model cannot match them and a LoRA can learn
to. Point ``--model`` at a real E5-V checkpoint and ``--train`` / ``--eval`` at your own files for the real thing.

    python examples/finetune_domain.py                       # tiny replica, synthetic data
    python examples/finetune_domain.py --model royokong/e5-v --train mine.jsonl --eval heldout.jsonl --steps 1000
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from e5v_qdrant import E5VEncoder
from e5v_qdrant.config import FinetuneConfig
from e5v_qdrant.finetune import finetune, load_triplets


def synthetic_domain(folder: Path, topics: int = 12, per_topic: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl and eval.jsonl: anchors and positives carry different random codes of the same product."""
    rng = random.Random(seed)
    filler = "cat dog river street bread ticket park snow cabin flour table city ball field bench".split()

    def code() -> str:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(4))

    pairs = [(code(), code()) for _ in range(topics)]

    def row(k: int) -> dict:
        a, b = pairs[k]
        return {
            "anchor": f"{' '.join(rng.sample(filler, 2))} {a}",
            "positive": f"{b} {' '.join(rng.sample(filler, 2))}",
        }

    train = folder / "train.jsonl"
    held_out = folder / "eval.jsonl"
    train.write_text("".join(json.dumps(row(k)) + "\n" for k in range(topics) for _ in range(per_topic)))
    held_out.write_text("".join(json.dumps(row(k)) + "\n" for k in range(topics)))
    return train, held_out


def recall_at_1(encoder: E5VEncoder, eval_file: Path) -> float:
    rows = load_triplets(eval_file).rows
    queries = encoder.embed_queries([r.anchor for r in rows])
    docs = encoder.embed_texts([r.positive for r in rows])
    return float(np.mean((queries @ docs.T).argmax(1) == np.arange(len(rows))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="E5-V checkpoint (default: build a tiny replica)")
    parser.add_argument("--train", help="training triplets (default: synthetic)")
    parser.add_argument("--eval", help="held-out triplets (default: synthetic)")
    parser.add_argument("--output", help="output folder (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args()

    work = Path(args.output or tempfile.mkdtemp(prefix="e5v-finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    tiny = args.model is None
    if tiny:
        from e5v_qdrant.testing import build_replica

        args.model = str(build_replica(work / "tiny-e5v"))
    if not args.train:
        args.train, args.eval = synthetic_domain(work)
    options = {"lr": 3e-3, "batch_size": 12, "lora_r": 8, "warmup_steps": 5, "gradcache_chunk_size": 8} if tiny else {}
    result = finetune(
        FinetuneConfig(
            train=str(args.train),
            eval=str(args.eval) if args.eval else None,
            output=str(work / "adapter"),
            model=args.model,
            max_steps=args.steps,
            checkpoint_every=0,
            **options,
        )
    )
    print(f"adapter: {result.adapter}")
    if args.eval:
        base = recall_at_1(E5VEncoder(args.model), Path(args.eval))
        adapted = recall_at_1(E5VEncoder(args.model, adapter=str(result.adapter)), Path(args.eval))
        print(f"held-out recall@1: base {base:.3f} -> adapted {adapted:.3f}")


if __name__ == "__main__":
    main()
