"""Evaluation: retrieval recall@k, composed (CIRR-style) retrieval, STS Spearman and triplet recall, with a report that
records everything that changes the numbers.

Three layers:

* **Metrics** — pure functions over score matrices and vectors (``ranks_from_scores``, ``recall_at_k``,
  ``spearman``…). No model, no files.
* **Readers** — datasets into small dataclasses (``read_retrieval``, ``read_composed``, ``read_sts``,
  ``read_triplets``), with typed errors naming the file, line and remedy.
* **Harness** — ``evaluate_retrieval`` / ``evaluate_composed`` / ``evaluate_sts`` / ``evaluate_triplets`` embed
  through an ``E5VEncoder`` (the same encoder ingestion uses) and return an ``EvalReport``: metrics, model facts,
  image-token statistics, data file hashes, counts, timings and *warnings* that flag every known cause of a gap to
  the paper (non-default prompts or dtype, no revision pin, subsets, text truncation…).

Tie handling is **pessimistic** everywhere: a non-relevant candidate whose score equals the best relevant candidate's
score is ranked ahead of it. Ties between relevant candidates do not matter (any relevant hit counts). This makes
recall deterministic and never flatters a model that collapses inputs onto identical vectors; with real float
embeddings exact ties only come from duplicate inputs.

Recalls and correlations are reported in percent, as in the paper (R@1 79.5, Spearman 86.00).

Example:
    >>> from e5v_qdrant import E5VEncoder                                        # doctest: +SKIP
    >>> from e5v_qdrant.evaluate import read_retrieval, evaluate_retrieval      # doctest: +SKIP
    >>> data = read_retrieval("dataset_flickr30k.json", "flickr30k-images")      # doctest: +SKIP
    >>> report = evaluate_retrieval(E5VEncoder(), data)                          # doctest: +SKIP
    >>> print(report.format_table())                                            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import E5VInputError

if TYPE_CHECKING:  # pragma: no cover
    from .config import StoreConfig
    from .encoder import E5VEncoder

__all__ = [
    "MISS",
    "TIE_POLICY",
    "ranks_from_scores",
    "retrieval_ranks",
    "recall_at_k",
    "median_rank",
    "average_ranks",
    "spearman",
    "pearson",
    "qdrant_ranks",
    "RetrievalSet",
    "ComposedSet",
    "PairSet",
    "TripletSet",
    "read_retrieval",
    "read_composed",
    "read_sts",
    "read_triplets",
    "EvalReport",
    "evaluate_retrieval",
    "evaluate_composed",
    "evaluate_sts",
    "evaluate_triplets",
    "PAPER_RESULTS",
]

#: Rank given to a query whose relevant candidates are all excluded (or, via Qdrant, not returned): never a hit.
MISS = np.iinfo(np.int64).max
TIE_POLICY = "pessimistic: a non-relevant candidate scoring equal to the best relevant one ranks ahead of it"

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
}

AUTHORS_DTYPE = "float16"
AUTHORS_TRANSFORMERS = "4.41.2"


# ====================================================================================================== metrics
def ranks_from_scores(
    scores: np.ndarray,
    relevant: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int] | None] | None = None,
) -> np.ndarray:
    """0-based rank of the best relevant candidate of each query (pessimistic ties).

    Args:
        scores: ``(n_queries, n_candidates)`` similarities, higher is better.
        relevant: for each query, the candidate indices that count as a hit (a caption's image; an image's captions).
        exclude: for each query, candidate indices removed from its ranking (e.g. a composed query's reference image),
            or ``None``. An excluded relevant candidate is not a hit.

    Returns:
        ``int64`` array of ranks: the number of non-relevant, non-excluded candidates scoring ``>=`` the best relevant
        one. ``MISS`` when a query has no relevant candidate left.

    Raises:
        E5VInputError: shapes disagree, an index is out of range or a score is NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise E5VInputError("scores", f"expected a 2-d (queries × candidates) matrix, got shape {scores.shape}")
    n_q, n_c = scores.shape
    if len(relevant) != n_q:
        raise E5VInputError("relevant", f"{len(relevant)} entries for {n_q} queries; give one list per query")
    if exclude is not None and len(exclude) != n_q:
        raise E5VInputError("exclude", f"{len(exclude)} entries for {n_q} queries; give one list (or None) per query")
    if np.isnan(scores).any():
        raise E5VInputError("scores", "contain NaN; the embeddings are broken (check dtype overflow)")
    is_rel = np.zeros((n_q, n_c), dtype=bool)
    is_out = np.zeros((n_q, n_c), dtype=bool)
    for q in range(n_q):
        idx = np.asarray(list(relevant[q]), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_c):
            raise E5VInputError(f"relevant[{q}]", f"index out of range for {n_c} candidates: {idx.tolist()}")
        is_rel[q, idx] = True
        if exclude is not None and exclude[q] is not None:
            ex = np.asarray(list(exclude[q]), dtype=np.int64)
            if ex.size and (ex.min() < 0 or ex.max() >= n_c):
                raise E5VInputError(f"exclude[{q}]", f"index out of range for {n_c} candidates: {ex.tolist()}")
            is_out[q, ex] = True
    is_rel &= ~is_out
    best = np.where(is_rel, scores, -np.inf).max(axis=1)
    competitors = ~is_rel & ~is_out
    ranks = (competitors & (scores >= best[:, None])).sum(axis=1).astype(np.int64)
    ranks[~is_rel.any(axis=1)] = MISS
    return ranks


def retrieval_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int] | None] | None = None,
    *,
    chunk: int = 256,
) -> np.ndarray:
    """``ranks_from_scores`` of ``queries @ candidates.T``, computed ``chunk`` queries at a time (bounded memory)."""
    queries = np.asarray(queries, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.float32)
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        out[start:stop] = ranks_from_scores(
            queries[start:stop] @ candidates.T,
            relevant[start:stop],
            None if exclude is None else exclude[start:stop],
        )
    return out


