"""The evaluation tasks: each embeds a data set through an ``E5VEncoder`` (the one ingestion uses) and returns an
``EvalReport``; ``TASKS`` maps each task name to its reader, evaluator and help, and the CLI dispatches from it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import E5VInputError
from .datasets import (
    FASHIONIQ_CATEGORIES,
    ComposedSet,
    FashionIQSet,
    PairSet,
    RetrievalSet,
    TripletSet,
    read_composed,
    read_fashioniq,
    read_retrieval,
    read_sts,
    read_triplets,
)
from .metrics import median_rank, pearson, recall_at_k, retrieval_ranks, spearman
from .qdrant import qdrant_ranks
from .render import font_facts, render_captions, resolve_font
from .report import (
    PAPER_RESULTS,
    Clock,
    EvalReport,
    composed_prompts,
    data_facts,
    diagnose,
    environment,
    image_token_stats,
    model_facts,
    paper_key,
    qdrant_section,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import StoreConfig
    from ..encoder import E5VEncoder

__all__ = [
    "evaluate_retrieval",
    "evaluate_composed",
    "evaluate_sts",
    "evaluate_triplets",
    "evaluate_i2i",
    "evaluate_fashioniq",
    "TaskInput",
    "EvalTask",
    "TASKS",
]


#: One ranking to score: (name, query vectors, candidate vectors, relevant per query, excluded per query or None).
Direction = tuple[str, np.ndarray, np.ndarray, list[list[int]], list | None]


def _caption_directions(names, caption_vecs, image_vecs, caption_image, doc_vecs=None) -> list[Direction]:
    """CLIP-style pair: captions → their image, and images → any of their captions (``doc_vecs`` if the captions are
    embedded differently as candidates)."""
    forward = [[i] for i in caption_image]
    backward: list[list[int]] = [[] for _ in range(len(image_vecs))]
    for j, i in enumerate(caption_image):
        backward[i].append(j)
    candidates = caption_vecs if doc_vecs is None else doc_vecs
    return [(names[0], caption_vecs, image_vecs, forward, None), (names[1], image_vecs, candidates, backward, None)]


def _score(directions: list[Direction], ks: Sequence[int]) -> dict[str, dict[str, float | None]]:
    metrics = {}
    for name, queries, candidates, relevant, exclude in directions:
        ranks = retrieval_ranks(queries, candidates, relevant, exclude)
        metrics[name] = {**recall_at_k(ranks, ks), "median_rank": median_rank(ranks)}
    return metrics


def _via_qdrant(directions: list[Direction], metrics, ks: Sequence[int], store, warnings: list[str]) -> dict[str, Any]:
    """The same rankings by exact search in temporary Qdrant collections, next to the in-memory metrics."""
    recalls, facts = {}, {}
    for name, queries, candidates, relevant, exclude in directions:
        ranks, facts[name] = qdrant_ranks(queries, candidates, relevant, exclude, limit=max(ks), store=store)
        recalls[name] = recall_at_k(ranks, ks)
    return qdrant_section(metrics, recalls, facts[directions[0][0]], warnings)


def _report(
    task: str,
    encoder: E5VEncoder,
    files: Sequence[str],
    counts: dict[str, int],
    facts: dict[str, Any],
    clock: Clock,
    warnings: list[str],
    notes: list[str],
    metrics: dict[str, dict[str, float | None]],
    image_tokens: dict[str, Any] | None = None,
    qdrant: dict[str, Any] | None = None,
    paper: dict[str, Any] | None = None,
    prompts: dict[str, str] | None = None,
) -> EvalReport:
    """A task's ``EvalReport``: its results plus what every task records alike (model facts, data files with their
    ``counts`` and other ``facts``, timings, environment)."""
    return EvalReport(task=task, metrics=metrics, model=model_facts(encoder), data=data_facts(files, counts, **facts),
                      image_tokens=image_tokens, timings=clock.total(), warnings=warnings, notes=notes, qdrant=qdrant,
                      paper=paper, environment=environment(), prompts=prompts)  # fmt: skip


def _check_benchmark_split(
    key, paper, data: RetrievalSet, limited: bool, warnings: list[str], notes: list[str]
) -> None:
    """Flag a Flickr30K / COCO run that is not the paper's test split, or whose test split has the wrong size."""
    if paper and data.split == "test" and not limited:
        expected = {"flickr30k": 1000, "coco": 5000}[key]
        if len(data.images) != expected:
            warnings.append(f"{len(data.images)} test images, but the paper's {paper['benchmark']} has {expected}")
    elif paper and data.split != "test":
        notes.append(f"split {data.split!r}: the paper reports the test split")


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
    clock = Clock()
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
    directions = _caption_directions(
        ("text_to_image", "image_to_text"), query_vecs, image_vecs, data.caption_image, doc_vecs
    )
    metrics = _score(directions, ks)
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "retrieval", limited=limited)
    qdrant = None
    if via_qdrant:
        qdrant = _via_qdrant(directions, metrics, ks, store, warnings)
        t = clock.lap("qdrant_s", t)
    tokens = image_token_stats(encoder, data.images)
    clock.lap("image_token_count_s", t)
    key = paper_key(data.dataset)
    paper = PAPER_RESULTS.get(key) if key else None
    _check_benchmark_split(key, paper, data, limited, warnings, notes)
    counts = {"images": len(data.images), "captions": len(data.captions)}
    facts = {"dataset": data.dataset, "split": data.split}
    return _report(
        "retrieval", encoder, data.files, counts, facts, clock, warnings, notes, metrics, tokens, qdrant, paper
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
    return _composed_report(
        encoder,
        data,
        lambda: encoder.embed_composed(data.references, data.texts, show_progress=show_progress),
        task="composed",
        exclude_reference=True,
        paper=PAPER_RESULTS["cirr"],
        ks=ks,
        via_qdrant=via_qdrant,
        store=store,
        show_progress=show_progress,
        limited=limited,
    )


def evaluate_fashioniq(
    encoder: E5VEncoder,
    data: FashionIQSet,
    *,
    ks: Sequence[int] = (1, 5, 10, 50),
    via_qdrant: bool = False,
    store: StoreConfig | None = None,
    show_progress: bool = False,
    limited: bool = False,
) -> EvalReport:
    """FashionIQ composed retrieval for one category, as the authors evaluate it.

    Candidates (the split file's images) are embedded with ``embed_images``, each query with
    ``embed_composed_pairs(reference, (caption 1, caption 2))`` (both caption orders, raw vectors summed, then
    normalised). Unlike CIRR the reference image is **not** excluded: it stays a candidate. Use an encoder with the
    category's prompt preset (``prompts="fashioniq-dress"`` …); any other preset is flagged in the warnings.

    Example:
        >>> enc = E5VEncoder(prompts="fashioniq-dress")                                   # doctest: +SKIP
        >>> data = read_fashioniq("cap.dress.val.json", "img", "split.dress.val.json", category="dress")  # doctest: +SKIP
        >>> print(evaluate_fashioniq(enc, data).format_table())                            # doctest: +SKIP
    """
    return _composed_report(
        encoder,
        data,
        lambda: encoder.embed_composed_pairs(data.references, data.captions, show_progress=show_progress),
        task=f"fashioniq-{data.category}",
        exclude_reference=False,
        paper=PAPER_RESULTS["fashioniq"],
        ks=ks,
        via_qdrant=via_qdrant,
        store=store,
        show_progress=show_progress,
        limited=limited,
        category=data.category,
    )


def _composed_report(
    encoder: E5VEncoder,
    data: ComposedSet | FashionIQSet,
    embed_queries: Callable[[], np.ndarray],
    *,
    task: str,
    exclude_reference: bool,
    paper: dict[str, Any],
    ks: Sequence[int],
    via_qdrant: bool,
    store: StoreConfig | None,
    show_progress: bool,
    limited: bool,
    **data_extra: Any,
) -> EvalReport:
    """Score composed queries against ``data.candidates``, with or without each query's reference as a candidate."""
    clock = Clock()
    t = time.perf_counter()
    cand_vecs = encoder.embed_images(data.candidates, show_progress=show_progress)
    t = clock.lap("embed_candidates_s", t)
    query_vecs = embed_queries()
    t = clock.lap("embed_queries_s", t)
    index = {p: i for i, p in enumerate(data.candidates)}
    relevant = [[index[p]] for p in data.targets]
    exclude = [[index[p]] if p in index else None for p in data.references] if exclude_reference else None
    directions = [("composed_to_image", query_vecs, cand_vecs, relevant, exclude)]
    metrics = _score(directions, ks)
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, task, limited=limited)
    counts = {"queries": len(data.references), "candidates": len(data.candidates)}
    if exclude_reference:
        same = sum(r == g for r, g in zip(data.references, data.targets, strict=True))
        counts["target_is_reference"] = same
        if same:
            warnings.append(f"{same} queries have target == reference; excluding the reference makes them misses")
    else:
        counts["references_among_candidates"] = sum(r in index for r in data.references)
        notes.append("reference images stay among the candidates (FashionIQ's protocol; CIRR excludes them)")
    qdrant = None
    if via_qdrant:
        qdrant = _via_qdrant(directions, metrics, ks, store, warnings)
        t = clock.lap("qdrant_s", t)
    tokens = image_token_stats(encoder, list(dict.fromkeys(data.candidates + data.references)))
    clock.lap("image_token_count_s", t)
    prompts = composed_prompts(encoder, pairs=isinstance(data, FashionIQSet))
    return _report(task, encoder, data.files, counts, data_extra, clock, warnings, notes, metrics, tokens, qdrant, paper,
                   prompts=prompts)  # fmt: skip


