"""Ingest a folder of documents and images into embedded Qdrant, re-run it, search it, and read it from LlamaIndex.

Runs on a tiny random replica by default (no download, seconds on a CPU) — the scores are meaningless, the code path
is the real one. Pass --model royokong/e5-v (or a local folder) and --folder for real use.

    python examples/ingest_and_search.py [--model royokong/e5-v] [--folder ./my_docs]
"""

import argparse
import tempfile
from pathlib import Path

from e5v_qdrant.cli import main as cli
from e5v_qdrant.testing import build_replica, draw_image


def demo_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "beach.txt").write_text("A dog runs along the beach at sunset. The waves are calm and the sand is warm.")
    (root / "invoice.md").write_text("# Invoice 42\n\nThe customer was charged twice for the March subscription.")
    (root / "page.html").write_text("<html><body><h1>Bakery</h1><p>Fresh bread every morning.</p></body></html>")
    draw_image(640, 480, seed=1).save(root / "red.png")
    draw_image(480, 640, seed=2).save(root / "blue.jpg")
    (root / "broken.png").write_bytes(b"not an image")  # reported as skipped, exit status 1
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a freshly built tiny replica")
    parser.add_argument("--folder", help="folder to ingest; default: a generated demo folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e5v-ingest-demo-"))
    model = args.model or str(build_replica(work / "e5v-tiny"))
    folder = Path(args.folder) if args.folder else demo_folder(work / "docs")
    store = ["--qdrant-path", str(work / "qdrant_data")]

    print("== first run")
    status = cli(["ingest", str(folder), "--collection", "docs", "--model", model, *store])
    print(f"exit status {status} (1 = some inputs skipped)")
    print("== second run: nothing to embed, nothing to write")
    cli(["ingest", str(folder), "--collection", "docs", *store])  # the model is recorded in the collection
    print("== text search")
    cli(["search", "a dog on the beach", "--collection", "docs", "--top-k", "3", *store])
    print("== image search, then composed (image + modification text)")
    image = str(next(p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".png", ".jpg")))
    cli(["search", "--image", image, "--collection", "docs", "--top-k", "3", *store])
    cli(["search", "make it blue", "--image", image, "--collection", "docs", "--top-k", "3", *store])
    cli(["collections", *store])

    print("== the same collection through LlamaIndex (QdrantEdgeVectorStore)")
    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.e5v import E5VEmbedding
    from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore  # the CLI made an Edge folder (the default)

    vector_store = QdrantEdgeVectorStore(path=str(work / "qdrant_data"), collection_name="docs")
    index = VectorStoreIndex.from_vector_store(vector_store, embed_model=E5VEmbedding(model_name=model))
    for hit in index.as_retriever(similarity_top_k=2).retrieve("double charge on an invoice"):
        print(f"{hit.score:.3f}  {type(hit.node).__name__}  {hit.node.metadata['source']}")
    vector_store.close()


if __name__ == "__main__":
    main()