def recall_at_k(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Percent of queries whose best relevant candidate ranks within the top ``k``, for each ``k``: ``{"R@k": pct}``."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise E5VInputError("ranks", "no queries to score; the data set is empty")
    return {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in ks}


def median_rank(ranks: np.ndarray) -> float | None:
    """Median 1-based rank of the best relevant candidate (``None`` when the median query is a miss)."""
    r = np.asarray(ranks).astype(np.float64) + 1.0
    r[np.asarray(ranks) == MISS] = np.inf
    value = float(np.median(r)) if r.size else np.inf
    return value if np.isfinite(value) else None


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the average of the positions they span (as ``scipy.stats.rankdata``)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    group_rank = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(new_group) - 1]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors.

    Raises:
        E5VInputError: lengths differ, fewer than 2 values, or either vector is constant (correlation undefined).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise E5VInputError("correlation", f"needs two equal-length vectors, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise E5VInputError("correlation", f"needs at least 2 pairs, got {len(x)}")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if denom == 0:
        raise E5VInputError(
            "correlation", "one side is constant (all gold scores or all similarities equal); undefined"
        )
    return float((dx * dy).sum() / denom)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks (ties share their mean rank)."""
    return pearson(average_ranks(x), average_ranks(y))


# ====================================================================================================== Qdrant
def qdrant_ranks(
    queries: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[Sequence[int]],
    exclude: Sequence[Sequence[int] | None] | None = None,
    *,
    limit: int,
    store: StoreConfig | None = None,
    batch_size: int = 128,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ranks as ``retrieval_ranks`` computes them, but by exact search in a temporary Qdrant collection.

    Candidates are upserted (ids ``0..n-1``, cosine distance) into a fresh collection — in a temporary local-mode
    folder unless ``store.qdrant_url`` names a server — and each query runs with ``SearchParams(exact=True)``,
    ``limit`` results and its excluded candidates filtered out. The collection is created by the store module's
    ``collection_create_kwargs`` — the same vector name, datatype and quantization ingestion uses (server-only
    options apply on a server) — and deleted afterwards, with the temporary folder.

    Returns:
        ``(ranks, facts)``: a query whose relevant candidates are not among the ``limit`` results gets ``MISS``, so
        only ``recall_at_k`` for ``k <= limit`` is meaningful. Among equal scores Qdrant's order is its own (not the
        pessimistic policy). ``facts`` describes the collection used.
    """
    import dataclasses

    from qdrant_client import models

    from .config import StoreConfig
    from .store import VECTOR_NAME, QdrantStore, collection_create_kwargs, search_params

    candidates = np.asarray(candidates, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    tmp_dir = None
    config = store or StoreConfig()
    if not config.qdrant_url:
        tmp_dir = tempfile.mkdtemp(prefix="e5v-eval-qdrant-")
        config = dataclasses.replace(config, qdrant_path=tmp_dir)
    name = f"e5v-eval-{uuid.uuid4().hex[:12]}"
    limit = max(1, min(limit, len(candidates)))
    ranks = np.full(len(queries), MISS, dtype=np.int64)
    try:
        with QdrantStore(config) as qs:
            server = qs.is_server
            quantized = server and config.quantization != "none"
            # exact=True removes the index's approximation (HNSW) but not the storage's: quantized vectors are still
            # searched, rescored as the search path configures it. Local mode is always brute force (and warns
            # that search params have no effect there), so it gets none.
            params = None
            if server:
                searched = search_params(config)  # what `e5v-qdrant search` sends (rescore, oversampling)
                params = models.SearchParams(exact=True, quantization=searched.quantization if searched else None)
            elif qs.engine == "edge":  # the temporary Edge folder: exact too (no HNSW approximation)
                params = models.SearchParams(exact=True)
            create = collection_create_kwargs(config, candidates.shape[1], server=qs.is_server)
            qs.call(f"creating collection {name!r}", qs.client.create_collection, collection_name=name, **create)
            try:
                qs.upsert(
                    name, [models.PointStruct(id=i, vector={VECTOR_NAME: v.tolist()}) for i, v in enumerate(candidates)]
                )
                for start in range(0, len(queries), batch_size):
                    stop = min(start + batch_size, len(queries))
                    requests = []
                    for q in range(start, stop):
                        excluded = [] if exclude is None or exclude[q] is None else [int(i) for i in exclude[q]]
                        flt = models.Filter(must_not=[models.HasIdCondition(has_id=excluded)]) if excluded else None
                        requests.append(
                            models.QueryRequest(
                                query=queries[q].tolist(), using=VECTOR_NAME, limit=limit, params=params, filter=flt
                            )
                        )
                    responses = qs.call(
                        f"querying {name!r}", qs.client.query_batch_points, collection_name=name, requests=requests
                    )
                    for q, response in zip(range(start, stop), responses, strict=True):
                        wanted = {int(i) for i in relevant[q]}
                        for position, point in enumerate(response.points):
                            if int(point.id) in wanted:
                                ranks[q] = position
                                break
            finally:
                qs.call(f"deleting collection {name!r}", qs.client.delete_collection, collection_name=name)
            facts = {
                "location": config.qdrant_url or f"embedded {qs.engine} (temporary folder)",
                "distance": "cosine",
                "exact": True,
                "limit": limit,
                "points": len(candidates),
                "datatype": config.vector_datatype if server else "float32",
                "quantization": config.quantization if server else "none",
                "rescore": config.rescore if quantized else None,
                "oversampling": config.oversampling if quantized else None,
                "on_disk": bool(config.on_disk_vectors) if server else False,
            }
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return ranks, facts


# ====================================================================================================== data sets
@dataclass
class RetrievalSet:
    """Images with their captions. ``caption_image[j]`` is the index in ``images`` of caption ``j``'s image."""

    images: list[str]
    captions: list[str]
    caption_image: list[int]
    files: list[str] = field(default_factory=list)
    dataset: str | None = None  # "flickr30k" / "coco" when a Karpathy file names it
    split: str | None = None


@dataclass
class ComposedSet:
    """Composed queries (reference image + modification text → target image) and the candidate images."""

    references: list[str]
    texts: list[str]
    targets: list[str]
    candidates: list[str]
    files: list[str] = field(default_factory=list)


@dataclass
class PairSet:
    """Sentence pairs with gold similarity scores."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    files: list[str] = field(default_factory=list)


@dataclass
class TripletSet:
    """Anchors, their positives and (optional) hard negatives; ``negatives[i]`` is ``None`` when a row has none."""

    anchors: list[str]
    positives: list[str]
    negatives: list[str | None]
    files: list[str] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise E5VInputError(
                    f"{path}:{number}", f"not valid JSON ({exc.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise E5VInputError(f"{path}:{number}", f"expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def _field(row: dict, names: Sequence[str], where: str, *, required: bool = True):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    if required:
        raise E5VInputError(
            where, f"missing field {names[0]!r} (accepted names: {', '.join(names)}); found {sorted(row)}"
        )
    return None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise E5VInputError(str(path), f"{what} not found; check the path")
    return path


def _image_path(name: str, images_dir: Path | None, where: str, *extra_dirs: str) -> str:
    candidate = Path(name)
    if not candidate.is_absolute() and images_dir is not None:
        for sub in (*extra_dirs, ""):
            trial = images_dir / sub / name if sub else images_dir / name
            if trial.is_file():
                return str(trial)
        candidate = images_dir / name
    if not candidate.is_file():
        raise E5VInputError(
            where, f"image {str(candidate)!r} not found; pass --images DIR with the folder holding the images"
        )
    return os.path.abspath(candidate)  # one spelling per file: references, targets and candidates match by path


def read_retrieval(
    captions: str | os.PathLike, images_dir: str | os.PathLike, *, split: str = "test", limit: int | None = None
) -> RetrievalSet:
    """Read an image–caption retrieval set.

    Formats: Karpathy-split JSON (``{"images": [{"filename", "split", "sentences": [{"raw"}], "filepath"?}]}``;
    only images whose ``split`` equals ``split`` unless ``split="all"``) or JSONL with one
    ``{"image": "name.jpg", "captions": ["...", ...]}`` per line (``split`` ignored).

    Args:
        captions: the JSON / JSONL file.
        images_dir: folder the image names are relative to (Karpathy ``filepath`` sub-folders are tried first).
        split: Karpathy split to keep (``test``, ``val``, ``train``, ``restval``, ``all``).
        limit: keep only the first ``limit`` images (quick checks; numbers then differ from the paper's).

    Raises:
        E5VInputError: a file or image is missing, a row is malformed, or nothing is left to evaluate.
    """
    path = _existing(Path(captions), "captions file")
    root = Path(images_dir)
    if not root.is_dir():
        raise E5VInputError(str(root), "images folder not found; pass --images DIR")
    text = path.read_text(encoding="utf-8")
    data = RetrievalSet([], [], [], files=[str(path)])
    entries: list[tuple[str, str, list[str], str]] = []  # (name, subdir, captions, where)
    doc = None
    if path.suffix.lower() != ".jsonl":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # not one JSON document: read as JSONL below
    if isinstance(doc, dict):
        if not isinstance(doc.get("images"), list):
            raise E5VInputError(str(path), "expected a Karpathy-split JSON with an 'images' list, or JSONL lines")
        data.dataset = doc.get("dataset")
        data.split = split
        for i, img in enumerate(doc["images"]):
            where = f"{path} images[{i}]"
            if split != "all" and img.get("split") != split:
                continue
            name = _field(img, ("filename",), where)
            sentences = _field(img, ("sentences",), where)
            raws = [s["raw"] if isinstance(s, dict) else str(s) for s in sentences]
            entries.append((name, img.get("filepath") or "", raws, where))
    else:
        for number, row in _read_jsonl(path):
            where = f"{path}:{number}"
            caps = _field(row, ("captions", "texts", "caption"), where)
            caps = [caps] if isinstance(caps, str) else list(caps)
            entries.append((_field(row, ("image", "filename", "path"), where), "", caps, where))
    if limit is not None:
        entries = entries[:limit]
    for name, sub, caps, where in entries:
        if not caps or not all(isinstance(c, str) for c in caps):
            raise E5VInputError(where, "needs a non-empty list of caption strings")
        data.images.append(_image_path(name, root, where, *([sub] if sub else [])))
        for caption in caps:
            data.captions.append(caption)
            data.caption_image.append(len(data.images) - 1)
    if not data.images:
        hint = f" with split {split!r} (try --split all)" if data.split else ""
        raise E5VInputError(str(path), f"no images to evaluate{hint}")
    return data


def read_composed(
    data_file: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    candidates: str | os.PathLike | None = None,
    limit: int | None = None,
) -> ComposedSet:
    """Read composed-retrieval queries: JSONL with ``reference``, ``text`` and ``target`` per line.

    Accepted names: ``reference`` / ``reference_image`` / ``ref``; ``text`` / ``caption`` / ``modification``;
    ``target`` / ``target_image`` / ``target_hard`` (CIRR's names). Relative image paths are resolved against
    ``images_dir`` (default: the data file's folder).

    Args:
        candidates: a text file with one image path per line, or a folder of images; default: every distinct image
            named in the file (references and targets).
        limit: keep only the first ``limit`` queries.
    """
    from .media import IMAGE_SUFFIXES

    path = _existing(Path(data_file), "composed data file")
    root = Path(images_dir) if images_dir else path.parent
    out = ComposedSet([], [], [], [], files=[str(path)])
    rows = _read_jsonl(path)
    if limit is not None:
        rows = rows[:limit]
    for number, row in rows:
        where = f"{path}:{number}"
        out.references.append(
            _image_path(str(_field(row, ("reference", "reference_image", "ref"), where)), root, where)
        )
        text = _field(row, ("text", "caption", "modification"), where)
        if isinstance(text, list):
            text = ", ".join(map(str, text))
        out.texts.append(str(text))
        out.targets.append(_image_path(str(_field(row, ("target", "target_image", "target_hard"), where)), root, where))
    if not out.references:
        raise E5VInputError(str(path), "no queries to evaluate")
    if candidates is None:
        out.candidates = list(dict.fromkeys(out.references + out.targets))
    else:
        cand = Path(candidates)
        if cand.is_dir():
            names = sorted(os.path.abspath(p) for p in cand.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            out.candidates = names
        else:
            lines = [ln.strip() for ln in _existing(cand, "candidates file").read_text(encoding="utf-8").splitlines()]
            out.candidates = list(
                dict.fromkeys(_image_path(ln, root, f"{cand}:{i}") for i, ln in enumerate(lines, 1) if ln)
            )
            out.files.append(str(cand))
        missing = sorted(set(out.targets) - set(out.candidates))
        if missing:
            raise E5VInputError(
                str(cand), f"{len(missing)} target image(s) are not among the candidates, e.g. {missing[0]!r}"
            )
    return out


def read_sts(data_file: str | os.PathLike, *, limit: int | None = None) -> PairSet:
    """Read sentence pairs with gold scores: JSONL (``sentence1``, ``sentence2``, ``score``) or TSV.

    A TSV either has a header naming ``sentence1``, ``sentence2`` and ``score`` columns (as STS-B's files do) or no
    header and exactly three columns in that order.
    """
    path = _existing(Path(data_file), "STS data file")
    out = PairSet([], [], [], files=[str(path)])

    def add(s1, s2, score, where):
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise E5VInputError(where, f"score {score!r} is not a number") from None
        if not np.isfinite(value):
            raise E5VInputError(where, f"score {score!r} is not finite")
        out.sentences1.append(str(s1))
        out.sentences2.append(str(s2))
        out.scores.append(value)

    if path.suffix.lower() in (".jsonl", ".json"):
        for number, row in _read_jsonl(path):
            where = f"{path}:{number}"
            add(
                _field(row, ("sentence1", "text1", "s1"), where),
                _field(row, ("sentence2", "text2", "s2"), where),
                _field(row, ("score", "label", "gold"), where),
                where,
            )
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        if not rows:
            raise E5VInputError(str(path), "empty file")
        header = [h.strip().lower() for h in rows[0]]
        if {"sentence1", "sentence2", "score"} <= set(header):
            cols = (header.index("sentence1"), header.index("sentence2"), header.index("score"))
            body = list(enumerate(rows[1:], 2))
        else:
            cols = (0, 1, 2)
            body = list(enumerate(rows, 1))
        for number, row in body:
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{number}"
            if len(row) <= max(cols):
                raise E5VInputError(
                    where, f"has {len(row)} tab-separated columns; expected sentence1, sentence2, score"
                )
            add(row[cols[0]], row[cols[1]], row[cols[2]], where)
    if limit is not None:
        out.sentences1, out.sentences2, out.scores = out.sentences1[:limit], out.sentences2[:limit], out.scores[:limit]
    if len(out.scores) < 2:
        raise E5VInputError(str(path), f"needs at least 2 sentence pairs, found {len(out.scores)}")
    return out


def read_triplets(data_file: str | os.PathLike, *, limit: int | None = None) -> TripletSet:
    """Read (anchor, positive[, negative]) rows with the fine-tuning reader (``finetune.data.load_triplets``): JSONL
    ``anchor``/``positive``/``negative`` or CSV ``sent0``/``sent1``/``hard_neg``, every bad line reported at once.

    Raises:
        FinetuneDataError: (an ``E5VInputError``) the file is missing, empty or has bad rows.
    """
    from .finetune.data import load_triplets

    loaded = load_triplets(data_file)
    rows = loaded.rows[:limit] if limit is not None else loaded.rows
    return TripletSet(
        anchors=[r.anchor for r in rows],
        positives=[r.positive for r in rows],
        negatives=[r.negative for r in rows],
        files=[loaded.path],
    )


# ====================================================================================================== report
@dataclass
class EvalReport:
    """One evaluation's numbers and everything that changes them. ``to_dict()`` is what ``--report`` writes."""

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


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_facts(files: Sequence[str], counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"files": [{"path": f, "sha256": _file_sha256(f)} for f in files], "counts": counts, **extra}


def _environment() -> dict[str, Any]:
    from . import __version__

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


def _model_facts(encoder: E5VEncoder) -> dict[str, Any]:
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
    from .config import DEFAULT_MODEL

    cfg = encoder.config
    warnings: list[str] = []
    notes: list[str] = []
    authors = ("e5v", "e5v-cirr-target") if task == "composed" else ("e5v",)
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
    if task == "composed" and encoder.prompts.image != "<image>\n Describe this image in one word: ":
        notes.append(
            "the authors embed CIRR candidate images with the prompt preset 'e5v-cirr-target' "
            "('<image>\\n Describe this image in one word: '); this run used the plain image prompt"
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


def _image_token_stats(encoder: E5VEncoder, paths: Sequence[str]) -> dict[str, Any]:
    """min / mean / max ``<image>`` tokens per image. Counts depend only on the (oriented) image size, so each distinct
    size is counted once through ``encoder.count_image_tokens`` on a real image of that size."""
    from PIL import Image

    by_size: dict[tuple[int, int], int] = {}
    counts = []
    for path in paths:
        with Image.open(path) as img:
            size = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90°: load_image transposes it
                size = size[::-1]
        if size not in by_size:
            by_size[size] = encoder.count_image_tokens(path)
        counts.append(by_size[size])
    if not counts:
        return {"images": 0, "min": 0, "mean": 0.0, "max": 0, "distinct_sizes": 0}
    arr = np.asarray(counts)
    return {
        "images": len(counts),
        "min": int(arr.min()),
        "mean": float(arr.mean()),
        "max": int(arr.max()),
        "distinct_sizes": len(by_size),
    }


class _Clock:
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


def _qdrant_section(metrics, qdrant_metrics, facts, warnings) -> dict[str, Any]:
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


def _paper_key(dataset: str | None) -> str | None:
    """``flickr30k`` / ``coco`` for a Karpathy file's ``dataset`` field, else ``None``."""
    name = (dataset or "").lower()
    return "flickr30k" if "flickr" in name else ("coco" if "coco" in name else None)


# ====================================================================================================== harness
def evaluate_retrieval(
    encoder: E5VEncoder,
    data: RetrievalSet,
    *,
    ks: Sequence[int] = (1, 5, 10),
    via_qdrant: bool = False,
    store: StoreConfig | None = None,
    show_progress: bool = False,
    limited: bool = False,
) -> EvalReport:
    """Text→image and image→text recall@k, CLIP style.

    Text→image: each caption is a query (``embed_queries``) whose one relevant candidate is its image. Image→text:
    each image is a query whose relevant candidates are all of its captions (``embed_texts``); it is found at ``k`` if
    any of them is in the top ``k``.

    Args:
        via_qdrant: also rank by exact search in a temporary Qdrant collection (see ``qdrant_ranks``) and report it
            next to the in-memory numbers, with their difference.
        store: where that collection lives (default: a temporary local-mode folder).
        limited: the data is a subset (adds a warning).
    """
    clock = _Clock()
    t = time.perf_counter()
    image_vecs = encoder.embed_images(data.images, show_progress=show_progress)
    t = clock.lap("embed_images_s", t)
    query_vecs = encoder.embed_queries(data.captions, show_progress=show_progress)
    doc_vecs = (
        encoder.embed_texts(data.captions, show_progress=show_progress)
        if encoder.prompts.query is not None
        else query_vecs
    )
    t = clock.lap("embed_texts_s", t)
    t2i_rel = [[i] for i in data.caption_image]
    i2t_rel: list[list[int]] = [[] for _ in data.images]
    for j, i in enumerate(data.caption_image):
        i2t_rel[i].append(j)
    metrics = {}
    for direction, queries, candidates, relevant in (
        ("text_to_image", query_vecs, image_vecs, t2i_rel),
        ("image_to_text", image_vecs, doc_vecs, i2t_rel),
    ):
        ranks = retrieval_ranks(queries, candidates, relevant)
        metrics[direction] = {**recall_at_k(ranks, ks), "median_rank": median_rank(ranks)}
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "retrieval", limited=limited)
    qdrant = None
    if via_qdrant:
        qm, facts = {}, {}
        for direction, queries, candidates, relevant in (
            ("text_to_image", query_vecs, image_vecs, t2i_rel),
            ("image_to_text", image_vecs, doc_vecs, i2t_rel),
        ):
            ranks, facts[direction] = qdrant_ranks(queries, candidates, relevant, limit=max(ks), store=store)
            qm[direction] = recall_at_k(ranks, ks)
        qdrant = _qdrant_section(metrics, qm, facts["text_to_image"], warnings)
        t = clock.lap("qdrant_s", t)
    tokens = _image_token_stats(encoder, data.images)
    clock.lap("image_token_count_s", t)
    key = _paper_key(data.dataset)
    paper = PAPER_RESULTS.get(key) if key else None
    counts = {"images": len(data.images), "captions": len(data.captions)}
    if paper and data.split == "test" and not limited:
        expected = {"flickr30k": 1000, "coco": 5000}[key]
        if counts["images"] != expected:
            warnings.append(f"{counts['images']} test images, but the paper's {paper['benchmark']} has {expected}")
    elif paper and data.split != "test":
        notes.append(f"split {data.split!r}: the paper reports the test split")
    return EvalReport(
        task="retrieval",
        metrics=metrics,
        model=_model_facts(encoder),
        data=_data_facts(data.files, counts, dataset=data.dataset, split=data.split),
        image_tokens=tokens,
        timings=clock.total(),
        warnings=warnings,
        notes=notes,
        qdrant=qdrant,
        paper=paper,
        environment=_environment(),
    )


def evaluate_composed(
    encoder: E5VEncoder,
    data: ComposedSet,
    *,
    ks: Sequence[int] = (1, 5, 10, 50),
    via_qdrant: bool = False,
    store: StoreConfig | None = None,
    show_progress: bool = False,
    limited: bool = False,
) -> EvalReport:
    """Composed-retrieval recall@k (CIRR style): ``embed_composed(reference, text)`` against ``embed_images`` of the
    candidates, each query's reference image excluded from its own candidates (as the authors and CIRR's own
    evaluation do; a query whose target *is* its reference therefore counts as a miss, and is counted in the report)."""
    clock = _Clock()
    t = time.perf_counter()
    cand_vecs = encoder.embed_images(data.candidates, show_progress=show_progress)
    t = clock.lap("embed_candidates_s", t)
    query_vecs = encoder.embed_composed(data.references, data.texts, show_progress=show_progress)
    t = clock.lap("embed_queries_s", t)
    index = {p: i for i, p in enumerate(data.candidates)}
    relevant = [[index[p]] for p in data.targets]
    exclude = [[index[p]] if p in index else None for p in data.references]
    ranks = retrieval_ranks(query_vecs, cand_vecs, relevant, exclude)
    metrics = {"composed_to_image": {**recall_at_k(ranks, ks), "median_rank": median_rank(ranks)}}
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "composed", limited=limited)
    same = sum(r == g for r, g in zip(data.references, data.targets, strict=True))
    if same:
        warnings.append(f"{same} queries have target == reference; excluding the reference makes them misses")
    qdrant = None
    if via_qdrant:
        q_ranks, facts = qdrant_ranks(query_vecs, cand_vecs, relevant, exclude, limit=max(ks), store=store)
        qdrant = _qdrant_section(metrics, {"composed_to_image": recall_at_k(q_ranks, ks)}, facts, warnings)
        t = clock.lap("qdrant_s", t)
    tokens = _image_token_stats(encoder, list(dict.fromkeys(data.candidates + data.references)))
    clock.lap("image_token_count_s", t)
    counts = {"queries": len(data.references), "candidates": len(data.candidates), "target_is_reference": same}
    return EvalReport(
        task="composed",
        metrics=metrics,
        model=_model_facts(encoder),
        data=_data_facts(data.files, counts),
        image_tokens=tokens,
        timings=clock.total(),
        warnings=warnings,
        notes=notes,
        qdrant=qdrant,
        paper=PAPER_RESULTS["cirr"],
        environment=_environment(),
    )


def evaluate_sts(
    encoder: E5VEncoder, data: PairSet, *, show_progress: bool = False, limited: bool = False
) -> EvalReport:
    """Spearman (and Pearson) correlation, × 100, between gold scores and the cosine similarity of each pair's
    ``embed_texts`` vectors. Each distinct sentence is embedded once."""
    clock = _Clock()
    t = time.perf_counter()
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    vecs = encoder.embed_texts(unique, show_progress=show_progress)
    t = clock.lap("embed_texts_s", t)
    row = {s: i for i, s in enumerate(unique)}
    a = vecs[[row[s] for s in data.sentences1]]
    b = vecs[[row[s] for s in data.sentences2]]
    cosines = (a * b).sum(axis=1)
    gold = np.asarray(data.scores)
    metrics = {"sts": {"spearman": 100.0 * spearman(cosines, gold), "pearson": 100.0 * pearson(cosines, gold)}}
    clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "sts", limited=limited)
    counts = {"pairs": len(data.scores), "distinct_sentences": len(unique)}
    return EvalReport(
        task="sts",
        metrics=metrics,
        model=_model_facts(encoder),
        data=_data_facts(data.files, counts),
        image_tokens=None,
        timings=clock.total(),
        warnings=warnings,
        notes=notes + ["image_tokens is null: STS evaluates no images"],
        paper=PAPER_RESULTS["sts"],
        environment=_environment(),
    )


def evaluate_triplets(
    encoder: E5VEncoder,
    data: TripletSet,
    *,
    ks: Sequence[int] = (1, 5),
    via_qdrant: bool = False,
    store: StoreConfig | None = None,
    show_progress: bool = False,
    limited: bool = False,
) -> EvalReport:
    """Anchor→positive recall@k against the pool of every distinct positive and negative text.

    Anchors are embedded with ``embed_queries`` and the pool with ``embed_texts`` (identical unless a
    ``query_prompt`` is set). Identical texts are one pool entry, so a positive repeated across rows is not its own
    competitor. Also reports ``triplet_accuracy``: % of rows with a negative where cos(anchor, positive) >
    cos(anchor, negative).
    """
    clock = _Clock()
    t = time.perf_counter()
    pool = list(dict.fromkeys(data.positives + [n for n in data.negatives if n is not None]))
    pool_vecs = encoder.embed_texts(pool, show_progress=show_progress)
    anchor_vecs = encoder.embed_queries(data.anchors, show_progress=show_progress)
    t = clock.lap("embed_texts_s", t)
    index = {s: i for i, s in enumerate(pool)}
    relevant = [[index[p]] for p in data.positives]
    ranks = retrieval_ranks(anchor_vecs, pool_vecs, relevant)
    metrics: dict[str, dict[str, float | None]] = {
        "anchor_to_positive": {**recall_at_k(ranks, ks), "median_rank": median_rank(ranks)}
    }
    with_neg = [i for i, n in enumerate(data.negatives) if n is not None]
    if with_neg:
        pos = (anchor_vecs[with_neg] * pool_vecs[[index[data.positives[i]] for i in with_neg]]).sum(1)
        neg = (anchor_vecs[with_neg] * pool_vecs[[index[data.negatives[i]] for i in with_neg]]).sum(1)
        metrics["anchor_to_positive"]["triplet_accuracy"] = float(100.0 * np.mean(pos > neg))
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "triplets", limited=limited)
    qdrant = None
    if via_qdrant:
        q_ranks, facts = qdrant_ranks(anchor_vecs, pool_vecs, relevant, limit=max(ks), store=store)
        qdrant = _qdrant_section(metrics, {"anchor_to_positive": recall_at_k(q_ranks, ks)}, facts, warnings)
        t = clock.lap("qdrant_s", t)
    counts = {"triplets": len(data.anchors), "pool": len(pool), "with_negative": len(with_neg)}
    return EvalReport(
        task="triplets",
        metrics=metrics,
        model=_model_facts(encoder),
        data=_data_facts(data.files, counts),
        image_tokens=None,
        timings=clock.total(),
        warnings=warnings,
        notes=notes + ["image_tokens is null: triplets are text only"],
        qdrant=qdrant,
        environment=_environment(),
    )
