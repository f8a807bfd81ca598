"""Rehearse the whole adaptation loop on a laptop: ingest → fine-tune → reingest (alias swap) → search.

Runs on a tiny random replica by default (no download, about a minute on a CPU) — the scores are meaningless, the
commands are exactly the ones to run on a GPU box with --model royokong/e5-v and your own folder and triplets.

    python examples/finetune_reingest_loop.py [--model royokong/e5-v] [--folder ./docs] [--train triplets.jsonl]
"""

import argparse
import json
import tempfile
from pathlib import Path

from e5v_qdrant.cli import main as cli
from e5v_qdrant.testing import build_replica, draw_image

TRIPLETS = [
    ("invoice charged twice", "the customer paid two times for one invoice", "the dog sleeps on the sofa"),
    ("refund the payment", "give the money back to the card", "fresh bread on the table"),
    ("a cat on a windowsill", "a kitten sits by the window", "quarterly revenue grew"),
    ("dogs chasing a ball", "two dogs run after a red ball", "the invoice total is wrong"),
    ("bread and cheese", "a loaf with some cheese on a board", "a bicycle in the street"),
    ("snow on the mountains", "white peaks above a frozen lake", "a support ticket about billing"),
]


def demo_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "billing.txt").write_text("The invoice was charged twice this month. Please refund the second payment.")
    (root / "pets.md").write_text("# Pets\n\nA cat sits on the warm windowsill. Two dogs chase a red ball in the park.")
    draw_image(640, 480, seed=1).save(root / "photo.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a freshly built tiny replica")
    parser.add_argument("--folder", help="folder to ingest; default: a generated demo folder")
    parser.add_argument("--train", help="triplet file (JSONL anchor/positive/negative); default: a generated one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e5v-loop-"))
    model = args.model or str(build_replica(work / "e5v-tiny"))
    folder = Path(args.folder) if args.folder else demo_folder(work / "docs")
    train = args.train
    if not train:
        train = work / "triplets.jsonl"
        train.write_text(
            "".join(json.dumps({"anchor": a, "positive": p, "negative": n}) + "\n" for a, p, n in TRIPLETS)
        )
    store = ["--qdrant-path", str(work / "qdrant_data")]
    tiny = [] if args.model else ["--max-steps", "3", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8"]

    print("== 1. ingest with the base model")
    cli(["ingest", str(folder), "--collection", "docs", "--model", model, *store])
    cli(["search", "money back for a double charge", "--collection", "docs", "--top-k", "2", *store])
    print("== 2. fine-tune a LoRA adapter on text triplets")
    status = cli(["finetune", "--train", str(train), "--output", str(work / "adapter"), "--model", model, *tiny])
    if status != 0:
        raise SystemExit(f"finetune failed with exit status {status}")
    print("== 3. reingest: new physical collection, verified, alias swapped (searches keep working meanwhile)")
    cli(["reingest", "--collection", "docs", "--adapter", str(work / "adapter"), "--drop-old", *store])
    cli(["collections", *store])
    print("== 4. search through the same name, now served by the adapted model")
    cli(["search", "money back for a double charge", "--collection", "docs", "--top-k", "2", *store])


if __name__ == "__main__":
    main()
