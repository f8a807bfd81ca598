"""The offline BM25 sparse encoder: hand-computed weights, stable documented hashing, LlamaIndex hybrid retrieval."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.sparse import (
    SPARSE_VECTOR_NAME,
    BM25Encoder,
    QdrantBM25Encoder,
    encoder_from_spec,
    sparse_doc_fn,
    sparse_query_fn,
    token_index,
)


def blake_u32(token: str) -> int:
    """The documented hash, computed here independently of the package."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "big")


def murmur3_abs(token: str) -> int:
    """``abs`` of the signed MurmurHash3 x86 32-bit hash (seed 0) of the token's UTF-8, written out from the spec."""
    data, h, mask = token.encode("utf-8"), 0, 0xFFFFFFFF

    def mix(k):
        k = (k * 0xCC9E2D51) & mask
        return (((k << 15) | (k >> 17)) & mask) * 0x1B873593 & mask

    blocks = len(data) // 4
    for i in range(blocks):
        h ^= mix(int.from_bytes(data[4 * i : 4 * i + 4], "little"))
        h = ((((h << 13) | (h >> 19)) & mask) * 5 + 0xE6546B64) & mask
    if tail := data[4 * blocks :]:
        h ^= mix(int.from_bytes(tail, "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return abs(h - (1 << 32) if h >= 1 << 31 else h)


def test_murmur3_reference_vectors():
    # published MurmurHash3_x86_32 values (seed 0): "" -> 0, "hello" -> 0x248bfa47, "The quick brown fox jumps over
    # the lazy dog" -> 0x2e4ff723; all three are below 2**31, so abs() keeps them
    assert murmur3_abs("") == 0 and murmur3_abs("hello") == 0x248BFA47
    assert murmur3_abs("The quick brown fox jumps over the lazy dog") == 0x2E4FF723


def test_tokens_lowercase_stem_stopwords_and_joined_codes():
    enc = BM25Encoder()
    assert enc.tokens("The Pumps were RUNNING") == ["pump", "run"]
    # a joined code is kept whole (unstemmed) and split into its parts
    assert enc.tokens("Part XJ-4471.b") == ["part", "xj-4471.b", "xj", "4471", "b"]
    # Unicode: NFKC (full-width digits) + casefold
    assert enc.tokens("ＡＢＣ１２３ Straße") == ["abc123", "strass"]
    assert enc.tokens("") == [] and enc.tokens("the of and") == []


def test_hand_computed_bm25_weights():
    # "Pumps pump the valve": tokens pump, pump, valv (stopword "the" dropped) -> dl = 3
    k1, b, avgdl, dl = 1.2, 0.75, 256.0, 3
    norm = k1 * (1 - b + b * dl / avgdl)
    expected = {blake_u32("pump"): 2 * (k1 + 1) / (2 + norm), blake_u32("valv"): 1 * (k1 + 1) / (1 + norm)}
    indices, values = sparse_doc_fn(["Pumps pump the valve"])
    assert dict(zip(indices[0], values[0], strict=True)) == pytest.approx(expected, rel=1e-12)
    assert indices[0] == sorted(indices[0])
    # other parameters change the weights as BM25 says: b = 0 drops length normalization
    enc = BM25Encoder(k1=2.0, b=0.0)
    idx, val = enc.encode_document("pump pump pump valve")
    assert dict(zip(idx, val, strict=True)) == pytest.approx(
        {blake_u32("pump"): 3 * 3.0 / (3 + 2.0), blake_u32("valv"): 1 * 3.0 / (1 + 2.0)}, rel=1e-12
    )
    # queries: each distinct term weighs 1 (IDF comes from Qdrant)
    qi, qv = sparse_query_fn(["pump pumps valve"])
    assert qi[0] == sorted([blake_u32("pump"), blake_u32("valv")]) and qv[0] == [1.0, 1.0]


def test_hash_is_stable_across_processes_and_matches_literals():
    # literals written once from the documented hash; they must never change (stored collections depend on them)
    literals = {"pump": 746596696, "valv": 1701068117, "xj-4471": 3473044255, "xj": 1821224935, "4471": 2537889452}
    assert {t: token_index(t) for t in literals} == literals
    assert {t: blake_u32(t) for t in literals} == literals
    code = "from e5v_qdrant.sparse import sparse_doc_fn; print(sparse_doc_fn(['XJ-4471 pump valve'])[0][0])"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1 and eval(outs.pop()) == sorted(literals.values())


def test_bad_parameters_are_refused():
    with pytest.raises(E5VConfigError, match="language"):
        BM25Encoder(language="klingon")
    with pytest.raises(E5VConfigError, match="0 <= b <= 1"):
        BM25Encoder(b=1.5)


def test_qdrant_bm25_is_qdrants_recipe():
    """Qdrant's own BM25 (qdrant-edge-py): murmur3 indices, stemmed, stopwords dropped, codes split into parts."""
    enc = QdrantBM25Encoder()
    # "Pumps pump the valve": pump, pump, valv -> dl = 3, the same BM25 saturation as ours
    k, b, avgdl, dl = 1.2, 0.75, 256.0, 3
    norm = k * (1 - b + b * dl / avgdl)
    expected = {murmur3_abs("pump"): 2 * (k + 1) / (2 + norm), murmur3_abs("valv"): 1 * (k + 1) / (1 + norm)}
    indices, values = enc.doc_fn(["Pumps pump the valve"])
    assert dict(zip(indices[0], values[0], strict=True)) == pytest.approx(expected, rel=1e-6)  # float32 in Rust
    assert indices[0] == sorted(indices[0])
    # a joined code is only split (no whole token): the difference the README's measurements show on codes
    qi, qv = enc.encode_query("Part XJ-4471.b part")
    assert qi == sorted(murmur3_abs(t) for t in ("part", "xj", "4471", "b")) and qv == [1.0] * 4
    assert enc.encode_query("the of and") == ([], [])
    with pytest.raises(E5VConfigError, match="english"):
        QdrantBM25Encoder(language="klingon")


def test_stamp_spec_selects_the_recorded_encoder():
    """A collection's stamp names its sparse encoder; search/ingest rebuild exactly that one from it."""
    ours, qdrant = BM25Encoder(), QdrantBM25Encoder(k=1.5)
    assert ours.spec()["name"] != qdrant.spec()["name"]
    assert encoder_from_spec(qdrant.spec()) == qdrant
    assert encoder_from_spec(ours.spec()) == ours
    assert encoder_from_spec(qdrant.spec()).encode_query("valve") == ([murmur3_abs("valv")], [1.0])
    assert encoder_from_spec(ours.spec()).encode_query("valve") == ([blake_u32("valv")], [1.0])
    with pytest.raises(E5VConfigError, match="re-ingest"):
        encoder_from_spec({**qdrant.spec(), "version": 99})


def _notes() -> list[str]:
    topics = ["pump", "valve", "boiler", "filter", "gasket", "sensor", "relay", "motor"]
    notes = [
        f"Maintenance note {i}: the {topics[i % 8]} in hall {i % 5} was inspected and the valve pressure logged."
        for i in range(40)
    ]
    notes[23] = "Maintenance note 23: ordered replacement part QZ-7781-K for the valve in hall 3."
    return notes


@pytest.mark.parametrize("encoder", [BM25Encoder(), QdrantBM25Encoder()], ids=["ours", "qdrant"])
def test_llamaindex_hybrid_vector_store_finds_rare_code(encoder):
    """A real LlamaIndex ``QdrantVectorStore(enable_hybrid=True)`` with either encoder, Qdrant local mode + IDF."""
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    rng = np.random.default_rng(0)
    nodes = [TextNode(text=t, embedding=rng.standard_normal(8).tolist()) for t in _notes()]
    client = QdrantClient(":memory:")
    store = QdrantVectorStore(
        client=client,
        collection_name="notes",
        enable_hybrid=True,
        sparse_doc_fn=encoder.doc_fn,
        sparse_query_fn=encoder.query_fn,
        sparse_config=models.SparseVectorParams(modifier=models.Modifier.IDF),
    )
    store.add(nodes)
    assert SPARSE_VECTOR_NAME in client.get_collection("notes").config.params.sparse_vectors
    for mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.HYBRID):
        result = store.query(
            VectorStoreQuery(
                query_str="valve part QZ-7781-K",
                query_embedding=rng.standard_normal(8).tolist(),
                similarity_top_k=1,
                mode=mode,
            )
        )
        assert [n.text for n in result.nodes] == [_notes()[23]], mode
