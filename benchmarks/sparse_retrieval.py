"""Sparse-side retrieval quality on a real text tree: this package's BM25 vs Qdrant's own (qdrant-edge-py ``Bm25``).

Run:  python benchmarks/sparse_retrieval.py [--root /usr/share/doc] [--files 1500] [--queries 150] [--engine edge]
      (a few minutes on 2 busy cores; prints one table)

What it does
- Reads UTF-8 text files under ``--root`` (READMEs, copyright files, NEWS, ``*.txt|md|rst``, gzipped changelogs;
  a seeded sample of ``--files``), cuts them into 300-word chunks and drops exact duplicate chunks.
- Builds, per encoder, one hybrid collection the way ``ingest --hybrid`` does (``Modifier.IDF``; a 4-d noise dense
  vector, unused) in an embedded store (``--engine edge`` or ``local``) and upserts every chunk's sparse vector.
- Draws queries from the chunks, with the relevant set decided from the raw text, independently of both encoders
  (a chunk is relevant when it contains the query's word(s) as whitespace-separated tokens, case-insensitively):
  ``code``: one token with a digit and a letter or joiner, in at most 2 chunks (versions, hashes, dates, CVE ids,
  paths; Markdown link debris excluded);
  ``rare word``: one alphabetic token of 6+ letters in at most 2 chunks; ``keywords``: 3 content words of one chunk
  (relevant: chunks holding all 3); ``phrase``: 8 consecutive words of one chunk (relevant: chunks holding the run).
- Sparse-only queries (``query_points(using="text-sparse-new")``); reports recall@1 (the first hit is relevant),
  recall@10 (a relevant chunk in the top 10) and MRR@10 per class and encoder, and encoding speed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

NAMES = re.compile(r"^(README.*|copyright|NEWS.*|changelog.*\.gz|.*\.(txt|md|rst))$", re.IGNORECASE)
STRIP = "\"'`.,;:!?()[]{}<>*#"
COMMON = frozenset("the and for that this with from are not you your can will have has was which all any but".split())


def read_tree(root: str, files: int, rng) -> list[tuple[str, str]]:
    paths = sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink() and NAMES.match(p.name))
    picked = [paths[i] for i in sorted(rng.choice(len(paths), size=min(files, len(paths)), replace=False))]
    out = []
    for path in picked:
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, gzip.BadGzipFile):
            continue
        if "\x00" not in text:
            out.append((str(path), text))
    return out


def chunks_of(texts: list[tuple[str, str]], words: int = 300) -> list[str]:
    seen, out = set(), []
    for _, text in texts:
        tokens = text.split()
        for start in range(0, len(tokens), words):
            chunk = " ".join(tokens[start : start + words])
            if len(chunk) > 40 and chunk not in seen:
                seen.add(chunk)
                out.append(chunk)
    return out


def raw_tokens(chunk: str) -> list[str]:
    return [t for t in (w.strip(STRIP).lower() for w in chunk.split()) if t]


def make_queries(chunks: list[str], n: int, rng) -> list[tuple[str, str, set[int]]]:
    """(class, query, relevant chunk ids): ``n`` per class, ground truth from the raw text only."""
    token_sets = [set(raw_tokens(c)) for c in chunks]
    df: dict[str, set[int]] = {}
    for i, tokens in enumerate(token_sets):
        for t in tokens:
            df.setdefault(t, set()).add(i)
    lowered = [" " + c.lower() + " " for c in chunks]
    order = rng.permutation(len(chunks))
    out: list[tuple[str, str, set[int]]] = []

    def code(t):
        has = any(c.isalpha() or c in "-._/:@+" for c in t)
        return len(t) >= 5 and any(c.isdigit() for c in t) and has and not any(c in "[]()`\\" for c in t)

    def rare(t):
        return len(t) >= 6 and t.isalpha()

    for label, pick in (("code", code), ("rare word", rare)):
        found = 0
        for i in order:
            cands = sorted(t for t in token_sets[i] if pick(t) and len(df[t]) <= 2)
            if cands:
                t = cands[int(rng.integers(len(cands)))]
                out.append((label, t, set(df[t])))
                found += 1
                if found == n:
                    break
    found = 0
    for i in order:
        content = sorted(t for t in token_sets[i] if t.isalpha() and len(t) >= 4 and t not in COMMON)
        if len(content) >= 3:
            words = [content[j] for j in rng.choice(len(content), size=3, replace=False)]
            out.append(("keywords", " ".join(words), set.intersection(*(df[w] for w in words))))
            found += 1
            if found == n:
                break
    found = 0
    for i in order:
        tokens = chunks[i].split()
        if len(tokens) >= 8:
            start = int(rng.integers(len(tokens) - 7))
            phrase = " ".join(tokens[start : start + 8])
            relevant = {j for j, c in enumerate(lowered) if " " + phrase.lower() + " " in c}
            out.append(("phrase", phrase, relevant or {int(i)}))
            found += 1
            if found == n:
                break
    return out


def evaluate(encoder, chunks, queries, engine: str, folder: str) -> dict:
    from qdrant_client import models

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.sparse import SPARSE_VECTOR_NAME
    from e5v_qdrant.store import VECTOR_NAME, collection_create_kwargs, open_client

    started = time.perf_counter()
    indices, values = encoder.doc_fn(chunks)
    encode_s = time.perf_counter() - started
    client = open_client(StoreConfig(qdrant_path=folder, embedded=engine))
    try:
        client.create_collection("bench", **collection_create_kwargs(StoreConfig(), 4, server=False, sparse=True))
        rng = np.random.default_rng(1)
        for start in range(0, len(chunks), 256):
            client.upsert(
                "bench",
                [
                    models.PointStruct(
                        id=i,
                        vector={
                            VECTOR_NAME: rng.standard_normal(4).tolist(),
                            SPARSE_VECTOR_NAME: models.SparseVector(indices=indices[i], values=values[i]),
                        },
                    )
                    for i in range(start, min(start + 256, len(chunks)))
                ],
                wait=True,
            )
        stats: dict[str, list[float]] = {}
        for label, query, relevant in queries:
            qi, qv = encoder.encode_query(query)
            hits = (
                client.query_points(
                    "bench",
                    query=models.SparseVector(indices=qi, values=qv),
                    using=SPARSE_VECTOR_NAME,
                    limit=10,
                    with_payload=False,
                ).points
                if qi
                else []
            )
            ranks = [r for r, h in enumerate(hits, 1) if h.id in relevant]
            s = stats.setdefault(label, [0, 0, 0.0, 0])
            s[0] += bool(ranks and ranks[0] == 1)
            s[1] += bool(ranks)
            s[2] += 1 / ranks[0] if ranks else 0.0
            s[3] += 1
    finally:
        client.close()
    return {"encode_ms": encode_s / len(chunks) * 1000, "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/doc")
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--queries", type=int, default=150, help="queries per class")
    parser.add_argument("--engine", choices=("edge", "local"), default="edge")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from e5v_qdrant.sparse import BM25Encoder, QdrantBM25Encoder

    rng = np.random.default_rng(args.seed)
    texts = read_tree(args.root, args.files, rng)
    chunks = chunks_of(texts)
    queries = make_queries(chunks, args.queries, rng)
    encoders = {"e5v-bm25 (ours)": BM25Encoder(), "qdrant-bm25 (Edge Bm25)": QdrantBM25Encoder()}
    results = {}
    for name, encoder in encoders.items():
        with tempfile.TemporaryDirectory() as folder:
            results[name] = evaluate(encoder, chunks, queries, args.engine, os.path.join(folder, "store"))

    print(
        f"{len(texts)} files under {args.root}, {len(chunks)} unique 300-word chunks, "
        f"{len(queries)} queries, sparse-only search, Qdrant {args.engine}, IDF modifier"
    )
    labels = list(dict.fromkeys(q[0] for q in queries))
    print(f"{'encoder':24} {'class':10} {'n':>4} {'recall@1':>9} {'recall@10':>10} {'MRR@10':>7}")
    for name, result in results.items():
        for label in [*labels, "all"]:
            rows = list(result["stats"].values()) if label == "all" else [result["stats"][label]]
            r1, r10, mrr, n = (sum(r[k] for r in rows) for k in range(4))
            print(f"{name:24} {label:10} {n:>4} {r1 / n:>9.3f} {r10 / n:>10.3f} {mrr / n:>7.3f}")
        print(f"{name:24} encoding: {result['encode_ms']:.2f} ms per chunk")


if __name__ == "__main__":
    main()
