"""The evaluation report and its diagnosis: metrics plus everything that changes them (model, prompts, dtype,
versions, image-token counts, data file hashes, timings) and warnings for each known cause of a gap to the paper."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..anyres import has_nonsquare_grid
from .metrics import TIE_POLICY

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder import E5VEncoder

__all__ = [
    "PAPER_RESULTS",
    "AUTHORS_DTYPE",
    "AUTHORS_TRANSFORMERS",
    "EvalReport",
    "Clock",
    "diagnose",
    "file_sha256",
    "data_facts",
    "environment",
    "model_facts",
    "image_token_stats",
    "qdrant_section",
    "paper_key",
]

#: The paper's zero-shot numbers (arXiv 2407.12580, Tables 1-4), in percent.
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "flickr30k": {
        "benchmark": "Flickr30K Karpathy test (1000 images, 5000 captions)",
        "text_to_image": {"R@1": 79.5, "R@5": 95.0, "R@10": 97.6},
        "image_to_text": {"R@1": 88.2, "R@5": 98.7, "R@10": 99.4},
    },
    "coco": {
        "benchmark": "COCO Karpathy 5k test (5000 images, ~25k captions)",
        "text_to_image": {"R@1": 52.0, "R@5": 76.5, "R@10": 84.7},
        "image_to_text": {"R@1": 62.0, "R@5": 83.6, "R@10": 89.7},
    },
    "cirr": {
        "benchmark": "CIRR test split (scored by the CIRR server; local val numbers are not comparable)",
        "composed_to_image": {"R@1": 33.90, "R@5": 64.12, "R@10": 75.88, "R@50": 93.54},
    },
    "sts": {
        "benchmark": "average Spearman over STS12-16, STS-B, SICK-R",
        "sts": {"spearman": 86.00},
    },
    # Image-to-image: Flickr30K / COCO test captions rendered as images (Table 3); the paper gives R@1 of retrieving
    # the image from its rendered caption.
    "i2i-flickr30k": {
        "benchmark": "I2I-Flickr30K: Flickr30K Karpathy test captions rendered as images (1000 images, 5000 captions)",
        "caption_image_to_image": {"R@1": 67.8},
    },
    "i2i-coco": {
        "benchmark": "I2I-COCO: COCO Karpathy 5k test captions rendered as images",
        "caption_image_to_image": {"R@1": 41.2},
    },
    # FashionIQ val: the paper reports the mean over dress, shirt and toptee (Table 2), not each category.
    "fashioniq": {
        "benchmark": "FashionIQ val, mean of the dress, shirt and toptee categories (the paper gives no per-category "
        "numbers; compare the mean of three runs)",
        "composed_to_image": {"R@10": 31.80, "R@50": 53.78},
    },
}

AUTHORS_DTYPE = "float16"
AUTHORS_TRANSFORMERS = "4.41.2"


@dataclass
class EvalReport:
    """One evaluation's numbers and everything that changes them. ``to_dict()`` is what ``--report`` writes.

    ``prompts`` (composed tasks): the exact strings the model was given, as Python ``repr`` so a trailing space or a
    newline shows; ``{text}`` marks where each query's modification text went.
    """

    task: str
    metrics: dict[str, dict[str, float | None]]
    model: dict[str, Any]
    data: dict[str, Any]
    image_tokens: dict[str, Any] | None
    timings: dict[str, float]
    warnings: list[str]
    notes: list[str] = field(default_factory=list)
    qdrant: dict[str, Any] | None = None
    paper: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] | None = None
    tie_policy: str = TIE_POLICY
    units: str = "percent (recall@k = % of queries with a relevant candidate in the top k; correlations × 100)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | os.PathLike) -> None:
        """Write the report as indented JSON (parent folders are created)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )

    def format_table(self) -> str:
        """The metrics as a text table (with Qdrant and paper columns when present), then warnings and notes."""
        names = sorted({m for values in self.metrics.values() for m in values}, key=_metric_order)
        header = ["direction", *names]
        rows = []
        for direction, values in self.metrics.items():
            rows.append([direction, *(_fmt(values.get(n)) for n in names)])
            if self.qdrant:
                rows.append(["  via qdrant", *(_fmt(self.qdrant["metrics"].get(direction, {}).get(n)) for n in names)])
            if self.paper and direction in self.paper:
                rows.append(["  paper", *(_fmt(self.paper[direction].get(n)) for n in names)])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [f"{self.task}: " + ", ".join(f"{k}={v}" for k, v in self.data.get("counts", {}).items())]
        lines.append(
            "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
        )
        for row in rows:
            lines.append(
                "  ".join(
                    str(c).ljust(w) if i == 0 else str(c).rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        if self.paper:
            lines.append(f"paper: {self.paper.get('benchmark')}")
        m = self.model
        lines.append(
            f"model {m.get('model')} @ {m.get('revision') or 'unpinned'}, adapter {m.get('adapter')}, {m.get('dtype')} on {m.get('device')}"
        )
        if self.image_tokens:
            t = self.image_tokens
            lines.append(
                f"image tokens per image: min {t['min']}, mean {t['mean']:.1f}, max {t['max']} over {t['images']} images"
                f"; {t.get('nonsquare_grid_share', 0):.0%} have a non-square anyres grid (the image layouts differ there)"
            )
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _metric_order(name: str):
    if name.startswith("R@"):
        return (0, int(name[2:]))
    return (1, name)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_facts(files: Sequence[str], counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"files": [{"path": f, "sha256": file_sha256(f)} for f in files], "counts": counts, **extra}


def environment() -> dict[str, Any]:
    from .. import __version__

    env = {
        "e5v_qdrant": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import qdrant_client

        env["qdrant_client"] = getattr(qdrant_client, "__version__", None)
    except ImportError:  # pragma: no cover
        pass
    return env


def composed_prompts(encoder: E5VEncoder, *, pairs: bool = False) -> dict[str, str]:
    """The exact prompts of a composed-retrieval run (``repr``): the query's (``{text}`` marks the modification text;
    ``pairs``: FashionIQ's two captions, ``embed_composed_pairs``) and the candidates'."""
    fill = "the query's modification text"
    if pairs:
        fill = "the two captions stripped of '.?, ' joined 'a, b' and 'b, a' (raw vectors summed, then normalised)"
    return {
        "query": repr(encoder.prompts.for_composed("{text}")),
        "candidates": repr(encoder.prompts.for_image()),
        "text": fill,
    }


def model_facts(encoder: E5VEncoder) -> dict[str, Any]:
    facts = dict(encoder.describe())
    cfg = encoder.config
    facts.update(
        max_text_tokens=cfg.max_text_tokens,
        query_prompt=cfg.query_prompt,
        batch_size=cfg.batch_size,
        max_batch_tokens=cfg.max_batch_tokens,
        attn_implementation=cfg.attn_implementation,
        requested_dtype=cfg.dtype,
        load_warnings=None,  # filled by the CLI, which loads the encoder and sees its warnings; None = not recorded
    )
    return facts


def diagnose(encoder: E5VEncoder, task: str, *, limited: bool = False) -> tuple[list[str], list[str]]:
    """Warnings (settings that move the numbers away from the paper's) and notes (facts to keep in mind).

    Returns:
        ``(warnings, notes)``.
    """
    from ..config import DEFAULT_MODEL

    cfg = encoder.config
    warnings: list[str] = []
    notes: list[str] = []
    authors = {"composed": ("e5v", "e5v-cirr-target")}.get(task, (task,) if task.startswith("fashioniq-") else ("e5v",))
    if cfg.prompts not in authors:
        warnings.append(
            f"prompt preset {cfg.prompts!r} is not the authors' ({' or '.join(map(repr, authors))}) for {task}"
        )
    if cfg.query_prompt is not None:
        warnings.append(f"query_prompt {cfg.query_prompt!r} replaces the authors' text prompt for queries")
    if cfg.dtype != "auto":
        warnings.append(f"non-default dtype {cfg.dtype!r} requested (default 'auto'); the authors ran {AUTHORS_DTYPE}")
    dtype = str(encoder.torch_dtype).removeprefix("torch.")
    if dtype != AUTHORS_DTYPE:
        notes.append(
            f"running {dtype}; the authors evaluated in {AUTHORS_DTYPE} (expect differences of a few tenths, not points)"
        )
    if cfg.revision is None and not os.path.isdir(cfg.model):
        warnings.append(f"no revision pin for hub model {cfg.model!r}: the files may change upstream (pass --revision)")
    if cfg.model != DEFAULT_MODEL:
        notes.append(f"model {cfg.model!r} is not {DEFAULT_MODEL!r}: the paper's numbers do not apply directly")
    if cfg.adapter:
        notes.append(f"adapter {cfg.adapter!r} applied: numbers measure the fine-tuned model")
    if cfg.max_text_tokens is not None:
        warnings.append(
            f"texts truncated to {cfg.max_text_tokens} tokens (max_text_tokens); the authors' evaluation does not truncate"
        )
    if limited:
        warnings.append("--limit evaluated a subset: numbers are not comparable to the full benchmark")
    if cfg.image_layout != "paper" and (task in ("retrieval", "composed", "i2i") or task.startswith("fashioniq-")):
        warnings.append(
            f"image_layout {cfg.image_layout!r}: images with a non-square anyres grid are laid out as today's "
            "transformers does, not as in the authors' environment (transformers 4.41.2) where the paper's image "
            "numbers were measured; use --image-layout paper to compare with them"
        )
    if task == "composed" and encoder.prompts.image != "<image>\n Describe this image in one word:":
        notes.append(
            "the authors embed CIRR candidate images with the prompt preset 'e5v-cirr-target' "
            "('<image>\\n Describe this image in one word:'); this run used the plain image prompt"
        )
    if task == "sts":
        notes.append(
            "the authors' STS evaluation uses a slightly different text body (' {text}\\nSummary above sentence in "
            "one word:', leading space, no trailing space); this run uses the encoder's text prompt"
        )
    import transformers

    if transformers.__version__ != AUTHORS_TRANSFORMERS:
        notes.append(
            f"transformers {transformers.__version__} (the authors pinned {AUTHORS_TRANSFORMERS}); the "
            "encoder's checkpoint fixes are recorded in model.load_warnings when loaded by the CLI"
        )
    return warnings, notes


def image_token_stats(encoder: E5VEncoder, paths: Sequence[str]) -> dict[str, Any]:
    """min / mean / max ``<image>`` tokens per image. Counts depend only on the (oriented) image size, so each distinct
    size is counted once through ``encoder.count_image_tokens`` on a real image of that size."""
    from PIL import Image

    by_size: dict[tuple[int, int], int] = {}
    counts, nonsquare = [], 0
    for path in paths:
        with Image.open(path) as img:
            size = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90°: load_image transposes it
                size = size[::-1]
        if size not in by_size:
            by_size[size] = encoder.count_image_tokens(path)
        counts.append(by_size[size])
        nonsquare += has_nonsquare_grid(size[::-1], encoder.geometry)
    if not counts:
        return {"images": 0, "min": 0, "mean": 0.0, "max": 0, "distinct_sizes": 0, "nonsquare_grid_share": 0.0}
    arr = np.asarray(counts)
    return {
        "images": len(counts),
        "min": int(arr.min()),
        "mean": float(arr.mean()),
        "max": int(arr.max()),
        "distinct_sizes": len(by_size),
        # images whose best anyres resolution is non-square: where the "paper" and "llava-next" layouts differ
        "nonsquare_grid_share": nonsquare / len(counts),
    }


class Clock:
    """Named wall-clock laps of one evaluation, plus the total."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - since, 4)
        return now

    def total(self) -> dict[str, float]:
        self.timings["total_s"] = round(time.perf_counter() - self._start, 4)
        return self.timings


def qdrant_section(metrics, qdrant_metrics, facts, warnings) -> dict[str, Any]:
    delta = {
        d: {
            k: (None if v is None or metrics[d].get(k) is None else round(v - metrics[d][k], 6))
            for k, v in vals.items()
        }
        for d, vals in qdrant_metrics.items()
    }
    if any(abs(v) > 1e-9 for vals in delta.values() for v in vals.values() if v is not None):
        warnings.append(
            "recall through Qdrant differs from in-memory recall (storage-side loss: quantization, "
            "datatype, or approximate search); see qdrant.delta"
        )
    if facts.get("location", "").startswith("embedded"):
        facts["caveat"] = (
            "the temporary embedded store is float32 exact search; use --qdrant-url to test a server's storage"
        )
    return {"metrics": qdrant_metrics, "delta": delta, "collection": facts}


def paper_key(dataset: str | None) -> str | None:
    """``flickr30k`` / ``coco`` for a Karpathy file's ``dataset`` field, else ``None``."""
    name = (dataset or "").lower()
    return "flickr30k" if "flickr" in name else ("coco" if "coco" in name else None)
