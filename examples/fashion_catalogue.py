"""Search a fashion catalogue by a reference image plus a change in words (E5-V's FashionIQ recipe).

Catalogue images are embedded with the category's target prompt (``--prompts fashioniq-dress``), recorded in the
collection; a query is the reference image with the change text in the category's query prompt. Three ways to ask:
the CLI, LlamaIndex's ``query_bundle``, and the authors' two-caption form (both caption orders, raw vectors summed).

Runs on a tiny random replica by default (no download, seconds on a CPU): the scores are meaningless, the code path is
the real one. Pass --model royokong/e5-v (or a local folder) and --catalogue DIR of product images for real use.

    python examples/fashion_catalogue.py [--model royokong/e5-v] [--catalogue ./dresses] [--category dress]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from e5v_qdrant.cli import main as cli
from e5v_qdrant.testing import build_replica, draw_image


def demo_catalogue(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        draw_image(300 + 20 * i, 400, seed=100 + i).save(root / f"item{i:02d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a freshly built tiny replica")
    parser.add_argument("--catalogue", help="folder of product images; default: a generated demo catalogue")
    parser.add_argument("--category", default="dress", choices=("dress", "shirt", "toptee"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e5v-fashion-demo-"))
    model = args.model or str(build_replica(work / "e5v-tiny"))
    catalogue = Path(args.catalogue) if args.catalogue else demo_catalogue(work / "catalogue")
    preset = f"fashioniq-{args.category}"
    store = ["--qdrant-path", str(work / "qdrant_data"), "--collection", "shop"]

    print(f"== ingest the catalogue with the {preset} target prompt")
    cli(["ingest", str(catalogue), "--model", model, "--prompts", preset, *store])
    reference = str(sorted(catalogue.iterdir())[0])
    print(f"== composed query from the CLI: {reference} + 'shorter sleeves, in red'")
    cli(["search", "--image", reference, "shorter sleeves, in red", "--top-k", "3", *store])

    print("== the same query through LlamaIndex")
    from llama_index.embeddings.e5v import E5VEmbedding

    from e5v_qdrant import E5VEncoder

    encoder = E5VEncoder(model, prompts=preset)
    bundle = E5VEmbedding(encoder=encoder).query_bundle(image=reference, text="shorter sleeves, in red")
    print(f"query_bundle embedding: {len(bundle.embedding)} dims")

    print("== the authors' two-caption query: both orders, raw vectors summed, then normalised")
    pair = encoder.embed_composed_pairs([reference], [("has shorter sleeves", "is red.")])[0]
    images = sorted(str(p) for p in catalogue.iterdir())
    scores = encoder.embed_images(images) @ pair
    for i in np.argsort(-scores)[:3]:
        print(f"{scores[i]:.4f}  {images[i]}")


if __name__ == "__main__":
    main()
