"""Embedded stores side by side: qdrant-client local mode vs Qdrant Edge, directly and through LlamaIndex.

Each case runs in its own child process (so peak RSS is its own) on the same synthetic E5-V-sized data: N unit
4096-d float32 vectors (drawn around 200 random centres, like topical chunks) with ~1.6 KB chunk payloads. It measures

- write: points/s of upserts in batches of 64 (``QdrantStore.upsert``; LlamaIndex: ``vector_store.add``), and the
  close (Edge: flush + optimizer) in seconds;
- reopen: seconds to open the folder again and count the points;
- query p50 / p95 (ms) over ``--queries`` top-10 queries (stored vectors plus noise) and recall@10 against exact
  numpy cosine search;
- peak RSS of the child (GiB) and the folder's size on disk (MiB).

Run (the machine is shared: run it once, niced):
    nice python benchmarks/store.py --points 10000
    nice python benchmarks/store.py --points 100000 --cases edge-store     # local mode cannot fit 100k in RAM
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DIM = 4096
CASES = ("local-store", "edge-store", "local-llamaindex", "edge-llamaindex")


def _data(n: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 200, size=n)] + 0.7 * rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    picked = rng.integers(0, n, size=queries)
    q = x[picked] + 0.05 * rng.normal(size=(queries, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def _payload(i: int) -> dict:
    text = (f"chunk {i} " + "lorem ipsum dolor sit amet " * 60)[:1400]
    return {"source": f"/corpus/file{i // 20}.md", "modality": "text", "chunk_index": i % 20, "text": text}


def _exact_top10(x: np.ndarray, q: np.ndarray) -> list[list[int]]:
    out = []
    for start in range(0, len(q), 16):
        scores = q[start : start + 16] @ x.T
        out.extend(np.argsort(-scores, axis=1)[:, :10].tolist())
    return out


def _du(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not os.path.islink(os.path.join(root, f)))
    return total / 2**20


def _run_case(case: str, n: int, queries: int, folder: str) -> dict:
    from qdrant_client import models

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore

    x, q = _data(n, queries)
    truth = _exact_top10(x, q)
    engine, mode = case.split("-")
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]
    index_of = {pid: i for i, pid in enumerate(ids)}
    result: dict = {"case": case, "points": n}

    if mode == "store":
        config = StoreConfig(qdrant_path=folder, embedded=engine, write_batch_size=64)
        start = time.perf_counter()
        store = QdrantStore(config)
        store.client.create_collection(
            "bench", vectors_config={"text-dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
        for s in range(0, n, 1024):
            store.upsert(
                "bench",
                [
                    models.PointStruct(id=ids[i], vector={"text-dense": x[i].tolist()}, payload=_payload(i))
                    for i in range(s, min(n, s + 1024))
                ],
            )
        written = time.perf_counter() - start
        start = time.perf_counter()
        store.close()
        result["close_s"] = time.perf_counter() - start
        start = time.perf_counter()
        store = QdrantStore(config)
        assert store.count("bench") == n
        result["reopen_s"] = time.perf_counter() - start

        def search(v):
            return [index_of[str(p.id)] for p in store.query("bench", v, top_k=10)]

        close = store.close
    else:
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores.types import VectorStoreQuery

        def nodes(s, e):
            return [
                TextNode(id_=ids[i], text=_payload(i)["text"], metadata={"source": _payload(i)["source"]},
                         embedding=x[i].tolist())
                for i in range(s, e)
            ]  # fmt: skip

        def open_vs():
            if engine == "edge":
                from e5v_qdrant.llamaindex_edge import QdrantEdgeVectorStore

                return QdrantEdgeVectorStore(path=folder, collection_name="bench")
            from llama_index.vector_stores.qdrant import QdrantVectorStore
            from qdrant_client import QdrantClient

            return QdrantVectorStore(client=QdrantClient(path=folder), collection_name="bench")

        def close_vs(vs):
            if engine == "edge":
                vs.close()
            else:
                vs.client.close()

        start = time.perf_counter()
        vs = open_vs()
        for s in range(0, n, 1024):
            vs.add(nodes(s, min(n, s + 1024)))
        written = time.perf_counter() - start
        start = time.perf_counter()
        close_vs(vs)
        result["close_s"] = time.perf_counter() - start
        start = time.perf_counter()
        vs = open_vs()
        vs.query(VectorStoreQuery(query_embedding=q[0].tolist(), similarity_top_k=1))
        result["reopen_s"] = time.perf_counter() - start

        def search(v):
            return [
                index_of[i] for i in vs.query(VectorStoreQuery(query_embedding=v.tolist(), similarity_top_k=10)).ids
            ]

        def close():
            close_vs(vs)

    result["write_pts_s"] = n / written
    latencies, hits = [], 0
    for qi, v in enumerate(q):
        start = time.perf_counter()
        got = search(v)
        latencies.append((time.perf_counter() - start) * 1000)
        hits += len(set(got) & set(truth[qi]))
    close()
    result["query_p50_ms"] = float(np.percentile(latencies, 50))
    result["query_p95_ms"] = float(np.percentile(latencies, 95))
    result["recall_at_10"] = hits / (10 * len(q))
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["disk_mib"] = _du(folder)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder = tempfile.mkdtemp(prefix="e5v-bench-store-")
        try:
            print(json.dumps(_run_case(args.child, args.points, args.queries, folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    rows = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--child", case, "--points", str(args.points), "--queries", str(args.queries)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"done: {case}", file=sys.stderr, flush=True)
    cols = [
        "write_pts_s",
        "close_s",
        "reopen_s",
        "query_p50_ms",
        "query_p95_ms",
        "recall_at_10",
        "peak_rss_gib",
        "disk_mib",
    ]
    print("| case | points | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['case']} | {r['points']} | " + " | ".join(f"{r[c]:.3g}" for c in cols) + " |")
    by = {r["case"]: r for r in rows}
    for mode in ("store", "llamaindex"):
        a, b = by.get(f"local-{mode}"), by.get(f"edge-{mode}")
        if a and b:
            write, query = b["write_pts_s"] / a["write_pts_s"], a["query_p50_ms"] / b["query_p50_ms"]
            rss, reopen = a["peak_rss_gib"] / b["peak_rss_gib"], a["reopen_s"] / b["reopen_s"]
            print(
                f"{mode}: Edge vs local mode: write {write:.1f}x faster, query p50 {query:.1f}x faster, "
                f"peak RSS {rss:.1f}x lower, reopen {reopen:.1f}x faster"
            )


if __name__ == "__main__":
    main()
