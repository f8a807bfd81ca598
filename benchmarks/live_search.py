"""`/v1/search` latency while `serve --watch` ingests a burst of files, against the same searches with nothing to ingest.

Run:  nice -n 19 python benchmarks/live_search.py [--files 200] [--searches 60] [--replica tiny|scaled]

What it does
- Builds a replica (``tiny``: the tests' one; ``scaled``: ``benchmarks/encoder.py``'s, compute-bound as the 8B model
  is on a CPU) and a folder of 20 text files, and starts a real ``e5v-qdrant serve --watch FOLDER --collection docs``
  process on 127.0.0.1 (float32, CPU, default batching).
- Baseline: once the catch-up is done, ``--searches`` sequential ``POST /v1/search`` text queries (3–12 words).
- Burst: ``--files`` text files (one or two chunks each) are written into the folder at once; the same client sends
  the same searches, one after another, until the burst is in the collection.
- Reports p50/p95/max search latency of both phases, the searches answered during the burst, how long the burst
  took to be in the collection, and the server's ingest counters from /metrics.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import VOCAB, spec  # noqa: E402  (the replica and word list of benchmarks/encoder.py)


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def search(client: httpx.Client, query: str) -> float:
    started = time.perf_counter()
    answer = client.post("/v1/search", json={"collection": "docs", "text": query, "top_k": 5})
    answer.raise_for_status()
    return time.perf_counter() - started


def status(client: httpx.Client) -> dict:
    return client.get("/v1/collections/docs").json()


def metric(client: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--searches", type=int, default=60)
    parser.add_argument("--replica", choices=("tiny", "scaled"), default="tiny")
    args = parser.parse_args()

    from e5v_qdrant.testing import build_replica

    rng = random.Random(0)
    queries = [words(rng, 3, 12) for _ in range(args.searches)]
    with tempfile.TemporaryDirectory() as tmp:
        replica = build_replica(Path(tmp) / "replica", spec() if args.replica == "scaled" else None)
        folder = Path(tmp) / "notes"
        folder.mkdir()
        for i in range(20):
            (folder / f"seed{i:02d}.txt").write_text(words(rng, 40, 120))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--watch", str(folder), "--collection", "docs",
               "--qdrant-path", str(Path(tmp) / "store"), "--model", str(replica), "--device", "cpu",
               "--dtype", "float32", "--port", str(port), "--watch-quiet-ms", "200"]  # fmt: skip
        log = open(Path(tmp) / "serve.log", "w")
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
            deadline = time.monotonic() + 300
            while True:
                try:
                    ready = status(client)
                    if ready.get("state") == "watching" and ready["pending"] == 0:
                        break
                except (httpx.TransportError, KeyError):
                    pass
                assert server.poll() is None and time.monotonic() < deadline, open(Path(tmp) / "serve.log").read()
                time.sleep(0.2)
            for query in queries[:5]:  # warm-up
                search(client, query)
            baseline = [search(client, q) for q in queries]

            before = ready["points"]
            embedded_before = metric(client, "e5v_ingest_embedded_items_total")
            burst_started = time.perf_counter()
            for i in range(args.files):
                (folder / f"burst{i:04d}.txt").write_text(words(rng, 20, 150))
            during, synced_after = [], None
            i = 0
            while synced_after is None:  # searches for as long as the burst is being synced
                during.append(search(client, queries[i % len(queries)]))
                i += 1
                now = status(client)
                done = now["state"] == "watching" and now["pending"] == 0 and now["ingesting"] == 0
                if done and now["points"] >= before + args.files:
                    synced_after = time.perf_counter() - burst_started
            embedded = metric(client, "e5v_ingest_embedded_items_total") - embedded_before
        finally:
            server.terminate()
            server.wait(60)

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {percentile(ms, 0.95):.0f} | {max(ms):.0f} |"

    print(f"replica {args.replica}, {args.files} files, load average {os.getloadavg()[0]:.1f}")
    print("| phase | searches | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|")
    print(row("no ingest (baseline)", baseline))
    print(row(f"during the {args.files}-file burst", during))
    print(f"burst in the collection after {synced_after:.1f} s ({embedded:.0f} items embedded by ingestion)")


if __name__ == "__main__":
    main()