def evaluate_sts(
    encoder: E5VEncoder, data: PairSet, *, show_progress: bool = False, limited: bool = False
) -> EvalReport:
    """Spearman (and Pearson) correlation, × 100, between gold scores and the cosine similarity of each pair's
    ``embed_texts`` vectors. Each distinct sentence is embedded once."""
    clock = Clock()
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
    notes.append("image_tokens is null: STS evaluates no images")
    return _report("sts", encoder, data.files, counts, {}, clock, warnings, notes, metrics, paper=PAPER_RESULTS["sts"])


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
    clock = Clock()
    t = time.perf_counter()
    pool = list(dict.fromkeys(data.positives + [n for n in data.negatives if n is not None]))
    pool_vecs = encoder.embed_texts(pool, show_progress=show_progress)
    anchor_vecs = encoder.embed_queries(data.anchors, show_progress=show_progress)
    t = clock.lap("embed_texts_s", t)
    index = {s: i for i, s in enumerate(pool)}
    relevant = [[index[p]] for p in data.positives]
    directions = [("anchor_to_positive", anchor_vecs, pool_vecs, relevant, None)]
    metrics = _score(directions, ks)
    with_neg = [i for i, n in enumerate(data.negatives) if n is not None]
    if with_neg:
        pos = (anchor_vecs[with_neg] * pool_vecs[[index[data.positives[i]] for i in with_neg]]).sum(1)
        neg = (anchor_vecs[with_neg] * pool_vecs[[index[data.negatives[i]] for i in with_neg]]).sum(1)
        metrics["anchor_to_positive"]["triplet_accuracy"] = float(100.0 * np.mean(pos > neg))
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "triplets", limited=limited)
    qdrant = None
    if via_qdrant:
        qdrant = _via_qdrant(directions, metrics, ks, store, warnings)
        t = clock.lap("qdrant_s", t)
    counts = {"triplets": len(data.anchors), "pool": len(pool), "with_negative": len(with_neg)}
    notes.append("image_tokens is null: triplets are text only")
    return _report("triplets", encoder, data.files, counts, {}, clock, warnings, notes, metrics, qdrant=qdrant)


