"""Ingest through `e5v-qdrant serve` against in-process ingest, side by side (issue 30).

Run:  nice -n 19 python benchmarks/remote.py [--replica tiny|scaled] [--texts N] [--images N] [--repeats R]

What it does
- Builds a replica (``tiny``: the tests' replica; ``scaled``: the compute-bound replica of ``benchmarks/encoder.py``)
  and a folder of ``--texts`` text files (3–4 chunks each) and ``--images`` images of mixed sizes and aspect ratios.
- Starts a real ``e5v-qdrant serve`` process on the replica (float32, CPU, default batching) on 127.0.0.1.
- In-process: one ``E5VEncoder`` loaded before timing; ``ingest()`` into a fresh embedded store is timed.
  Remote: one ``RemoteEncoder`` (handshake before timing, default 4 requests in flight); the same ``ingest()`` into
  another fresh store is timed. Both runs write the same points (checked). Runs alternate, ``--repeats`` each; the
  table shows median seconds, files/s and the ratio in-process time / remote time (1.00 = as fast). A first,
  uncounted run of each warms both up.
- Around each remote run it reads the server's /metrics: inputs per encoder call (how full the server's batches were).
The client and the server share this machine's cores: on a real deployment the server runs on its own (GPU) box.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import VOCAB, spec  # noqa: E402  (the scaled replica and word list of benchmarks/encoder.py)

IMAGE_SIZES = [(640, 480), (480, 640), (336, 336), (800, 600), (500, 900), (300, 300), (1024, 512), (600, 800)]


def make_folder(root: Path, n_texts: int, n_images: int, seed: int = 0) -> Path:
    from e5v_qdrant.testing import draw_image

    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(n_texts):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(250, 400))]
        (root / f"doc{i:03d}.txt").write_text(" ".join(words) + ".")
    for i in range(n_images):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        draw_image(w, h, seed=i).save(root / f"img{i:03d}.png")
    return root


def batch_counts(url: str) -> tuple[float, float]:
    """The server's encoder calls and inputs so far, all kinds (``e5v_batch_inputs`` in /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {"e5v_batch_inputs_count": 0.0, "e5v_batch_inputs_sum": 0.0}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] += sample.value
    return found["e5v_batch_inputs_count"], found["e5v_batch_inputs_sum"]


@contextlib.contextmanager
def serving(model: Path, log: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import httpx

    cmd = [sys.executable, "-m", "e5v_qdrant.cli", "serve", "--model", str(model), "--device", "cpu",
           "--dtype", "float32", "--port", str(port)]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(log.read_text())
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


def timed_ingest(folder: Path, store_dir: Path, encoder) -> tuple[float, dict]:
    from e5v_qdrant.config import IngestConfig, StoreConfig
    from e5v_qdrant.ingest import ingest
    from e5v_qdrant.store import QdrantStore

    config = IngestConfig(collection="bench", paths=[str(folder)])
    with QdrantStore(StoreConfig(qdrant_path=str(store_dir)), must_exist=False) as store:
        started = time.perf_counter()
        report = ingest(config, encoder, store, progress=False)
        took = time.perf_counter() - started
        assert report.exit_code == 0, report.summary()
        physical = store.resolve("bench")
        ids = {str(r.id) for r in store.scroll(physical, with_payload=False)}
    return took, {"points": len(ids), "ids": ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replica", choices=("tiny", "scaled"), default="scaled")
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from e5v_qdrant import E5VEncoder
    from e5v_qdrant.remote import RemoteEncoder
    from e5v_qdrant.testing import ReplicaSpec, build_replica

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_replica(tmp / "replica", spec() if args.replica == "scaled" else ReplicaSpec())
        folder = make_folder(tmp / "folder", args.texts, args.images)
        local = E5VEncoder(model, device="cpu", dtype="float32")
        times: dict[str, list[float]] = {"in-process": [], "remote": []}
        fills, points = [], {}
        with serving(model, tmp / "serve.log") as url, RemoteEncoder(url) as remote:
            for r in range(args.repeats + 1):  # run 0 warms both up (chunker tokenizer, first passes): not counted
                order = ["in-process", "remote"] if r % 2 == 0 else ["remote", "in-process"]
                for mode in order:
                    before = batch_counts(url)
                    took, facts = timed_ingest(folder, tmp / f"{mode}-{r}", local if mode == "in-process" else remote)
                    after = batch_counts(url)
                    if r == 0:
                        continue
                    times[mode].append(took)
                    points.setdefault(mode, facts["ids"])
                    assert facts["ids"] == points[mode]
                    if mode == "remote":
                        fills.append((after[1] - before[1]) / max(after[0] - before[0], 1))
        assert points["in-process"] == points["remote"], "the two runs wrote different points"
    files = args.texts + args.images
    n_points = len(points["remote"])
    print(
        f"replica {args.replica}; {args.texts} text files + {args.images} images -> {n_points} points; "
        f"repeats {args.repeats}; CPUs {os.cpu_count()}; 1-min load average {load:.1f} -> {os.getloadavg()[0]:.1f}\n"
    )
    print("| mode | seconds (median) | files/s | points/s | inputs per server encoder call | vs in-process |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(times["in-process"])
    for mode, values in times.items():
        s = statistics.median(values)
        fill = f"{statistics.mean(fills):.1f}" if mode == "remote" else ""
        print(f"| {mode} | {s:.2f} | {files / s:.2f} | {n_points / s:.1f} | {fill} | {base / s:.2f}x |")
    print("\nall runs (s):", {mode: [round(v, 2) for v in values] for mode, values in times.items()})


if __name__ == "__main__":
    main()
