"""Metrics: pure functions over score matrices and vectors (no model, no files, no project imports but errors).

Tie handling is **pessimistic** everywhere: a non-relevant candidate whose score equals the best relevant candidate's
score is ranked ahead of it. Ties between relevant candidates do not matter (any relevant hit counts). This makes
recall deterministic and never flatters a model that collapses inputs onto identical vectors; with real float
embeddings exact ties only come from duplicate inputs. Recalls and correlations are in percent, as in the paper.

Example:
    >>> import numpy as np
    >>> from e5v_qdrant.evaluate.metrics import ranks_from_scores, recall_at_k
    >>> recall_at_k(ranks_from_scores(np.array([[0.9, 0.1], [0.2, 0.8]]), [[0], [0]]), [1])
    {'R@1': 50.0}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import E5VInputError

__all__ = [
    "MISS",
    "TIE_POLICY",
    "ranks_from_scores",
    "retrieval_ranks",
    "recall_at_k",
    "median_rank",
    "average_ranks",
    "pearson",
    "spearman",
]

#: Rank given to a query whose relevant candidates are all excluded (or, via Qdrant, not returned): never a hit.
MISS = np.iinfo(np.int64).max
TIE_POLICY = "pessimistic: a non-relevant candidate scoring equal to the best relevant one ranks ahead of it"


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