def evaluate_i2i(
    encoder: E5VEncoder,
    data: RetrievalSet,
    *,
    font: str | os.PathLike | None = None,
    save_rendered: str | os.PathLike | None = None,
    ks: Sequence[int] = (1, 5, 10),
    via_qdrant: bool = False,
    store: StoreConfig | None = None,
    show_progress: bool = False,
    limited: bool = False,
) -> EvalReport:
    """Image-to-image retrieval (the paper's I2I): every caption rendered as an image, then recall both ways.

    Captions are rendered as the authors render them (``evaluate.render``) and embedded with the ordinary image
    prompt, like the photos. ``caption_image_to_image``: a rendered caption finds its photo (the paper's I2I R@1:
    Flickr30K 67.8, COCO 41.2); ``image_to_caption_image``: a photo finds any of its rendered captions.

    Args:
        font: TrueType/OpenType file to render with (default: Liberation Sans, metric-compatible with the authors'
            Arial); its path and SHA-256 go into the report.
        save_rendered: keep the rendered captions there as ``NNNNNN.png`` (names sort in the data file's caption
            order); default: a temporary folder, deleted afterwards.

    Example:
        >>> data = read_retrieval("dataset_flickr30k.json", "flickr30k-images")     # doctest: +SKIP
        >>> print(evaluate_i2i(E5VEncoder(), data).format_table())                 # doctest: +SKIP
    """
    font_path = resolve_font(font)
    clock = Clock()
    t = time.perf_counter()
    tmp_dir = None if save_rendered else tempfile.mkdtemp(prefix="e5v-i2i-")
    try:
        rendered = render_captions(data.captions, save_rendered or tmp_dir, font_path, show_progress=show_progress)
        t = clock.lap("render_s", t)
        image_vecs = encoder.embed_images(data.images, show_progress=show_progress)
        t = clock.lap("embed_images_s", t)
        caption_vecs = encoder.embed_images(rendered, show_progress=show_progress)
        t = clock.lap("embed_rendered_captions_s", t)
        rendered_tokens = encoder.count_image_tokens(rendered[0])  # every rendering has the same size
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    directions = _caption_directions(
        ("caption_image_to_image", "image_to_caption_image"), caption_vecs, image_vecs, data.caption_image
    )
    metrics = _score(directions, ks)
    t = clock.lap("score_s", t)
    warnings, notes = diagnose(encoder, "i2i", limited=limited)
    if os.path.basename(font_path).lower() != "arial.ttf":
        notes.append(
            f"captions rendered with {os.path.basename(font_path)}; the authors used Arial (Liberation Sans has the "
            "same advance widths, so the same line breaks, but other glyph shapes): pass --font arial.ttf to match"
        )
    qdrant = None
    if via_qdrant:
        qdrant = _via_qdrant(directions, metrics, ks, store, warnings)
        t = clock.lap("qdrant_s", t)
    tokens = image_token_stats(encoder, data.images)
    clock.lap("image_token_count_s", t)
    key = paper_key(data.dataset)
    paper = PAPER_RESULTS.get(f"i2i-{key}") if key else None
    _check_benchmark_split(key, paper, data, limited, warnings, notes)
    counts = {"images": len(data.images), "captions": len(data.captions)}
    facts = {
        "dataset": data.dataset,
        "split": data.split,
        "font": font_facts(font_path),
        "rendered_captions": os.path.abspath(save_rendered) if save_rendered else None,
        "rendered_caption_image_tokens": rendered_tokens,
    }
    return _report("i2i", encoder, data.files, counts, facts, clock, warnings, notes, metrics, tokens, qdrant, paper)


