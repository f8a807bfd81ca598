"""`e5v-qdrant serve` under load: 16 concurrent clients against one sequential client, same requests, same server.

Run:  python benchmarks/serve.py [--quick] [--replica scaled|tiny]   (about 5 minutes on 2 idle CPU cores)

What it does
- Builds a replica and starts a real ``e5v-qdrant serve`` process on 127.0.0.1 (float32, CPU, the server's default
  --max-batch-size 32 and --max-wait-ms 5; the encoder's --batch-size 16). ``--replica scaled`` (default) is the
  replica of ``benchmarks/encoder.py`` (Llama hidden 512 × 4 layers, CLIP 336 px / patch 14, so an image is the real
  1.2k–2.9k tokens): a forward pass is compute-bound, as the 8B model's is on a CPU. ``--replica tiny`` is the tests'
  replica: a forward pass is mostly fixed per-call cost, as the 8B model's is on a GPU at batch 1 (bound by reading
  16 GB of weights, not by arithmetic), which is the cost coalescing shares.
- Texts: N single-text ``POST /v1/embeddings`` requests (queries of 3–30 words), asking for base64 vectors as the
  openai client does by default. "sequential" sends them one after another from one client; "16 clients" sends the
  same requests from 16 threads, each its share in turn. Images: the same with vLLM-style image messages (mixed sizes
  and aspect ratios).
- Each mode runs ``--repeats`` times, interleaved (order reversed every repeat); the table reports the median wall
  time, requests/s, and p50/p95 request latency over all repeats; the ratio is the median of per-repeat ratios.
- Around each run it reads the server's /metrics: the mean number of inputs per encoder call shows the coalescing.
  With the server stopped, it times the encoder alone in this process on the same inputs, one per call against 16
  per call: the ceiling any batching server can reach on this machine and replica.
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


def body(kind: str, item: str, encoding_format: str) -> dict:
    if kind == "text":
        return {"model": "e5-v", "input": item, "encoding_format": encoding_format}
    return {
        "model": "e5-v",
        "encoding_format": encoding_format,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": item}}]}],
    }


def run(url: str, kind: str, items: list[str], clients: int, encoding_format: str) -> tuple[float, list[float]]:
    """Send every item as its own request from ``clients`` threads; returns wall seconds and per-request latencies.

    Each client connects (and sends one /health) before the clock starts and the threads start together, so the
    wall time is the requests', not thread start-up and TCP connects (which dominated short runs before).
    """
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    sessions = [httpx.Client(base_url=url, timeout=600) for _ in range(clients)]
    for c in sessions:
        c.get("/health")
    gate = threading.Barrier(clients + 1)

    def worker(c, share: list[str]) -> None:
        gate.wait()
        for item in share:
            started = time.perf_counter()
            r = c.post("/v1/embeddings", json=body(kind, item, encoding_format))
            took = time.perf_counter() - started
            if r.status_code != 200:
                errors.append(r.text)
            with lock:
                latencies.append(took)

    shares = [items[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(c, s)) for c, s in zip(sessions, shares, strict=True)]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for c in sessions:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return wall, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def encoder_alone(replica: Path, workloads: dict[str, list[str]], args) -> dict[str, tuple[float, float]]:
    """Seconds to embed each workload with the server's encoder settings one input per call and ``clients`` per call
    (best of ``repeats``): the ceiling of what coalescing requests can gain, measured without any HTTP."""
    from e5v_qdrant.encoder import E5VEncoder
    from e5v_qdrant.server.requests import decode_image_url

    encoder = E5VEncoder(str(replica), device="cpu", dtype="float32", batch_size=args.batch_size)
    out = {}
    for kind, items in workloads.items():
        inputs = items if kind == "text" else [decode_image_url(u, max_pixels=None, name="bench") for u in items]
        embed = encoder.embed_texts if kind == "text" else encoder.embed_images
        embed(inputs[:4])  # warm-up
        singles, grouped = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for x in inputs:
                embed([x])
            singles.append(time.perf_counter() - started)
            started = time.perf_counter()
            for i in range(0, len(inputs), args.clients):
                embed(inputs[i : i + args.clients])
            grouped.append(time.perf_counter() - started)
        out[kind] = (min(singles), min(grouped))
    return out


def batch_counts(url: str, kind: str) -> tuple[float, float]:
    """The server's encoder calls and inputs so far for ``kind`` (from /metrics: ``e5v_batch_inputs``)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {"e5v_batch_inputs_count": 0.0, "e5v_batch_inputs_sum": 0.0}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name in found and sample.labels.get("kind") == kind:
                found[sample.name] = sample.value
    return found["e5v_batch_inputs_count"], found["e5v_batch_inputs_sum"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256, help="single-text requests per mode")
    parser.add_argument("--images", type=int, default=16, help="single-image requests per mode")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="the encoder's --batch-size in the server")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching window")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="OMP_NUM_THREADS of the server (default: torch's, = cores)"
    )
    parser.add_argument(
        "--encoding-format",
        choices=("base64", "float"),
        default="base64",
        help="what the requests ask for (base64 is what the openai client sends unless told otherwise)",
    )
    parser.add_argument(
        "--replica",
        choices=("scaled", "tiny"),
        default="scaled",
        help="scaled: benchmarks/encoder.py's replica (a forward pass is compute-bound, as the 8B model is on a "
        "CPU); tiny: the tests' replica (a forward pass is mostly fixed per-call cost, as the 8B model is on a GPU)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.images, args.repeats = 32, 4, 1

    import httpx

    from e5v_qdrant.testing import build_replica

    load = os.getloadavg()[0]  # other processes on the machine: the table is only as quiet as they are
    tmp = tempfile.mkdtemp(prefix="e5v-serve-bench-")
    replica = build_replica(Path(tmp) / "replica", spec() if args.replica == "scaled" else None)
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
            run(url, kind, items[:4], 1, args.encoding_format)
        rows = []
        for kind, items in workloads.items():
            results = {"sequential": [], f"{args.clients} clients": []}
            modes = [("sequential", 1), (f"{args.clients} clients", args.clients)]
            calls = {name: [0.0, 0.0] for name, _ in modes}  # encoder calls, inputs
            for r in range(args.repeats):
                for name, clients in modes if r % 2 == 0 else modes[::-1]:
                    before = batch_counts(url, kind)
                    results[name].append(run(url, kind, items, clients, args.encoding_format))
                    after = batch_counts(url, kind)
                    calls[name] = [calls[name][i] + after[i] - before[i] for i in range(2)]
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
                        calls[name][1] / max(calls[name][0], 1),
                    )
                )
    finally:
        server.terminate()
        server.wait(60)
    ceiling = encoder_alone(replica, workloads, args)
    threads = f"OMP_NUM_THREADS={args.torch_threads}" if args.torch_threads else "torch default threads"
    print(f"\nreplica: {args.replica} {spec() if args.replica == 'scaled' else '(e5v_qdrant.testing default)'}")
    print(f"server: {' '.join(cmd[3:])} ({threads}); responses: {args.encoding_format}")
    print(
        f"repeats: {args.repeats}, CPUs: {os.cpu_count()}, 1-min load average at start / end: {load:.1f} / {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| inputs | mode | requests | wall s | requests/s | p50 ms | p95 ms | inputs per encoder call | throughput vs sequential |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, name, n, wall, rps, p50, p95, ratio, per_call in rows:
        print(
            f"| {kind} | {name} | {n} | {wall:.2f} | {rps:.1f} | {p50:.0f} | {p95:.0f} | {per_call:.1f} | {ratio:.2f}x |"
        )
    print()
    print("encoder alone, in this process after the server stopped (no HTTP): the same inputs one per call vs")
    print(f"{args.clients} per call — the most batching can gain on this machine, whatever the server does")
    print("| inputs | one per call s | batched s | batching gain |")
    print("|---|---:|---:|---:|")
    for kind, (single, grouped) in ceiling.items():
        print(f"| {kind} | {single:.2f} | {grouped:.2f} | {single / grouped:.2f}x |")


if __name__ == "__main__":
    main()
