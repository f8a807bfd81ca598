"""Cost of hybrid search: BM25 sparse encoding, and hybrid (prefetch + RRF) vs dense query latency, side by side.

Run:  python benchmarks/hybrid.py [--points 2000] [--queries 50] [--sparse ours|qdrant]   (about a minute on 2 idle
      CPU cores; ``--sparse`` picks ``sparse.BM25Encoder`` or ``sparse.QdrantBM25Encoder``, qdrant-edge-py's ``Bm25``)

What it does
- Encodes synthetic chunks of ~300 words (a 512-token chunk) with the chosen sparse encoder and reports chunks/s; for
  scale, E5-V embeds a text chunk in tens to hundreds of milliseconds on a CPU, so sparse encoding is noise beside it.
- Builds one Qdrant collection in local mode (in memory) the way ``ingest --hybrid`` does: ``--points`` points with a
  random unit 4096-d dense vector and the BM25 sparse vector of their chunk (``Modifier.IDF``).
- Times ``QdrantStore.query`` dense-only and hybrid (two prefetches fused with RRF, and with DBSF) on the same
  queries, interleaved (order flipped every query); reports medians and the medians of the per-query paired ratios.
- Local mode is brute force in Python; on a server both queries use indexes, so the ratio here is an upper bound of
  what the extra prefetch costs there.
- The last column counts how often the chunk holding the queried code comes first. The dense vectors here are pure
  noise (as E5-V's one-word summary of a bare part number may well be) and every code shares ``qz`` and ``k`` with
  every other chunk: the worst case for reciprocal rank fusion, where a dense hit that also matches ``qz``/``k``
  somewhere in the sparse list collects two reciprocal ranks and beats the code's chunk, which has only the sparse
  one. Distribution-based score fusion sums normalized scores instead, so the code's far-above-the-rest sparse score
  wins. (The test suite's 40-note corpus, without shared code fragments, finds its codes at top-1 with RRF.)
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
    parser.add_argument("--sparse", choices=("ours", "qdrant"), default="ours", help="the sparse encoder to measure")
    args = parser.parse_args()

    from qdrant_client import QdrantClient, models

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.sparse import SPARSE_VECTOR_NAME, BM25Encoder, QdrantBM25Encoder
    from e5v_qdrant.store import VECTOR_NAME, QdrantStore, collection_create_kwargs

    encoder = BM25Encoder() if args.sparse == "ours" else QdrantBM25Encoder()
    sparse_doc_fn, sparse_query_fn = encoder.doc_fn, encoder.query_fn
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

    kinds = ("dense", "rrf", "dbsf")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    ratios: dict[str, list[float]] = {k: [] for k in kinds}
    found = dict.fromkeys(("sparse", *kinds), 0)
    for q in range(args.queries):
        target = int(rng.integers(args.points))
        vector = rng.standard_normal(4096).astype(np.float32)
        qi, qv = sparse_query_fn([f"QZ-{target:05d}-K"])
        sparse = (qi[0], qv[0])
        timings = {}
        for kind in kinds if q % 2 == 0 else kinds[::-1]:  # interleaved, order flipped every query
            t0 = time.perf_counter()
            if kind == "dense":
                hits = store.query("bench", vector, top_k=10)
            else:
                hits = store.query("bench", vector, top_k=10, sparse=sparse, fusion=kind)
            timings[kind] = (time.perf_counter() - t0) * 1000
            found[kind] += int(hits[0].id == target)
        sparse_only = client.query_points(
            "bench", query=models.SparseVector(indices=qi[0], values=qv[0]), using=SPARSE_VECTOR_NAME, limit=1
        ).points
        found["sparse"] += int(sparse_only[0].id == target)
        for kind in kinds:
            times[kind].append(timings[kind])
            ratios[kind].append(timings[kind] / timings["dense"])

    n = args.queries
    rows = [
        (
            f"{encoder.spec()['name']} sparse encoding",
            f"{args.points / encode_s:,.0f} chunks/s",
            f"{encode_s / args.points * 1000:.2f} ms/chunk",
            "",
        ),
        ("dense query", f"{statistics.median(times['dense']):.1f} ms", "1.00x", f"{found['dense']}/{n}"),
        ("sparse-only query", "", "", f"{found['sparse']}/{n}"),
        (
            "hybrid, RRF (default)",
            f"{statistics.median(times['rrf']):.1f} ms",
            f"{statistics.median(ratios['rrf']):.2f}x",
            f"{found['rrf']}/{n}",
        ),
        (
            "hybrid, DBSF (--fusion dbsf)",
            f"{statistics.median(times['dbsf']):.1f} ms",
            f"{statistics.median(ratios['dbsf']):.2f}x",
            f"{found['dbsf']}/{n}",
        ),
    ]
    print(f"{args.points} points, 4096-d dense + BM25 sparse, {args.queries} queries, top-k 10, Qdrant local mode")
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'median':>16}  {'vs dense':>14}  {'top-1 = code chunk':>18}")
    for name, a, b, c in rows:
        print(f"{name:{width}}  {a:>16}  {b:>14}  {c:>18}")


if __name__ == "__main__":
    main()
