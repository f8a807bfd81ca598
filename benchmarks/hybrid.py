"""Cost of hybrid search: BM25 sparse encoding, and hybrid (prefetch + RRF) vs dense query latency, side by side.

Run:  python benchmarks/hybrid.py [--points 2000] [--queries 50]   (about a minute on 2 idle CPU cores)

What it does
- Encodes synthetic chunks of ~300 words (a 512-token chunk) with ``sparse.sparse_doc_fn`` and reports chunks/s; for
  scale, E5-V embeds a text chunk in tens to hundreds of milliseconds on a CPU, so sparse encoding is noise beside it.
- Builds one Qdrant collection in local mode (in memory) the way ``ingest --hybrid`` does: ``--points`` points with a
  random unit 4096-d dense vector and the BM25 sparse vector of their chunk (``Modifier.IDF``).
- Times ``QdrantStore.query`` dense-only and hybrid (two prefetches fused with RRF) on the same queries, interleaved
  (order flipped every query); reports medians and the median of the per-query paired ratios.
- Local mode is brute force in Python; on a server both queries use indexes, so the ratio here is an upper bound of
  what the extra prefetch costs there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

WORDS = (
    "pump valve boiler filter gasket sensor relay motor harbour crane tide ship cargo lamp storm winter keeper log "
    "pressure temperature inspection report invoice order part replacement warranty supplier schedule shift hall"
).split()


def chunk(rng, i: int) -> str:
    words = rng.choice(WORDS, size=300).tolist()
    words[rng.integers(300)] = f"QZ-{i:05d}-K"  # one rare code per chunk
    return " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()

    from qdrant_client import QdrantClient, models

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.sparse import SPARSE_VECTOR_NAME, sparse_doc_fn, sparse_query_fn
    from e5v_qdrant.store import VECTOR_NAME, QdrantStore, collection_create_kwargs

    rng = np.random.default_rng(0)
    texts = [chunk(rng, i) for i in range(args.points)]
    started = time.perf_counter()
    indices, values = sparse_doc_fn(texts)
    encode_s = time.perf_counter() - started

    client = QdrantClient(":memory:")
    client.create_collection("bench", **collection_create_kwargs(StoreConfig(), 4096, server=False, sparse=True))
    dense = rng.standard_normal((args.points, 4096)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = [
        models.PointStruct(
            id=i,
            vector={
                VECTOR_NAME: dense[i].tolist(),
                SPARSE_VECTOR_NAME: models.SparseVector(indices=indices[i], values=values[i]),
            },
            payload={"modality": "text"},
        )
        for i in range(args.points)
    ]
    for start in range(0, len(points), 256):
        client.upsert("bench", points[start : start + 256], wait=True)
    store = QdrantStore(StoreConfig(), client=client)

    dense_ms, hybrid_ms, ratios, found = [], [], [], 0
    for q in range(args.queries):
        target = int(rng.integers(args.points))
        vector = rng.standard_normal(4096).astype(np.float32)
        qi, qv = sparse_query_fn([f"QZ-{target:05d}-K"])
        sparse = (qi[0], qv[0])
        timings = {}
        for kind in ("dense", "hybrid") if q % 2 == 0 else ("hybrid", "dense"):
            t0 = time.perf_counter()
            hits = store.query("bench", vector, top_k=10, sparse=sparse if kind == "hybrid" else None)
            timings[kind] = (time.perf_counter() - t0) * 1000
            if kind == "hybrid":
                found += int(hits[0].id == target)
        dense_ms.append(timings["dense"])
        hybrid_ms.append(timings["hybrid"])
        ratios.append(timings["hybrid"] / timings["dense"])

    rows = [
        (
            "BM25 sparse encoding",
            f"{args.points / encode_s:,.0f} chunks/s",
            f"{encode_s / args.points * 1000:.2f} ms/chunk",
        ),
        ("dense query (local mode)", f"{statistics.median(dense_ms):.1f} ms", "1.00x"),
        ("hybrid query, prefetch + RRF", f"{statistics.median(hybrid_ms):.1f} ms", f"{statistics.median(ratios):.2f}x"),
        ("hybrid top-1 = the chunk with the code", f"{found}/{args.queries}", ""),
    ]
    print(f"{args.points} points, 4096-d dense + BM25 sparse, {args.queries} queries, top-k 10")
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'median':>16}  {'vs dense':>14}")
    for name, a, b in rows:
        print(f"{name:{width}}  {a:>16}  {b:>14}")


if __name__ == "__main__":
    main()
