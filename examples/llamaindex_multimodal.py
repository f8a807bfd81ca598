"""A multimodal LlamaIndex index over embedded Qdrant with E5VEmbedding: text→text, text→image, image→image, composed.

Runs on a tiny random replica by default (no download, seconds on a CPU) — the rankings are meaningless, the code
path is the real one. Pass --model royokong/e5-v (or a local folder) for real embeddings.

    python examples/llamaindex_multimodal.py [--model royokong/e5-v] [--qdrant-path ./qdrant_example]

Two ways are shown:
1. ``MultiModalVectorStoreIndex``: texts and images in two Qdrant collections, E5VEmbedding as both embed models.
2. One collection holding both modalities, filled by an ``IngestionPipeline`` (E5VEmbedding embeds image documents as
   images), queried through ``VectorStoreIndex`` with ``E5VEmbedding.query_bundle`` for image and composed queries.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import Document, ImageDocument, ImageNode, NodeWithScore, TextNode
from llama_index.core.vector_stores import VectorStoreQuery
from llama_index.embeddings.e5v import E5VEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from e5v_qdrant.testing import build_replica, draw_image

TEXTS = [
    "A red square on a blue background.",
    "Minutes of the quarterly budget meeting.",
    "A dog runs along the beach at sunset.",
    "Instructions for replacing a bicycle tyre.",
]


def show(title: str, hits: list[NodeWithScore]) -> None:
    print(f"\n{title}")
    for hit in hits:
        node = hit.node
        label = (
            f"[image] {Path(node.image_path).name}" if isinstance(node, ImageNode) else f"[text]  {node.get_content()}"
        )
        print(f"  {hit.score:+.3f}  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a freshly built tiny replica")
    parser.add_argument("--revision", help="hub revision to pin")
    parser.add_argument("--qdrant-path", help="embedded Qdrant folder; default: a temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="e5v-llamaindex-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny replica reproduces the published checkpoint's traps, with warnings
        model = args.model or str(build_replica(work / "tiny-e5v"))
        embed_model = E5VEmbedding(model_name=model, revision=args.revision)
        embed_model.encoder  # noqa: B018 - load now, so the warnings above stay silent

    image_paths = []
    for i, (width, height) in enumerate([(640, 480), (300, 900), (512, 512)]):
        path = work / f"picture{i}.png"
        draw_image(width, height, seed=i).save(path)
        image_paths.append(str(path))

    client = QdrantClient(path=args.qdrant_path or str(work / "qdrant"))
    try:
        # 1. MultiModalVectorStoreIndex: a text collection and an image collection.
        text_store = QdrantVectorStore(client=client, collection_name="example_text")
        image_store = QdrantVectorStore(client=client, collection_name="example_images")
        # Image nodes need metadata: the index skips nodes whose embed content (text + metadata) is empty.
        nodes = [TextNode(text=t) for t in TEXTS] + [
            ImageNode(image_path=p, metadata={"file_name": Path(p).name}) for p in image_paths
        ]
        storage = StorageContext.from_defaults(vector_store=text_store, image_store=image_store)
        MultiModalVectorStoreIndex(
            nodes, storage_context=storage, embed_model=embed_model, image_embed_model=embed_model
        )
        index = MultiModalVectorStoreIndex.from_vector_store(  # reload from Qdrant, as a later process would
            vector_store=text_store,
            image_vector_store=image_store,
            embed_model=embed_model,
            image_embed_model=embed_model,
        )
        retriever = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
        show("text → text: 'a dog on the beach'", retriever.text_retrieve("a dog on the beach"))
        show("text → image: 'a red square'", retriever.text_to_image_retrieve("a red square"))
        show(f"image → image: {Path(image_paths[1]).name}", retriever.image_to_image_retrieve(image_paths[1]))
        composed = embed_model.get_composed_embedding(image_paths[0], "make the background green")
        result = index.image_vector_store.query(VectorStoreQuery(query_embedding=composed, similarity_top_k=2))
        hits = [NodeWithScore(node=n, score=s) for n, s in zip(result.nodes, result.similarities, strict=True)]
        show(f"composed: {Path(image_paths[0]).name} + 'make the background green'", hits)

        # 2. One collection, both modalities, filled by an IngestionPipeline. Its cache keys image documents by
        #    their (empty) text, so different images would collide: disable it.
        mixed = QdrantVectorStore(client=client, collection_name="example_mixed")
        documents = [Document(text=t) for t in TEXTS] + [ImageDocument(image_path=p) for p in image_paths]
        IngestionPipeline(transformations=[embed_model], vector_store=mixed, disable_cache=True).run(
            documents=documents
        )
        mixed_retriever = VectorStoreIndex.from_vector_store(mixed, embed_model=embed_model).as_retriever(
            similarity_top_k=3
        )
        show("one collection, text query: 'budget meeting'", mixed_retriever.retrieve("budget meeting"))
        bundle = embed_model.query_bundle(image=image_paths[2])
        show(f"one collection, image query: {Path(image_paths[2]).name}", mixed_retriever.retrieve(bundle))
        bundle = embed_model.query_bundle(image=image_paths[0], text="make it a circle")
        show("one collection, composed query", mixed_retriever.retrieve(bundle))
    finally:
        client.close()


if __name__ == "__main__":
    main()