# ====================================================================================================== task table
@dataclass(frozen=True)
class TaskInput:
    """One input of a task: a CLI option ``--{name}`` (dashes for underscores) and the keyword ``name`` passed to the
    task's reader (``stage="read"``), to its evaluator (``"evaluate"``) or to both (``"both"``: checked by the reader
    before the model loads, used by the evaluator)."""

    name: str
    help: str
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] | None = None
    stage: str = "read"


@dataclass(frozen=True)
class EvalTask:
    """One evaluation: its inputs, how to read them and how to score them.

    Attributes:
        read: ``read(limit=..., **inputs)`` → the data set (checked before any model is loaded).
        evaluate: ``evaluate(encoder, data, show_progress=..., limited=..., [via_qdrant=..., store=...])`` → report.
        via_qdrant: whether the task can also rank through a temporary Qdrant collection.
        prompts: ``prompts(read inputs)`` → the prompt preset the task needs (used when none was chosen), or None.
    """

    name: str
    help: str
    description: str
    inputs: tuple[TaskInput, ...]
    read: Callable[..., Any]
    evaluate: Callable[..., EvalReport]
    via_qdrant: bool = True
    prompts: Callable[[dict[str, Any]], str | None] | None = None


_RETRIEVAL_INPUTS = (
    TaskInput("images", "folder holding the images (Karpathy 'filepath' sub-folders are tried first)", True),
    TaskInput(
        "captions",
        'Karpathy-split JSON ({"images": [{"filename", "split", "sentences": [{"raw"}]}]}) or JSONL '
        '({"image": "name.jpg", "captions": [...]} per line)',
        True,
    ),
    TaskInput("split", "Karpathy split to evaluate: test, val, train, restval or all (default: test)", default="test"),
)


def _read_composed(*, data, images, candidates, fashioniq, limit) -> ComposedSet | FashionIQSet:
    if not fashioniq:
        return read_composed(data, images, candidates=candidates, limit=limit)
    if images is None or candidates is None:
        raise E5VInputError(
            "--fashioniq", "needs --images DIR and --candidates split.CATEGORY.SPLIT.json besides --data"
        )
    return read_fashioniq(data, images, candidates, category=fashioniq, limit=limit)


def _evaluate_composed(encoder: E5VEncoder, data: ComposedSet | FashionIQSet, **options) -> EvalReport:
    evaluate = evaluate_fashioniq if isinstance(data, FashionIQSet) else evaluate_composed
    return evaluate(encoder, data, **options)


