"""E5VEncoder against the E5-V authors' inference recipe, side by side in one process, on a scaled replica.

Run:  python benchmarks/encoder.py [--ablations]   (about 5 minutes on 2 idle CPU cores; --quick for a smoke run)

What it does
- Builds a randomly initialised LLaVA-NeXT replica with E5-V's proportions (``e5v_qdrant.testing.build_replica``):
  Llama text model with hidden 512, MLP 3.5× (1792), GQA 8 query / 2 key-value heads, 4 layers; CLIP tower at 336 px
  with patch 14 (577 tokens per tile, real anyres tiling over E5-V's grid pinpoints), hidden 256, 4 layers. An image
  therefore becomes the real 1.2k–2.9k tokens; only the widths and depths are scaled down.
- Workload: 48 texts of 3–300 words, 8 images of mixed aspect ratio; float32; nominal batch size 8; 2 torch threads;
  model loading excluded.
- "recipe" is the authors' procedure written out below: ``LlavaNextProcessor`` on each fixed, unsorted batch of 8
  with ``padding=True`` (left), ``LlavaNextForConditionalGeneration`` full forward with ``output_hidden_states=True``,
  ``hidden_states[-1][:, -1]``, L2-normalise. It gets the two load fixes any current transformers needs to run the
  published checkpoint (embedding table grown by one row for ``<image>``; processor ``patch_size`` etc. filled in).
- Image layouts: the recipe runs the installed transformers, so "encoder" is ``image_layout="llava-next"`` (its
  vectors must equal the recipe's). "encoder, paper layout" is the default ``image_layout="paper"`` (the authors'
  transformers 4.41.2 layout, checked against a real 4.41.2 install in tests/test_image_layout.py): its cosine to
  the recipe is below 1 by design for non-square grids, and its images have other token counts (listed).
- Contestants run interleaved (order reversed every repeat) and the table reports medians; ratios are medians of the
  per-repeat paired ratios, which cancels most of the noise from other processes sharing the CPUs.

Peak memory: the increase of the process's peak resident set size (``VmHWM``) over its resident size just before
the run. Before each run freed heap memory is returned to the OS (``malloc_trim``) and the kernel's high-water mark is
reset (``/proc/self/clear_refs`` = 5), so each run's peak is measured from the same clean baseline. RSS counts what
torch's CPU allocator (plain malloc) really touches — unlike ``tracemalloc``, which sees only Python objects. Linux only;
elsewhere the column says n/a.

Allocator: with ``reuse_cpu_memory`` (on here, as in the CLI; off by default in the Python API) the encoder keeps freed activation memory in glibc's heap during
a call and sets glibc's mmap/trim thresholds to fixed values afterwards; the recipe then runs under those values.
Measured in separate processes, the recipe's text time was the same under them as in an untouched process (9.4-10.8 s
vs 9.6-10.1 s over 6 runs each), so sharing the process does not flatter the ratio. ``--ablations`` adds the encoder
with the option off.

Model FLOP/s: forward FLOPs counted analytically from the replica's config for the *necessary* work (real tokens only:
no padding, no vocabulary logits, the final text layer only where its output is read, the vision tower up to its
feature layer -2): 2 × parameters × tokens for every linear layer, plus causal attention 2 × L² × width per text
layer and 4 × T² × width per vision layer per tile. Compared with the best float32 (and bfloat16) 2048² matmul rate
measured on this machine during the run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

TEXTS, IMAGES, BATCH = 48, 8, 8
IMAGE_SIZES = [(640, 480), (480, 640), (1024, 256), (256, 1024), (800, 800), (1200, 600), (500, 900), (300, 300)]
VOCAB = (
    "the a of and to in is was for on with as by at from that this it be are or an which their has have had not "
    "but they all were can one more when there been would who will its so no out up into than them some could time "
    "cat dog river street city bread cheese table ticket invoice month children football park bench snow mountain "
    "cabin lake recipe flour sugar butter salt photo picture image sentence document query passage window bird "
    "field ball fox man jacket bicycle warm green red blue quick lazy fresh wooden frozen small busy"
).split()


def spec():
    from e5v_qdrant.testing import ReplicaSpec

    return ReplicaSpec(
        hidden_size=512,
        intermediate_size=1792,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        vision_hidden_size=256,
        vision_intermediate_size=1024,
        vision_layers=4,
        vision_heads=4,
        patch_size=14,
    )


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bfloat16 matmuls have hardware support (elsewhere they are emulated)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def make_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(3, 300))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def make_images(n: int, seed: int):
    from e5v_qdrant.testing import draw_image

    return [draw_image(*IMAGE_SIZES[i % len(IMAGE_SIZES)], seed=seed + i) for i in range(n)]


# ---------------------------------------------------------------------------------------------- memory
_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> int | None:
    """Return freed heap to the OS, reset the kernel's peak-RSS mark, and give the resident size now."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status("VmRSS")


