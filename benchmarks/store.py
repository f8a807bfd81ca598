"""Embedded stores side by side: qdrant-client local mode vs Qdrant Edge, directly and through LlamaIndex.

Each case runs in its own child process (so peak RSS is its own) on the same synthetic E5-V-sized data, N unit 4096-d
float32 vectors with ~1.6 KB chunk payloads, of each shape given by ``--data`` (``_Data``: ``isotropic`` = around 200
far-apart centres, queried with stored vectors plus noise; ``embedding`` = a shared mean direction and intrinsic
dimension 64, queried with fresh draws). It measures

- write: points/s of the write calls alone (``QdrantStore.upsert``, which sends batches of 64; LlamaIndex:
  ``vector_store.add``), given ``BATCH`` ready points or nodes per call (building them is the caller's work and not
  timed), and the close (Edge: flush + optimizer, i.e. the HNSW build; with ``--bulk-load`` the build at the end of
  the bulk block is counted here too) in seconds; write_build counts both;
- reopen: seconds to open the folder again and count the points;
- query p50 / p95 (ms) over ``--queries`` top-10 queries (stored vectors plus noise) and recall@10 against exact
  numpy cosine search;
- memory (GiB): the child's peak RSS over its life (``ru_maxrss``); its peak PSS and peak anonymous (heap) part,
  sampled by the parent every 0.5 s; the peak RSS and anonymous part while reopening and querying; the baseline
  before the store opens (interpreter and imports). The data set is generated batch by batch and each batch is
  let go once written, so the child never holds it and these are the store's;
- the folder's size on disk (MiB).

``--on-disk``, ``--float16``, ``--quantization``, ``--quantized-on-disk``, ``--m``, ``--ef-construct`` and ``--bulk-load`` apply to the
``*-store`` cases' collection (``QdrantStore.create_plain``, the store's options; ``--quantization int8|turbo4|binary``);
``--sweep EF...`` searches the edge-store index again with each ``hnsw_ef`` (the recall-latency curve), and with
``--sweep-oversampling X...`` with each oversampling factor too (the grid); ``--keep DIR`` keeps the store folders. Data is generated and written batch by batch
and the exact top-10 merged batch by batch, so ``--n 1000000`` never holds the data set.

Run (the machine is shared: run it once, niced):
    nice python benchmarks/store.py --n 20000 --cases local-llamaindex edge-llamaindex edge-store --sweep 256 512
    nice python benchmarks/store.py --n 100000 --data embedding --cases edge-store --bulk-load --sweep 256 512 768
    nice -n 19 python benchmarks/store.py --n 250000 --data embedding --cases edge-store --bulk-load --float16 \
        --on-disk --quantization turbo4 --sweep 1024 2048 --sweep-oversampling 1 2 4
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


BATCH = 256  # points per write call (the harness holds one batch of Python float lists at a time)


class _Data:
    """The data set, generated batch by batch from a seed so the process never holds it (its RSS stays the store's).

    Batch ``s`` (points ``s .. s+BATCH``) is a pure function of ``(seed, shape, s)``. Two shapes:

    - ``isotropic``: unit vectors around 200 random centres plus isotropic noise (like topical chunks); queries are
      stored vectors plus a little noise. Clusters are far apart (cosine ~0 between, ~0.67 within) and each query's
      nearest point is its own source: easy for any index.
    - ``embedding``: shaped like real text embeddings (E5-V's included): a shared mean direction (mean pairwise cosine
      ~0.5), variation in a random 64-d subspace (intrinsic dimension 64) plus a little full-rank noise; queries are
      fresh draws from the same distribution, not stored points. Neighbours are close in score and the graph must
      be navigated: this is the shape recall is measured on.
    """

    LATENT = 64  # intrinsic dimension of the embedding shape
    NOISE = 0.1  # full-rank noise energy, relative to the latent part's

    def __init__(self, n: int, queries: int, seed: int = 0, shape: str = "isotropic"):
        self.n, self.seed, self.shape = n, seed, shape
        rng = np.random.default_rng(seed)
        if shape == "isotropic":
            self.centres = rng.normal(size=(200, DIM)).astype(np.float32)
        else:
            mean = rng.normal(size=DIM)
            basis, _ = np.linalg.qr(rng.normal(size=(DIM, self.LATENT)))
            # |mean|^2 = the spread's energy (latent + noise): mean pairwise cosine ~0.5
            self.mean = (mean / np.linalg.norm(mean) * np.sqrt(self.LATENT * (1 + self.NOISE))).astype(np.float32)
            self.basis = basis.T.astype(np.float32)  # LATENT x DIM, orthonormal rows
        rng = np.random.default_rng([seed, 1])
        if shape == "isotropic":
            self.picked = rng.integers(0, n, size=queries)
            q = np.stack([self.batch(p - p % BATCH)[p % BATCH] for p in self.picked])
            q += 0.05 * rng.normal(size=q.shape).astype(np.float32)
            self.queries = q / np.linalg.norm(q, axis=1, keepdims=True)
        else:
            self.queries = self._draw(rng, queries)

    def _draw(self, rng, size: int) -> np.ndarray:
        z = rng.normal(size=(size, self.LATENT)).astype(np.float32)
        noise = rng.normal(size=(size, DIM)).astype(np.float32) * np.float32(np.sqrt(self.LATENT * self.NOISE / DIM))
        x = self.mean + z @ self.basis + noise
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def batch(self, start: int) -> np.ndarray:
        size = min(self.n, start + BATCH) - start
        if self.shape == "embedding":
            return self._draw(np.random.default_rng([self.seed, 3, start]), size)
        rng = np.random.default_rng([self.seed, 2, start])
        x = self.centres[rng.integers(0, 200, size=size)] + 0.7 * rng.normal(size=(size, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def batches(self):
        for start in range(0, self.n, BATCH):
            yield start, self.batch(start)

    def exact_top10(self) -> list[list[int]]:
        """Exact cosine top-10 of every query, merged batch by batch."""
        best_scores = np.full((len(self.queries), 0), -np.inf, dtype=np.float32)
        best_ids = np.zeros((len(self.queries), 0), dtype=np.int64)
        for start, x in self.batches():
            scores = np.concatenate([best_scores, self.queries @ x.T], axis=1)
            ids = np.concatenate(
                [best_ids, np.broadcast_to(np.arange(start, start + len(x)), (len(scores), len(x)))], 1
            )
            keep = np.argsort(-scores, axis=1)[:, :10]
            best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
        return best_ids.tolist()


def _payload(i: int) -> dict:
    text = (f"chunk {i} " + "lorem ipsum dolor sit amet " * 60)[:1400]
    return {"source": f"/corpus/file{i // 20}.md", "modality": "text", "chunk_index": i % 20, "text": text}


class _MemoryWatch:
    """Samples a process's memory from a thread: RSS and its anonymous part, or also PSS (``pss=True``).

    File-backed pages are Qdrant's mmapped segment files: they count in RSS while cached but the kernel can drop
    them under pressure; anonymous pages are the heap it cannot. RSS counts a page once per mapping, PSS once
    (a page mapped twice counts half per mapping): the memory the process really holds. They differ when a file
    is mapped twice, as Qdrant does with vector files unless ``QDRANT_NO_MULTI_MMAP`` is set (the store sets it;
    see e5v_qdrant/store/edge/).

    RSS comes from ``/proc/<pid>/status`` (cheap, every 20 ms). PSS needs ``/proc/<pid>/smaps_rollup``, a walk of
    the page tables under the process's memory lock that slows a 3 GB process down, so it is read every 0.5 s.
    qdrant-edge-py holds the GIL through ``EdgeShard.optimize`` (the HNSW build), so a thread inside the measured
    process takes no samples then: the lifetime peaks are sampled by the parent, from outside.
    """

    def __init__(self, pid: int | str = "self", pss: bool = False):
        import threading

        if pss:
            self.path, self.every, self.fields = f"/proc/{pid}/smaps_rollup", 0.5, ("Rss", "Pss", "Anonymous")
        else:
            self.path, self.every, self.fields = f"/proc/{pid}/status", 0.02, ("VmRSS", "RssAnon")
        self.peak = dict.fromkeys(self.fields, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            with open(self.path) as f:
                lines = f.readlines()
        except (FileNotFoundError, ProcessLookupError):  # the measured child has exited
            return
        for line in lines:
            key, _, value = line.partition(":")
            if key in self.fields:
                self.peak[key] = max(self.peak[key], int(value.split()[0]) * 1024)

    def _run(self):
        while not self._stop.wait(self.every):
            self.sample()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak


def _du(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not os.path.islink(os.path.join(root, f)))
    return total / 2**20


def _run_case(case: str, n: int, queries: int, folder: str, args: argparse.Namespace) -> dict:
    import dataclasses

    from qdrant_client import models

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.store import QdrantStore, bulk_load

    data = _Data(n, queries, shape=args.data[0])
    q = data.queries
    truth = data.exact_top10()
    engine, mode = case.split("-")
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]
    index_of = {pid: i for i, pid in enumerate(ids)}
    result: dict = {"case": case, "data": args.data[0], "points": n}
    baseline = _MemoryWatch().stop()["VmRSS"]

    if mode == "store":
        config = StoreConfig(
            qdrant_path=folder,
            embedded=engine,
            write_batch_size=64,
            on_disk_vectors=args.on_disk,
            vector_datatype="float16" if args.float16 else "float32",
            quantization=args.quantization,
            quantized_on_disk=args.quantized_on_disk,
            oversampling=args.oversampling,
            hnsw_m=args.m,
            hnsw_ef_construct=args.ef_construct,
        )
        start = time.perf_counter()
        store = QdrantStore(config)
        store.create_plain("bench", DIM, storage_options=store.honours_options)
        written = time.perf_counter() - start
        with bulk_load(store, "bench", enabled=args.bulk_load):
            for s, x in data.batches():
                points = [
                    models.PointStruct(id=ids[s + j], vector={"text-dense": v.tolist()}, payload=_payload(s + j))
                    for j, v in enumerate(x)
                ]
                start = time.perf_counter()
                store.upsert("bench", points)
                written += time.perf_counter() - start
                del points  # the caller lets go of each batch: what stays resident is the store's
            build_start = time.perf_counter()  # leaving the block restores HNSW m: the one index build
        build = time.perf_counter() - build_start
        start = time.perf_counter()
        store.close()
        result["close_s"] = time.perf_counter() - start + build
        watch = _MemoryWatch()  # reopening and querying
        start = time.perf_counter()
        store = QdrantStore(config)
        assert store.count("bench") == n
        result["reopen_s"] = time.perf_counter() - start
        result["segments"] = getattr(store.client.get_collection("bench"), "segments_count", None) or 0

        def search(v):
            return [index_of[str(p.id)] for p in store.query("bench", v, top_k=10)]

        close = store.close
    else:
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores.types import VectorStoreQuery

        def node(i, v):
            payload = _payload(i)
            return TextNode(id_=ids[i], text=payload["text"], metadata={"source": payload["source"]}, embedding=v)

        def nodes(s, x):
            return [node(s + j, v.tolist()) for j, v in enumerate(x)]

        def open_vs():
            if engine == "edge":
                from llama_index.vector_stores.qdrant_edge import QdrantEdgeVectorStore

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
        written = time.perf_counter() - start
        for s, x in data.batches():
            batch = nodes(s, x)
            start = time.perf_counter()
            vs.add(batch)
            written += time.perf_counter() - start
            del batch
        start = time.perf_counter()
        close_vs(vs)
        result["close_s"] = time.perf_counter() - start
        watch = _MemoryWatch()  # reopening and querying
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
    result["write_build_pts_s"] = n / (written + result["close_s"])
    result["total_build_min"] = (written + result["close_s"]) / 60  # every write and index build, until indexed

    def measure() -> tuple[float, float, float]:
        latencies, hits = [], 0
        for qi, v in enumerate(q):
            start = time.perf_counter()
            got = search(v)
            latencies.append((time.perf_counter() - start) * 1000)
            hits += len(set(got) & set(truth[qi]))
        return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)), hits / (10 * len(q))

    result["query_p50_ms"], result["query_p95_ms"], result["recall_at_10"] = measure()
    result["sweep"] = []
    if mode == "store" and engine == "edge":  # the recall-latency curve: the same index searched with other efs
        for ef in args.sweep or ():
            for over in args.sweep_oversampling or [config.oversampling]:
                store.config = dataclasses.replace(config, hnsw_ef=ef, oversampling=over)
                p50, p95, recall = measure()
                result["sweep"].append(
                    {
                        "hnsw_ef": ef,
                        "oversampling": over,
                        "query_p50_ms": p50,
                        "query_p95_ms": p95,
                        "recall_at_10": recall,
                    }
                )
    close()
    query_peak = watch.stop()
    gib = 2**30
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["baseline_rss_gib"] = baseline / gib
    result["query_rss_gib"] = query_peak["VmRSS"] / gib
    result["query_anon_gib"] = query_peak["RssAnon"] / gib
    result["disk_mib"] = _du(folder)
    return result


COLS = [
    "write_pts_s",
    "close_s",
    "write_build_pts_s",
    "total_build_min",
    "segments",
    "reopen_s",
    "query_p50_ms",
    "query_p95_ms",
    "recall_at_10",
    "peak_rss_gib",
    "peak_pss_gib",
    "peak_anon_gib",
    "query_rss_gib",
    "query_anon_gib",
    "baseline_rss_gib",
    "disk_mib",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", "--n", type=int, default=10_000, dest="points")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument(
        "--data", nargs="+", default=["isotropic", "embedding"], choices=("isotropic", "embedding"), help="data shapes"
    )
    parser.add_argument("--on-disk", action="store_true", help="*-store cases: vectors on disk (mmap)")
    parser.add_argument("--float16", action="store_true", help="*-store cases: float16 vector storage")
    parser.add_argument(
        "--quantization", default="none", choices=("none", "int8", "binary", "turbo4"), help="*-store cases"
    )
    parser.add_argument(
        "--quantized-on-disk", action="store_true", help="*-store cases: quantized vectors memory-mapped, not in RAM"
    )
    parser.add_argument("--oversampling", type=float, default=2.0, help="*-store cases, with --quantization")
    parser.add_argument("--m", type=int, help="*-store cases: HNSW m (default: the store's)")
    parser.add_argument("--ef-construct", type=int, help="*-store cases: HNSW ef_construct (default: the store's)")
    parser.add_argument("--bulk-load", action="store_true", help="*-store cases: defer indexing, build once")
    parser.add_argument(
        "--sweep", nargs="+", type=int, metavar="EF", help="edge-store: also search with each of these hnsw_ef"
    )
    parser.add_argument(
        "--sweep-oversampling",
        nargs="+",
        type=float,
        metavar="X",
        help="edge-store, with --sweep and --quantization: also search with each of these oversampling factors",
    )
    parser.add_argument("--keep", metavar="DIR", help="make each case's store folder in DIR and keep it (inspection)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder = tempfile.mkdtemp(prefix="e5v-bench-store-", dir=args.keep)
        try:
            print(json.dumps(_run_case(args.child, args.points, args.queries, folder, args)))
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        return
    rows = []
    for shape in args.data:
        for case in args.cases:
            cmd = [sys.executable, __file__, "--child", case, "--data", shape] + [
                a for a in sys.argv[1:] if a not in args.data and a != "--data"
            ]
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            watch = _MemoryWatch(child.pid, pss=True)
            out, _ = child.communicate()
            life = watch.stop()
            if child.returncode:
                raise SystemExit(f"case {case} ({shape}) failed (exit {child.returncode})")
            row = json.loads(out.strip().splitlines()[-1])
            row["peak_pss_gib"], row["peak_anon_gib"] = life["Pss"] / 2**30, life["Anonymous"] / 2**30
            row.setdefault("segments", 0)
            rows.append(row)
            print(f"done: {case} ({shape})", file=sys.stderr, flush=True)
    print("| case | data | points | " + " | ".join(COLS) + " |")
    print("|---|---|---|" + "---|" * len(COLS))
    for r in rows:
        print(f"| {r['case']} | {r['data']} | {r['points']} | " + " | ".join(f"{r[c]:.3g}" for c in COLS) + " |")
    sweeps = [(r, s) for r in rows for s in r["sweep"]]
    if sweeps:
        print(
            "\n| data | points | hnsw_ef | oversampling | recall@10 | query p50 (ms) | query p95 (ms) |\n"
            "|---|---|---|---|---|---|---|"
        )
        for r, s in sweeps:
            print(
                f"| {r['data']} | {r['points']} | {s['hnsw_ef']} | {s['oversampling']:g} | {s['recall_at_10']:.3f} | "
                f"{s['query_p50_ms']:.3g} | {s['query_p95_ms']:.3g} |"
            )
    for shape in args.data:
        by = {r["case"]: r for r in rows if r["data"] == shape}
        for mode in ("store", "llamaindex"):
            a, b = by.get(f"local-{mode}"), by.get(f"edge-{mode}")
            if a and b:
                write, query = b["write_pts_s"] / a["write_pts_s"], a["query_p50_ms"] / b["query_p50_ms"]
                rss, pss = a["peak_rss_gib"] / b["peak_rss_gib"], a["peak_pss_gib"] / b["peak_pss_gib"]
                print(
                    f"{shape}, {mode}: Edge vs local mode: write {write:.2f}x faster "
                    f"({b['write_build_pts_s'] / a['write_build_pts_s']:.2f}x counting the index build), "
                    f"query p50 {query:.2f}x faster, peak RSS {rss:.2f}x lower (PSS {pss:.2f}x), "
                    f"reopen {a['reopen_s'] / b['reopen_s']:.2f}x faster, recall@10 {b['recall_at_10']:.3f} vs "
                    f"{a['recall_at_10']:.3f}"
                )


if __name__ == "__main__":
    main()
