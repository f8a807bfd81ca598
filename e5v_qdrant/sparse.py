"""Offline BM25-style sparse vectors for hybrid (dense + keyword) search, computed without any download.

E5-V's one-word-summary embedding is weak on exact tokens (part numbers, ids, file names, rare names); a sparse
keyword vector next to it lets Qdrant find those. This encoder needs no model or vocabulary file:

1. **Tokenize**: Unicode NFKC normalization, ``casefold``, then the regex ``\\w+(?:[-._/:@+]\\w+)*`` (Unicode word
   characters, optionally joined by ``- . _ / : @ +``). A joined token such as ``xj-4471.b`` is kept whole **and**
   split into its parts (``xj``, ``4471``, ``b``), so ``XJ-4471.B`` and ``4471`` both match it.
2. **Filter and stem**: English stopwords (the list below) are dropped; purely alphabetic tokens are reduced with the
   Snowball stemmer of ``language`` (``snowballstemmer``, pure Python); tokens with digits or joiners are kept as is.
3. **Hash**: a token's index is the first 4 bytes of ``blake2b(token.encode("utf-8"), digest_size=4)`` read as a
   big-endian unsigned 32-bit integer (``int.from_bytes(..., "big")``). Stable across processes, machines and
   Python versions (unlike ``hash()``); tokens whose hashes collide share an index (their counts add up).
4. **Weight**: a document term's value is BM25's term-frequency saturation
   ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))`` with ``dl`` = the document's token count after step 2
   and a fixed ``avgdl`` (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond").
   Query terms get 1.0 each (repeats count once). IDF is left to Qdrant: collections are created with
   ``SparseVectorParams(modifier=Modifier.IDF)``, which multiplies query weights by the collection's IDF at search
   time, so the score is BM25 over the whole collection and stays correct as it grows.

A second encoder, ``QdrantBM25Encoder``, is Qdrant's own BM25 (qdrant-edge-py's ``Bm25``: murmur3 indices, its word
tokenizer, which splits codes into their parts and keeps no whole). Both behave the same on words, but on exact
codes ours finds the chunk first far more often (``benchmarks/sparse_retrieval.py``, README "Hybrid search"), so
``DEFAULT_ENCODER`` stays ``BM25Encoder()``. A collection's stamp records its encoder's ``spec()``;
``encoder_from_spec`` rebuilds that encoder, so a collection keeps the vectors it was built with.

``sparse_doc_fn`` / ``sparse_query_fn`` have the signature of LlamaIndex's ``SparseEncoderCallable``
(``list[str] -> (list[list[int]], list[list[float]])``), so a collection built with ``ingest --hybrid`` can be queried
by ``QdrantVectorStore(enable_hybrid=True, sparse_doc_fn=sparse_doc_fn, sparse_query_fn=sparse_query_fn)``.

Example:
    >>> indices, values = sparse_doc_fn(["Replace valve XJ-4471 before the pumps run dry"])
    >>> len(indices[0]) == len(values[0])
    True
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import E5VConfigError
from .points import DEFAULT_SPARSE_ENCODER, SPARSE_ENCODERS, SPARSE_VECTOR_NAME

__all__ = [
    "SPARSE_VECTOR_NAME",
    "BM25Encoder",
    "QdrantBM25Encoder",
    "DEFAULT_ENCODER",
    "ENGLISH_STOPWORDS",
    "token_index",
    "sparse_doc_fn",
    "sparse_query_fn",
    "encoder_from_spec",
    "SPARSE_ENCODERS",
    "spec_named",
]

#: Version of the recipe above; recorded in collection stamps. Bump it whenever a step changes the output.
RECIPE_VERSION = 1
#: Version of ``QdrantBM25Encoder``'s output (qdrant-edge-py's ``Bm25``); bump it if an upgrade changes the vectors.
QDRANT_RECIPE_VERSION = 1

_TOKEN = re.compile(r"\w+(?:[-._/:@+]\w+)*")
_PART = re.compile(r"[^\W_]+|_+")

#: English function words dropped before stemming (written for this package; compare e.g. Lucene's English list).
ENGLISH_STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves
    """.split()
)


_LOCAL = threading.local()


@functools.lru_cache(maxsize=1 << 16)
def _stem(language: str, word: str) -> str:
    """Snowball stem of ``word``; one stemmer per thread (a ``snowballstemmer`` stemmer object is not thread-safe)."""
    stemmers = _LOCAL.__dict__.setdefault("stemmers", {})
    if language not in stemmers:
        import snowballstemmer

        stemmers[language] = snowballstemmer.stemmer(language)
    return stemmers[language].stemWord(word)


