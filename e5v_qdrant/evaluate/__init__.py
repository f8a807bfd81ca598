"""Evaluation: retrieval recall@k, composed retrieval (CIRR style and FashionIQ), image-to-image retrieval with rendered
captions, STS Spearman and triplet recall, with a report that records everything that changes the numbers.

Modules, bottom up (imports point down):

* ``metrics`` — pure functions over score matrices and vectors (``ranks_from_scores``, ``recall_at_k``,
  ``spearman``…). No model, no files; fine-tuning imports its recall from here.
* ``datasets`` — data files into small dataclasses (``read_retrieval``, ``read_composed``, ``read_sts``,
  ``read_triplets``), with typed errors naming the file, line and remedy.
* ``render`` — captions rendered as 800x400 images, as the authors do for image-to-image retrieval.
* ``qdrant`` — the same ranks by exact search in a temporary Qdrant collection (``qdrant_ranks``).
* ``report`` — ``EvalReport`` and ``diagnose``: metrics, model facts, image-token statistics, data file hashes,
  counts, timings and *warnings* for every known cause of a gap to the paper.
* ``tasks`` — ``evaluate_retrieval`` / ``evaluate_composed`` / ``evaluate_fashioniq`` / ``evaluate_i2i`` /
  ``evaluate_sts`` / ``evaluate_triplets`` and the
  ``TASKS`` table (name → inputs, reader, evaluator, help) that ``e5v-qdrant eval`` is built from.

Example:
    >>> from e5v_qdrant import E5VEncoder                                        # doctest: +SKIP
    >>> from e5v_qdrant.evaluate import read_retrieval, evaluate_retrieval      # doctest: +SKIP
    >>> data = read_retrieval("dataset_flickr30k.json", "flickr30k-images")      # doctest: +SKIP
    >>> report = evaluate_retrieval(E5VEncoder(), data)                          # doctest: +SKIP
    >>> print(report.format_table())                                            # doctest: +SKIP
"""

from __future__ import annotations

from .datasets import (
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
from .metrics import (
    MISS,
    TIE_POLICY,
    average_ranks,
    median_rank,
    pearson,
    ranks_from_scores,
    recall_at_k,
    retrieval_ranks,
    spearman,
)
from .qdrant import qdrant_ranks
from .render import render_caption, render_captions
from .report import PAPER_RESULTS, EvalReport, diagnose, file_sha256
from .tasks import (
    TASKS,
    EvalTask,
    evaluate_composed,
    evaluate_fashioniq,
    evaluate_i2i,
    evaluate_retrieval,
    evaluate_sts,
    evaluate_triplets,
)

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
    "FashionIQSet",
    "PairSet",
    "TripletSet",
    "read_retrieval",
    "read_composed",
    "read_fashioniq",
    "read_sts",
    "read_triplets",
    "EvalReport",
    "diagnose",
    "file_sha256",
    "evaluate_retrieval",
    "evaluate_composed",
    "evaluate_sts",
    "evaluate_triplets",
    "evaluate_i2i",
    "evaluate_fashioniq",
    "render_caption",
    "render_captions",
    "PAPER_RESULTS",
    "TASKS",
    "EvalTask",
]
