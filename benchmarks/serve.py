"""`e5v-qdrant serve` under load: 16 concurrent clients against one sequential client, same requests, same server.

Run:  python benchmarks/serve.py [--quick]   (about 5 minutes on 2 idle CPU cores)

What it does
- Builds the scaled E5-V replica of ``benchmarks/encoder.py`` (Llama hidden 512 × 4 layers, CLIP 336 px / patch 14,
  so an image is the real 1.2k–2.9k tokens) and starts a real ``e5v-qdrant serve`` process on 127.0.0.1 (float32,
  CPU, the server's default --max-batch-size 32 and --max-wait-ms 5; the encoder's --batch-size 16).
- Texts: N single-text ``POST /v1/embeddings`` requests (queries of 3–30 words). "sequential" sends them one after
  another from one client; "16 clients" sends the same requests from 16 threads, each its share in turn. Images: the
  same with vLLM-style image messages (mixed sizes and aspect ratios).
- Each mode runs ``--repeats`` times, interleaved (order reversed every repeat); the table reports the median wall
  time, requests/s, and p50/p95 request latency over all repeats; the ratio is the median of per-repeat ratios.
- Then it reads the server's /metrics: the mean number of inputs per encoder call shows the coalescing.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import VOCAB, spec  # noqa: E402  (the replica and word list of benchmarks/encoder.py)

IMAGE_SIZES = [(640, 480), (480, 640), (336, 336), (800, 600), (500, 900), (300, 300), (1024, 512), (600, 800)]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(3, 30))) for _ in range(n)]


def images(n: int, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = random.Random(seed)
    urls = []
    for i in range(n):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        for _ in range(40):
            x, y = rng.randrange(w), rng.randrange(h)
            img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(w, x + 40), min(h, y + 40)))
        out = io.BytesIO()
        img.save(out, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(out.getvalue()).decode())
    return urls


def body(kind: str, item: str) -> dict:
    if kind == "text":
        return {"model": "e5-v", "input": item}
    return {
        "model": "e5-v",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": item}}]}],
    }


def run(url: str, kind: str, items: list[str], clients: int) -> tuple[float, list[float]]:
    """Send every item as its own request from ``clients`` threads; returns wall seconds and per-request latencies."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(share: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            for item in share:
                started = time.perf_counter()
                r = c.post("/v1/embeddings", json=body(kind, item))
                took = time.perf_counter() - started
                if r.status_code != 200:
                    errors.append(r.text)
                with lock:
                    latencies.append(took)

    shares = [items[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return wall, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64, help="single-text requests per mode")
    parser.add_argument("--images", type=int, default=8, help="single-image requests per mode")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the encoder's --batch-size in the server")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching window")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="OMP_NUM_THREADS of the server (default: torch's, = cores)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.images, args.repeats = 32, 4, 1

    import httpx

    from e5v_qdrant.testing import build_replica

    load = os.getloadavg()[0]  # other processes on the machine: the table is only as quiet as they are
    tmp = tempfile.mkdtemp(prefix="e5v-serve-bench-")
    replica = build_replica(Path(tmp) / "replica", spec())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path(tmp) / "serve.log", "w")
    cmd = [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--model", str(replica), "--device", "cpu",
           "--dtype", "float32", "--port", str(port), "--batch-size", str(args.batch_size),
           "--max-wait-ms", str(args.max_wait_ms)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(open(Path(tmp) / "serve.log").read())
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.3)
        workloads = {"text": texts(args.texts), "image": images(args.images)}
        workloads = {kind: items for kind, items in workloads.items() if items}
        for kind, items in workloads.items():  # warm-up: first calls allocate and tune
            run(url, kind, items[:4], 1)
        rows = []
        for kind, items in workloads.items():
            results = {"sequential": [], f"{args.clients} clients": []}
            modes = [("sequential", 1), (f"{args.clients} clients", args.clients)]
            for r in range(args.repeats):
                for name, clients in modes if r % 2 == 0 else modes[::-1]:
                    results[name].append(run(url, kind, items, clients))
            ratios = [
                seq[0] / con[0]
                for seq, con in zip(results["sequential"], results[f"{args.clients} clients"], strict=True)
            ]
            for name, _ in modes:
                walls = [w for w, _ in results[name]]
                lat = [x for _, ls in results[name] for x in ls]
                wall = statistics.median(walls)
                rows.append(
                    (
                        kind,
                        name,
                        len(items),
                        wall,
                        len(items) / wall,
                        percentile(lat, 0.5) * 1000,
                        percentile(lat, 0.95) * 1000,
                        statistics.median(ratios) if name != "sequential" else 1.0,
                    )
                )
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(60)
    threads = f"OMP_NUM_THREADS={args.torch_threads}" if args.torch_threads else "torch default threads"
    print(f"\nreplica: {spec()}\nserver: {' '.join(cmd[3:])} ({threads})")
    print(
        f"repeats: {args.repeats}, CPUs: {os.cpu_count()}, 1-min load average at start / end: {load:.1f} / {os.getloadavg()[0]:.1f}\n"
    )
    print("| inputs | mode | requests | wall s | requests/s | p50 ms | p95 ms | throughput vs sequential |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, name, n, wall, rps, p50, p95, ratio in rows:
        print(f"| {kind} | {name} | {n} | {wall:.2f} | {rps:.1f} | {p50:.0f} | {p95:.0f} | {ratio:.2f}x |")
    print()
    for kind in ("text", "image"):
        count = total = 0.0
        for line in metrics.splitlines():
            if line.startswith(f'e5v_batch_inputs_count{{kind="{kind}"}}'):
                count = float(line.rsplit(" ", 1)[1])
            if line.startswith(f'e5v_batch_inputs_sum{{kind="{kind}"}}'):
                total = float(line.rsplit(" ", 1)[1])
        if count:
            print(f"{kind}: {int(total)} inputs in {int(count)} encoder calls, {total / count:.2f} inputs per call")


if __name__ == "__main__":
    main()