def token_index(token: str) -> int:
    """The sparse index of a (normalized) token: ``blake2b(token UTF-8, digest_size=4)`` as a big-endian uint32."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "big")


class _LlamaIndexCallables:
    """LlamaIndex's ``SparseEncoderCallable`` pair over an encoder's ``encode_document`` / ``encode_query``."""

    def doc_fn(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[float]]]:
        """LlamaIndex ``SparseEncoderCallable`` for documents."""
        pairs = [self.encode_document(t) for t in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def query_fn(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[float]]]:
        """LlamaIndex ``SparseEncoderCallable`` for queries."""
        pairs = [self.encode_query(t) for t in texts]
        return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass(frozen=True)
class BM25Encoder(_LlamaIndexCallables):
    """BM25-style sparse encoder (see the module docstring for the exact recipe).

    Args:
        k1: term-frequency saturation (BM25's ``k1``; 1.2 is the common default).
        b: length normalization strength in [0, 1] (BM25's ``b``; 0.75 is the common default).
        avg_len: the fixed average document length in tokens that ``b`` normalizes against (256 ≈ a 512-token
            chunk after stopwords are removed).
        language: Snowball stemmer language (``snowballstemmer.algorithms()``); stopwords are only removed for
            ``english``.

    Example:
        >>> enc = BM25Encoder()
        >>> enc.tokens("Running pumps XJ-4471")
        ['run', 'pump', 'xj-4471', 'xj', '4471']
    """

    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0
    language: str = "english"

    def __post_init__(self):
        if self.k1 < 0 or not 0 <= self.b <= 1 or self.avg_len <= 0:
            raise E5VConfigError(
                f"BM25 needs k1 >= 0, 0 <= b <= 1, avg_len > 0; got {self.k1}, {self.b}, {self.avg_len}"
            )
        import snowballstemmer

        if self.language not in snowballstemmer.algorithms():
            raise E5VConfigError(
                f"no Snowball stemmer for language {self.language!r}; choose one of {sorted(snowballstemmer.algorithms())}"
            )

    @property
    def _stopwords(self) -> frozenset[str]:
        return ENGLISH_STOPWORDS if self.language == "english" else frozenset()

    def spec(self) -> dict[str, Any]:
        """What a collection stamp records about this encoder (a different spec means different sparse vectors)."""
        return {"name": "e5v-bm25", "version": RECIPE_VERSION, "vector": SPARSE_VECTOR_NAME, **asdict(self)}

    def tokens(self, text: str) -> list[str]:
        """The normalized tokens of ``text`` in order (joined tokens followed by their parts)."""
        out: list[str] = []
        for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).casefold()):
            token = match.group()
            parts = [p for p in _PART.findall(token) if not p.startswith("_")]
            if not parts:  # underscores only
                continue
            if len(parts) > 1 or token != parts[0]:
                out.append(token)  # a joined token (code, file name, e-mail) is kept whole, unstemmed
            for part in parts:
                if part in self._stopwords:
                    continue
                out.append(_stem(self.language, part) if part.isalpha() else part)
        return out

    def _counts(self, text: str) -> tuple[Counter, int]:
        tokens = self.tokens(text)
        return Counter(token_index(t) for t in tokens), len(tokens)

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        """(indices ascending, BM25 term-frequency weights) of one document."""
        counts, length = self._counts(text)
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_len)
        indices = sorted(counts)
        return indices, [counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in indices]

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        """(indices ascending, 1.0 each) of one query; Qdrant's IDF modifier supplies the term weights."""
        indices = sorted(self._counts(text)[0])
        return indices, [1.0] * len(indices)


@functools.lru_cache(maxsize=8)
def _qdrant_bm25(k: float, b: float, avg_len: float, language: str):
    """One ``qdrant_edge.Bm25`` model per parameter set (a Rust object; building it loads stopwords and stemmer).
    The module comes from the store package, the one place that imports ``qdrant_edge``."""
    from .store.edge import qdrant_edge_module

    qdrant_edge = qdrant_edge_module()

    try:
        return qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=k, b=b, avg_len=avg_len, language=language))
    except ValueError as exc:
        raise E5VConfigError(
            f"Qdrant's BM25 refuses these parameters ({exc}); use a lowercase language name such as 'english', "
            f"k >= 0, 0 <= b <= 1, avg_len > 0"
        ) from exc