def measured(fn):
    """Run ``fn`` and return (its result, seconds, peak RSS increase in bytes or None)."""
    base = _reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return result, seconds, (peak - base) if base is not None and peak is not None else None


class RssSampler:
    """Samples the resident set size every 50 ms in a background thread."""

    def __init__(self):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, _status("VmRSS") or 0))
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------- the recipe
class Recipe:
    """The authors' inference procedure (github.com/kongds/E5-V), with the two fixes current transformers needs."""

    def __init__(self, path: str, dtype):
        import torch
        from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

        self.torch = torch
        self.processor = LlavaNextProcessor.from_pretrained(path)
        self.model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
        cfg = self.model.config
        # Fix 2: processor settings the published (transformers 4.41) processor config lacks.
        self.processor.patch_size = cfg.vision_config.patch_size
        self.processor.vision_feature_select_strategy = cfg.vision_feature_select_strategy
        self.processor.num_additional_image_tokens = 1
        self.processor.tokenizer.padding_side = "left"
        # Fix 1: <image> id == vocab size → grow the embedding table by one row.
        self.model.model.language_model.resize_token_embeddings(cfg.image_token_id + 1, mean_resizing=False)
        from e5v_qdrant.prompts import PromptSet

        self.prompts = PromptSet()
        self.dtype = dtype

    def _run(self, prompts, images=None):
        torch = self.torch
        out = []
        for start in range(0, len(prompts), BATCH):
            kwargs = {"text": prompts[start : start + BATCH], "padding": True, "return_tensors": "pt"}
            if images is not None:
                kwargs["images"] = images[start : start + BATCH]
            inputs = self.processor(**kwargs)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            with torch.no_grad():
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
            out.append(torch.nn.functional.normalize(hidden.float(), dim=-1))
        return torch.cat(out).numpy()

    def embed_texts(self, texts):
        return self._run([self.prompts.for_text(t) for t in texts])

    def embed_images(self, images):
        return self._run([self.prompts.for_image()] * len(images), images)


# ---------------------------------------------------------------------------------------------- FLOPs
def text_flops(cfg, lengths) -> float:
    """Necessary language-model FLOPs: all layers for every token, except that the final layer needs only the keys
    and values of the other tokens (their outputs are never read)."""
    t = cfg.text_config
    head = t.hidden_size // t.num_attention_heads
    q, kv = t.num_attention_heads * head, t.num_key_value_heads * head
    linear = t.hidden_size * (2 * q + 2 * kv) + 3 * t.hidden_size * t.intermediate_size
    total = 0.0
    for n in lengths:
        total += (t.num_hidden_layers - 1) * (2 * linear * n + 2 * n * n * q)  # causal attention: half of 4·L²·width
        total += 2 * t.hidden_size * 2 * kv * (n - 1) + 2 * linear + 4 * n * q  # final layer: K/V for all, rest for one
    return total


def vision_flops(cfg, tiles: int) -> float:
    v, d = cfg.vision_config, cfg.text_config.hidden_size
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    linear = 4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size
    layers = v.num_hidden_layers - 1  # features come from the second-to-last layer (vision_feature_layer = -2)
    per_tile = layers * (2 * linear * tokens + 4 * tokens * tokens * v.hidden_size)
    patch_embed = 2 * 3 * v.patch_size**2 * v.hidden_size * (tokens - 1)
    projector = 2 * (v.hidden_size * d + d * d) * (tokens - 1)
    return tiles * (per_tile + patch_embed + projector)