def _read_i2i(*, captions, images, split, font, limit) -> RetrievalSet:
    resolve_font(font)  # a missing font fails here, before the model loads
    return read_retrieval(captions, images, split=split, limit=limit)


TASKS: dict[str, EvalTask] = {
    task.name: task
    for task in (
        EvalTask(
            "retrieval",
            help="image-caption retrieval: text->image and image->text R@1/5/10",
            description="Image-caption retrieval, CLIP style: a caption's target is its image (text->image); an image "
            "is found if any of its captions ranks in the top k (image->text). Paper: Flickr30K t2i R@1 79.5, COCO "
            "52.0.",
            inputs=_RETRIEVAL_INPUTS,
            read=lambda *, captions, images, split, limit: read_retrieval(captions, images, split=split, limit=limit),
            evaluate=evaluate_retrieval,
        ),
        EvalTask(
            "composed",
            help="composed image retrieval (reference image + modification text -> target), R@1/5/10/50",
            description="CIRR-style composed retrieval: each query is a reference image with a modification text; "
            "its reference image is excluded from its own candidates, as the authors and CIRR's evaluation do.",
            inputs=(
                TaskInput("data", "JSONL with reference, text (or caption) and target (or target_hard) per line", True),
                TaskInput(
                    "images", "folder relative image paths are resolved against (default: the data file's folder)"
                ),
                TaskInput(
                    "candidates",
                    "file with one candidate image per line, or a folder of images (default: every image in --data); "
                    "with --fashioniq: FashionIQ's split.CATEGORY.SPLIT.json",
                ),
                TaskInput(
                    "fashioniq",
                    "FashionIQ category: read FashionIQ's own files (--data cap.CATEGORY.SPLIT.json, --images DIR, "
                    "--candidates split.CATEGORY.SPLIT.json), query with both caption orders summed, keep the "
                    "reference among the candidates, and use the prompt preset fashioniq-CATEGORY unless --prompts "
                    "is given",
                    choices=FASHIONIQ_CATEGORIES,
                ),
            ),
            read=_read_composed,
            evaluate=_evaluate_composed,
            prompts=lambda inputs: f"fashioniq-{inputs['fashioniq']}" if inputs.get("fashioniq") else None,
        ),
        EvalTask(
            "i2i",
            help="image-to-image retrieval: captions rendered as images vs the photos, R@1/5/10",
            description="The paper's I2I: every caption is rendered as an 800x400 image (black 40-pt sans on white, "
            "word-wrapped at 760 px) and embedded with the image prompt; then rendered caption -> photo and photo -> "
            "rendered caption recall. Paper R@1 (rendered caption -> photo): Flickr30K 67.8, COCO 41.2.",
            inputs=(
                *_RETRIEVAL_INPUTS,
                TaskInput(
                    "font",
                    "TrueType font to render with (default: Liberation Sans, metric-compatible with the authors' "
                    "Arial; Debian package fonts-liberation); its path and SHA-256 go into the report",
                    stage="both",
                ),
                TaskInput(
                    "save_rendered",
                    "keep the rendered captions in this folder as NNNNNN.png (sorted names = the data file's caption "
                    "order); default: a temporary folder",
                    stage="evaluate",
                ),
            ),
            read=_read_i2i,
            evaluate=evaluate_i2i,
        ),
        EvalTask(
            "sts",
            help="semantic textual similarity: Spearman of cosine similarities vs gold scores",
            description="Spearman (and Pearson) correlation x 100 between gold scores and cosine similarities of "
            "sentence pairs. Paper: 86.00 averaged over STS12-16, STS-B and SICK-R.",
            inputs=(
                TaskInput(
                    "data", "JSONL (sentence1, sentence2, score) or TSV (header with those names, or 3 columns)", True
                ),
            ),
            read=lambda *, data, limit: read_sts(data, limit=limit),
            evaluate=evaluate_sts,
            via_qdrant=False,
        ),
        EvalTask(
            "triplets",
            help="recall@1 of anchor->positive against the pool of all positives and negatives",
            description="Anchor->positive recall against every distinct positive and negative text (the fine-tuning "
            "data formats), plus triplet accuracy (anchor closer to its positive than to its negative).",
            inputs=(
                TaskInput("data", "JSONL anchor/positive[/negative] or CSV with header sent0,sent1[,hard_neg]", True),
            ),
            read=lambda *, data, limit: read_triplets(data, limit=limit),
            evaluate=evaluate_triplets,
        ),
    )
}