@dataclass(frozen=True)
class QdrantBM25Encoder(_LlamaIndexCallables):
    """Qdrant's own BM25 sparse vectors, computed by ``qdrant_edge.Bm25`` (qdrant-edge-py, already a dependency).

    A pure function of the text, run in this process for every engine (Edge, local mode, server), so all get the
    same vectors. Qdrant's recipe: its ``word`` tokenizer (splits on every non-word character, so ``XJ-4471.b``
    becomes ``xj``, ``4471``, ``b``; no joined token), lowercase, the language's stopwords and Snowball stemmer, a
    token's index is ``abs`` of its signed 32-bit murmur3 hash (seed 0; the hash fastembed's ``Qdrant/bm25`` uses;
    ``Bm25Config`` mirrors Qdrant server's), document weights are BM25's term-frequency saturation with ``(k, b, avg_len)``,
    query weights 1.0 per distinct token. Like ``BM25Encoder`` it needs ``Modifier.IDF`` on the collection.

    Args:
        k: term-frequency saturation (BM25's ``k1``).
        b: length normalization strength in [0, 1].
        avg_len: the fixed average document length in tokens.
        language: Qdrant's language name for stopwords and stemmer (lowercase: ``english``, ``german``, ...).
    """

    k: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0
    language: str = "english"

    def __post_init__(self):
        _qdrant_bm25(self.k, self.b, self.avg_len, self.language)  # validates (E5VConfigError) and warms the cache

    def spec(self) -> dict[str, Any]:
        """What a collection stamp records about this encoder (a different spec means different sparse vectors)."""
        return {"name": "qdrant-bm25", "version": QDRANT_RECIPE_VERSION, "vector": SPARSE_VECTOR_NAME, **asdict(self)}

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        """(indices ascending, BM25 term-frequency weights) of one document."""
        return _sorted(_qdrant_bm25(self.k, self.b, self.avg_len, self.language).embed_document(text))

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        """(indices ascending, 1.0 each) of one query; Qdrant's IDF modifier supplies the term weights."""
        return _sorted(_qdrant_bm25(self.k, self.b, self.avg_len, self.language).embed_query(text))


def _sorted(vector) -> tuple[list[int], list[float]]:
    pairs = sorted(zip(vector.indices, vector.values, strict=True))
    return [i for i, _ in pairs], [float(v) for _, v in pairs]


#: The encoder ``ingest --hybrid`` and ``search --hybrid`` use.
DEFAULT_ENCODER = BM25Encoder()


def sparse_doc_fn(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    """Sparse vectors of document texts with the default encoder (LlamaIndex ``sparse_doc_fn``)."""
    return DEFAULT_ENCODER.doc_fn(texts)


def sparse_query_fn(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    """Sparse vectors of query texts with the default encoder (LlamaIndex ``sparse_query_fn``)."""
    return DEFAULT_ENCODER.query_fn(texts)


def encoder_from_spec(spec: dict[str, Any]) -> BM25Encoder | QdrantBM25Encoder:
    """The encoder a collection stamp's sparse spec (``BM25Encoder.spec()`` or ``QdrantBM25Encoder.spec()``) describes.

    Search, ingest and reingest call this with the spec the collection records, so a collection keeps the encoder it
    was built with whatever ``DEFAULT_ENCODER`` is.

    Raises:
        E5VConfigError: the spec is of another recipe or version than this package computes.
    """
    recipes = {"e5v-bm25": RECIPE_VERSION, "qdrant-bm25": QDRANT_RECIPE_VERSION}
    name, version = spec.get("name"), spec.get("version")
    if recipes.get(name) != version:
        known = ", ".join(f"{n} version {v}" for n, v in recipes.items())
        raise E5VConfigError(
            f"the collection's sparse vectors were made by {name!r} version {version!r}, this package computes "
            f"{known}: re-ingest into a new collection with --hybrid"
        )
    if spec == DEFAULT_ENCODER.spec():
        return DEFAULT_ENCODER
    if name == "qdrant-bm25":
        return QdrantBM25Encoder(
            k=spec.get("k", 1.2), b=spec.get("b", 0.75), avg_len=spec.get("avg_len", 256.0), language=spec["language"]
        )
    return BM25Encoder(
        k1=spec.get("k1", 1.2), b=spec.get("b", 0.75), avg_len=spec.get("avg_len", 256.0), language=spec["language"]
    )


def spec_named(name: str) -> dict[str, Any]:
    """The spec of the encoder ``--sparse-encoder NAME`` selects (default parameters).

    Raises:
        E5VConfigError: an unknown name (the message lists ``SPARSE_ENCODERS``).
    """
    if name == DEFAULT_SPARSE_ENCODER:
        return DEFAULT_ENCODER.spec()
    if name == "qdrant-bm25":
        return QdrantBM25Encoder().spec()
    raise E5VConfigError(f"unknown sparse encoder {name!r}; choose one of: {', '.join(SPARSE_ENCODERS)}")