def matmul_rate(dtype, n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- ingest row
def ingest_once(encoder, folder: Path, store_dir: Path) -> float | None:
    try:
        from e5v_qdrant.config import IngestConfig, StoreConfig
        from e5v_qdrant.ingest import ingest
        from e5v_qdrant.store import QdrantStore
    except ImportError:
        return None
    config = IngestConfig(collection="bench", paths=[str(folder)], chunk_size=4096, chunk_overlap=0)
    start = time.perf_counter()
    with QdrantStore(StoreConfig(qdrant_path=str(store_dir))) as store:
        report = ingest(config, encoder, store, progress=False)
    seconds = time.perf_counter() - start
    if report.exit_code != 0:
        raise RuntimeError(f"ingest failed: {report.to_dict()}")
    return seconds


# ---------------------------------------------------------------------------------------------- main
def fmt_mb(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MB"


def main(argv=None) -> int:
    work = Path(tempfile.mkdtemp(prefix="e5v-bench-"))
    try:
        return run(argv, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(argv, work: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per contestant (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--scale", type=int, default=10, help="size of the memory-flatness run, × the workload (0 = skip)"
    )
    parser.add_argument(
        "--no-bf16", action="store_true", help="skip the bfloat16 rows (skipped anyway without CPU bf16)"
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also run the encoder with forced preprocessing threads, without the last-token shortcut, and with "
        "reuse_cpu_memory off",
    )
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest row")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 12 texts, 2 images, scale 2")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.scale = 1, 2
    warnings.simplefilter("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from e5v_qdrant import E5VEncoder
    from e5v_qdrant.testing import build_replica

    n_texts, n_images = (12, 2) if args.quick else (TEXTS, IMAGES)
    path = str(build_replica(work / "replica", spec()))
    texts, images = make_texts(n_texts, seed=0), make_images(n_images, seed=0)

    print("# replica built; loading models …", file=sys.stderr)
    recipe = Recipe(path, torch.float32)
    enc = E5VEncoder(
        path, device="cpu", dtype="float32", batch_size=BATCH, reuse_cpu_memory=True, image_layout="llava-next"
    )
    enc_paper = E5VEncoder(path, device="cpu", dtype="float32", batch_size=BATCH, reuse_cpu_memory=True)
    enc_threads = None
    if args.ablations:  # preprocessing threads forced on, even where the encoder would not use them (see its docs)
        enc_threads = E5VEncoder(
            path, device="cpu", dtype="float32", batch_size=BATCH, preprocess_workers=2, reuse_cpu_memory=True
        )
        enc_threads._preprocess_workers = lambda: 2
    bf16_ok = not args.no_bf16 and cpu_has_bf16()
    enc_bf16 = (
        E5VEncoder(path, device="cpu", dtype="bfloat16", batch_size=BATCH, reuse_cpu_memory=True) if bf16_ok else None
    )
    cfg = recipe.model.config

    # Useful work, from the encoder's own preparation (identical token ids to the recipe's, checked by the tests).
    text_lengths = [len(enc.text_input_ids(t)) for t in texts]
    prepared_images = [enc._prepare_image(im, enc.prompts.for_image(), "bench") for im in images]
    image_lengths = [len(p.input_ids) for p in prepared_images]
    tiles = sum(int(p.pixel_values.shape[0]) for p in prepared_images)
    flops = {
        "texts": text_flops(cfg, text_lengths),
        "images": text_flops(cfg, image_lengths) + vision_flops(cfg, tiles),
    }
    paper_lengths = [len(enc_paper._prepare_image(im, enc.prompts.for_image(), "bench").input_ids) for im in images]
    flops["images", "encoder, paper layout"] = text_flops(cfg, paper_lengths) + vision_flops(cfg, tiles)

    contestants = {
        "texts": {"recipe": recipe.embed_texts, "encoder": enc.embed_texts},
        "images": {
            "recipe": recipe.embed_images,
            "encoder": enc.embed_images,
            "encoder, paper layout": enc_paper.embed_images,
        },
    }
    if args.ablations:
        enc_full = E5VEncoder(path, device="cpu", dtype="float32", batch_size=BATCH, reuse_cpu_memory=True)
        enc_full._shortcut = None  # every position through the final layer, as the model computes it
        contestants["texts"]["encoder, full last layer"] = enc_full.embed_texts
        contestants["images"]["encoder, full last layer"] = enc_full.embed_images
        enc_alloc = E5VEncoder(path, device="cpu", dtype="float32", batch_size=BATCH, reuse_cpu_memory=False)
        contestants["texts"]["encoder, allocator untouched"] = enc_alloc.embed_texts
        contestants["images"]["encoder, allocator untouched"] = enc_alloc.embed_images
        contestants["images"]["encoder, 2 prep threads"] = enc_threads.embed_images
    if enc_bf16 is not None:
        contestants["texts"]["encoder bf16"] = enc_bf16.embed_texts
        contestants["images"]["encoder bf16"] = enc_bf16.embed_images
    inputs = {"texts": texts, "images": images}
    for kind, group in contestants.items():  # warm-up (lazy initialisation of kernels and thread pools)
        for fn in group.values():
            fn(inputs[kind][:1])

    rates32 = [matmul_rate(torch.float32)]
    rates16 = [matmul_rate(torch.bfloat16)] if enc_bf16 is not None else []
    results: dict = {kind: {name: {"s": [], "mem": []} for name in group} for kind, group in contestants.items()}
    vectors: dict = {kind: {} for kind in contestants}
    print(f"# {args.repeats} interleaved repeats …", file=sys.stderr)
    for r in range(args.repeats):
        for kind, group in contestants.items():
            names = list(group) if r % 2 == 0 else list(reversed(group))
            for name in names:
                out, seconds, mem = measured(lambda fn=group[name], k=kind: fn(inputs[k]))
                results[kind][name]["s"].append(seconds)
                results[kind][name]["mem"].append(mem)
                vectors[kind][name] = out
                print(f"#   {kind:6s} {name:24s} {seconds:7.2f} s  {fmt_mb(mem)}", file=sys.stderr)
        rates32.append(matmul_rate(torch.float32))  # the machine is shared: keep the best (least disturbed) rate
        if enc_bf16 is not None:
            rates16.append(matmul_rate(torch.bfloat16))
    rate32, rate16 = max(rates32), (max(rates16) if rates16 else None)

    def paired_ratio(kind, name):
        base, mine = results[kind]["recipe"]["s"], results[kind][name]["s"]
        return statistics.median(b / m for b, m in zip(base, mine, strict=True))

    def best_ratio(kind, name):
        return min(results[kind]["recipe"]["s"]) / min(results[kind][name]["s"])

    def median_mem(kind, name):
        values = [m for m in results[kind][name]["mem"] if m is not None]
        return statistics.median(values) if values else None

    print()
    print(
        f"Scaled E5-V replica: text hidden {cfg.text_config.hidden_size} × {cfg.text_config.num_hidden_layers} layers, "
        f"CLIP {cfg.vision_config.image_size}px/patch {cfg.vision_config.patch_size}; {n_texts} texts "
        f"({min(text_lengths)}–{max(text_lengths)} tokens), {n_images} images ({min(image_lengths)}–{max(image_lengths)} "
        f"tokens, {tiles} tiles; paper layout {min(paper_lengths)}–{max(paper_lengths)} tokens, "
        f"{sum(paper_lengths)} vs {sum(image_lengths)} in all); float32 unless noted; batch {BATCH}; {args.threads} threads; {args.repeats} repeats (medians)"
    )
    print(
        f"Machine matmul rate (2048², best of {5 * (args.repeats + 1)}): float32 {rate32 / 1e9:.0f} GFLOP/s"
        + (f", bfloat16 {rate16 / 1e9:.0f} GFLOP/s" if rate16 else "")
    )
    print()
    print(
        "| workload | contestant | items/s | × recipe (median of pairs) | × recipe (best runs) | peak RSS increase | "
        "× recipe mem | min cosine vs recipe | model GFLOP/s | % of matmul rate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary: dict = {}
    for kind, group in contestants.items():
        n = len(inputs[kind])
        base_mem = median_mem(kind, "recipe")
        for name in group:
            sec = statistics.median(results[kind][name]["s"])
            mem = median_mem(kind, name)
            ratio = 1.0 if name == "recipe" else paired_ratio(kind, name)
            best = 1.0 if name == "recipe" else best_ratio(kind, name)
            cos = float((vectors[kind][name] * vectors[kind]["recipe"]).sum(1).min())
            achieved = flops.get((kind, name), flops[kind]) / sec
            rate = rate16 if "bf16" in name else rate32
            mem_ratio = f"{mem / base_mem:.2f}" if mem is not None and base_mem else "n/a"
            print(
                f"| {kind} | {name} | {n / sec:.2f} | {ratio:.2f} | {best:.2f} | {fmt_mb(mem)} | {mem_ratio} | {cos:.6f} | "
                f"{achieved / 1e9:.0f} | {100 * achieved / rate:.0f}% |"
            )
            summary[f"{kind}/{name}"] = {
                "items_per_s": n / sec,
                "ratio": ratio,
                "best_ratio": best,
                "peak_bytes": mem,
                "min_cos": cos,
                "gflops": achieved / 1e9,
                "seconds": results[kind][name]["s"],
            }

    next_s, paper_s = results["images"]["encoder"]["s"], results["images"]["encoder, paper layout"]["s"]
    layout_ratio = statistics.median(a / b for a, b in zip(next_s, paper_s, strict=True))
    next_mem, paper_mem = median_mem("images", "encoder"), median_mem("images", "encoder, paper layout")
    print(
        f"\nimage layouts: paper runs at {layout_ratio:.2f}x the speed of llava-next (median of pairs; "
        f"{sum(paper_lengths)} vs {sum(image_lengths)} image tokens, {sum(paper_lengths) / sum(image_lengths):.2f}x), "
        f"peak memory {fmt_mb(paper_mem)} vs {fmt_mb(next_mem)}"
    )
    summary["image_layouts"] = {"paper_speed_x": layout_ratio, "token_ratio": sum(paper_lengths) / sum(image_lengths)}

    # ---- ingest end to end vs encoder-only, same inputs
    if not args.no_ingest:
        folder = work / "corpus"
        folder.mkdir()
        for i, text in enumerate(texts):
            (folder / f"doc{i:03d}.txt").write_text(text + "\n")
        for i, image in enumerate(images):
            image.save(folder / f"img{i:03d}.png")
        files_t = [(folder / f"doc{i:03d}.txt").read_text() for i in range(len(texts))]
        files_i = [str(folder / f"img{i:03d}.png") for i in range(len(images))]
        ingest_s, encode_s = [], []
        for r in range(max(1, min(2, args.repeats))):
            seconds = ingest_once(enc, folder, work / f"qdrant{r}")
            if seconds is None:
                break
            ingest_s.append(seconds)
            encode_s.append(_timed(lambda: (enc.embed_texts(files_t), enc.embed_images(files_i))))
        print()
        if ingest_s:
            ratio = statistics.median(a / b for a, b in zip(ingest_s, encode_s, strict=True))
            print(
                f"| ingest (files → local Qdrant) | {len(files_t) + len(files_i)} files | "
                f"{statistics.median(ingest_s):.2f} s vs encoder-only {statistics.median(encode_s):.2f} s | "
                f"× encoder-only time: {ratio:.2f} (target <= 1.2) |"
            )
            summary["ingest"] = {"ingest_s": ingest_s, "encoder_s": encode_s, "ratio": ratio}
        else:
            print("| ingest | missing: e5v_qdrant.ingest is not importable |")

    # ---- memory flatness over a larger run
    if args.scale:
        big_texts = make_texts(n_texts * args.scale, seed=1)
        big_images = make_images(n_images * args.scale, seed=100)
        _reset_peak()
        with RssSampler() as sampler:
            start = time.perf_counter()
            enc.embed_texts(big_texts)
            texts_done = time.perf_counter() - start
            enc.embed_images(big_images)
            total = time.perf_counter() - start
        s = sampler.samples

        def window(lo, hi):
            vals = [rss for t, rss in s if lo <= t <= hi]
            return max(vals) if vals else 0

        img_span = total - texts_done
        deciles_t = [window(k * texts_done / 10, (k + 1) * texts_done / 10) for k in range(10)]
        deciles_i = [window(texts_done + k * img_span / 10, texts_done + (k + 1) * img_span / 10) for k in range(10)]
        print()
        print(
            f"Memory flatness, {args.scale}× run ({len(big_texts)} texts then {len(big_images)} images, "
            f"{total:.0f} s): max RSS in each tenth of each phase (MB)"
        )
        for label, deciles in (("texts", deciles_t), ("images", deciles_i)):
            growth = (deciles[-1] - deciles[0]) / 2**20
            print(
                f"| {label} | {' '.join(f'{d / 2**20:.0f}' for d in deciles)} | first → last tenth {growth:+.0f} MB |"
            )
        summary["flat"] = {"texts": deciles_t, "images": deciles_i}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
