"""store.py: explicit collections behind aliases, fingerprint stamps, mismatch refusal, retries, server options."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
from helpers import FlakyClient
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from e5v_qdrant.config import EncoderConfig, StoreConfig
from e5v_qdrant.store import (
    VECTOR_NAME,
    CollectionMismatchError,
    QdrantStore,
    StoreError,
    collection_create_kwargs,
    is_transient,
    physical_name,
    point_id,
)


class FakeEncoder:
    """Stands in for E5VEncoder where only dim / fingerprint / config matter (no model needed)."""

    def __init__(self, dim: int = 8, fid: str = "f00d", model: str = "fake-model"):
        self.dim = dim
        self.fingerprint = {"model": model, "revision": None, "adapter": None, "prompts": "p", "dim": dim, "id": fid}
        self.config = EncoderConfig(model=model)  # every option at its default, none loaded


def _store(client=None, **options) -> QdrantStore:
    return QdrantStore(StoreConfig(retry_wait=0.001, **options), client=client or QdrantClient(":memory:"))


def _points(n: int, dim: int = 8):
    rng = np.random.default_rng(0)
    return [
        models.PointStruct(
            id=point_id(f"s{i % 3}", i, "h"),
            vector={VECTOR_NAME: rng.normal(size=dim).tolist()},
            payload={"source": f"s{i % 3}"},
        )
        for i in range(n)
    ]


def test_ensure_collection_creates_stamped_physical_collection_behind_alias():
    store = _store()
    enc = FakeEncoder(dim=8, fid="abc123")
    physical = store.ensure_collection("docs", enc)
    assert physical == physical_name("docs", "abc123") == "docs-e5v-abc123"
    assert store.aliases() == {"docs": physical}
    info = store.client.get_collection("docs")  # readable through the alias
    params = info.config.params.vectors[VECTOR_NAME]
    assert params.size == 8 and params.distance == models.Distance.COSINE
    stamp = store.stamp(physical)
    assert stamp.fingerprint == enc.fingerprint and stamp.encoder["model"] == "fake-model" and stamp.alias == "docs"
    # idempotent
    assert store.ensure_collection("docs", enc) == physical
    assert [c.name for c in store.client.get_collections().collections] == [physical]


def test_other_model_or_dimension_is_refused_with_the_remedy():
    store = _store()
    store.ensure_collection("docs", FakeEncoder(dim=8, fid="aaa"))
    with pytest.raises(CollectionMismatchError) as err:
        store.ensure_collection("docs", FakeEncoder(dim=8, fid="bbb", model="other"))
    assert "--collection" in str(err.value) and "reingest" in str(err.value) and "other" in str(err.value)
    with pytest.raises(CollectionMismatchError, match=r"holds 8-d vectors .* makes 16-d"):
        store.ensure_collection("docs", FakeEncoder(dim=16, fid="aaa"))


def test_unstamped_plain_collection_is_refused():
    store = _store()
    store.client.create_collection(
        "plain", vectors_config={VECTOR_NAME: models.VectorParams(size=8, distance="Cosine")}
    )
    with pytest.raises(CollectionMismatchError, match="not created by e5v-qdrant"):
        store.ensure_collection("plain", FakeEncoder())


def test_run_killed_between_create_and_alias_reuses_the_physical_collection():
    store = _store()
    enc = FakeEncoder(fid="k1")
    store.create_physical(physical_name("docs", "k1"), enc, alias="docs")  # the alias step never happened
    assert store.ensure_collection("docs", enc) == "docs-e5v-k1"
    assert store.aliases() == {"docs": "docs-e5v-k1"}


def test_upsert_batches_scroll_source_index_delete_count():
    store = _store(write_batch_size=3)
    store.ensure_collection("c", FakeEncoder())
    assert store.upsert("c", _points(10)) == 10
    assert store.count("c") == 10
    index = store.source_index("c")
    assert {k: len(v) for k, v in index.items()} == {"s0": 4, "s1": 3, "s2": 3}
    store.delete("c", sorted(index["s0"]))
    assert store.count("c") == 6 and "s0" not in store.source_index("c")


def test_transient_upsert_errors_are_retried_and_logged(caplog):
    inner = QdrantClient(":memory:")
    flaky = FlakyClient(inner, "upsert", fail=3)
    store = _store(client=flaky, retries=5)
    store.ensure_collection("c", FakeEncoder())
    with caplog.at_level(logging.WARNING, logger="e5v_qdrant.store"):
        store.upsert("c", _points(4))
    assert inner.count("c").count == 4
    assert flaky.calls == 4
    retries = [r for r in caplog.records if "retrying upserting" in r.getMessage()]
    assert len(retries) == 3 and "ConnectionResetError" in retries[0].getMessage()


def test_transient_errors_outlasting_retries_raise_store_error():
    store = _store(client=FlakyClient(QdrantClient(":memory:"), "upsert", fail=99), retries=3)
    store.ensure_collection("c", FakeEncoder())
    with pytest.raises(StoreError, match="gave up after retries"):
        store.upsert("c", _points(2))
    assert store.client.calls == 3


def test_permanent_error_fails_fast_without_retry():
    bad = UnexpectedResponse(400, "Bad Request", b'{"status":{"error":"Wrong input: vector dimension error"}}', None)
    flaky = FlakyClient(QdrantClient(":memory:"), "upsert", fail=99, exc=bad)
    store = QdrantStore(StoreConfig(retries=6, retry_wait=5.0), client=flaky)  # a retry would sleep 5 s
    store.ensure_collection("c", FakeEncoder())
    start = time.perf_counter()
    with pytest.raises(StoreError, match="HTTP 400 Bad Request.*vector dimension error"):
        store.upsert("c", _points(2))
    assert flaky.calls == 1 and time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError("reset"), True),
        (TimeoutError("timed out"), True),
        (ResponseHandlingException(OSError("boom")), True),
        (UnexpectedResponse(503, "Service Unavailable", b"", None), True),
        (UnexpectedResponse(429, "Too Many Requests", b"", None), True),
        (UnexpectedResponse(400, "Bad Request", b"", None), False),
        (UnexpectedResponse(404, "Not Found", b"", None), False),
        (RuntimeError("Storage folder x is already accessed by another instance of Qdrant client."), True),
        (ValueError("Collection c not found"), False),
    ],
)
def test_transient_classification(exc, transient):
    assert is_transient(exc) is transient


def test_locked_embedded_folder_is_retried_then_reported(tmp_path):
    holder = QdrantClient(path=str(tmp_path / "qd"))
    try:
        start = time.perf_counter()
        with pytest.raises(StoreError, match="already accessed.*Another process holds this folder"):
            QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"), retries=3, retry_wait=0.01))
        assert time.perf_counter() - start < 5
    finally:
        holder.close()
    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd")))  # released: opens
    store.close()


def test_server_options_build_the_documented_collection_spec():
    cfg = StoreConfig(
        qdrant_url="http://qdrant:6333",
        on_disk_vectors=True,
        vector_datatype="float16",
        quantization="int8",
        shard_number=3,
        replication_factor=2,
    )
    kw = collection_create_kwargs(cfg, 4096, server=True)
    params = kw["vectors_config"][VECTOR_NAME]
    assert (params.size, params.distance, params.on_disk, params.datatype) == (
        4096,
        models.Distance.COSINE,
        True,
        models.Datatype.FLOAT16,
    )
    assert kw["quantization_config"].scalar.type == models.ScalarType.INT8
    assert (kw["shard_number"], kw["replication_factor"]) == (3, 2)
    # the embedded store gets only what it supports
    local = collection_create_kwargs(cfg, 64, server=False)
    assert set(local) == {"vectors_config"} and local["vectors_config"][VECTOR_NAME].datatype is None


def test_store_config_validation():
    from e5v_qdrant.errors import E5VConfigError

    for bad in (
        {"write_batch_size": 0},
        {"retries": 0},
        {"vector_datatype": "int4"},
        {"quantization": "pq"},
        {"shard_number": 0},
        {"qdrant_path": "x", "qdrant_url": "http://h"},
    ):
        with pytest.raises(E5VConfigError):
            StoreConfig(**bad)
    assert EncoderConfig().model  # sanity: the shared config module imports


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server at QDRANT_URL")
def test_server_collection_with_quantization_and_float16():  # pragma: no cover - needs a server
    import uuid

    cfg = StoreConfig(
        qdrant_url=os.environ["QDRANT_URL"], on_disk_vectors=True, vector_datatype="float16", quantization="int8"
    )
    store = QdrantStore(cfg)
    name = f"e5v-test-{uuid.uuid4().hex[:8]}"
    enc = FakeEncoder(fid=uuid.uuid4().hex[:8])
    physical = store.ensure_collection(name, enc)
    try:
        info = store.client.get_collection(physical)
        assert info.config.params.vectors[VECTOR_NAME].datatype == models.Datatype.FLOAT16
        assert info.config.quantization_config is not None
        assert {"modality", "source"} <= set(info.payload_schema)
        store.upsert(name, _points(5))
        assert store.count(name) == 5
    finally:
        store.client.delete_collection(physical)
        store.close()


@pytest.mark.parametrize("embedded", ["local", "edge"])
def test_resolve_and_engine_are_the_same_contract_on_every_embedded_engine(tmp_path, embedded):
    """``resolve`` answers alias -> physical, plain name -> itself and unknown -> None on local mode and Edge alike
    (Edge's client used to raise), and the engine is recorded when the store is opened."""
    from e5v_qdrant.store import EdgeClient

    config = StoreConfig(qdrant_path=str(tmp_path / "qd"), embedded=embedded, retry_wait=0.001)
    with QdrantStore(config) as store:
        assert store.engine == embedded and store.is_server is False
        physical = store.ensure_collection("docs", FakeEncoder(dim=8, fid="abc"))
        assert (store.resolve("docs"), store.resolve(physical), store.resolve("nope")) == (physical, physical, None)
        if embedded == "edge":
            assert isinstance(store.client, EdgeClient)
            assert (store.client.resolve("docs"), store.client.resolve("nope")) == (physical, None)


def test_the_store_reads_back_the_search_ef_a_collection_recorded(tmp_path):
    """The ef a collection was created for (``--hnsw-ef`` at ingest, else the default) is what later searches of that
    collection get when they name none: Edge applies it itself, a server is sent it (``recorded_ef``). Collections
    made before it was recorded answer ``None`` (the engine's own default)."""
    from e5v_qdrant.store import HNSW_EF

    folder = str(tmp_path / "qd")
    with QdrantStore(StoreConfig(qdrant_path=folder, embedded="edge", hnsw_ef=77)) as store:
        store.ensure_collection("docs", FakeEncoder(dim=8, fid="abc"))
        store.create_plain("scratch", 8, storage_options=True)
    with QdrantStore(StoreConfig(qdrant_path=folder, embedded="edge")) as store:  # a search naming no ef
        assert (store.recorded_ef("docs"), store.recorded_ef("scratch")) == (77, 77)
        store.ensure_collection("fresh", FakeEncoder(dim=8, fid="def"))
        assert store.recorded_ef("fresh") == HNSW_EF
    from qdrant_client import QdrantClient as LocalModeClient  # not the Edge swap of this module's engine runs

    old = LocalModeClient(":memory:")
    old.create_collection("legacy", vectors_config={VECTOR_NAME: models.VectorParams(size=8, distance="Cosine")})
    assert _store(old).recorded_ef("legacy") is None


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server at QDRANT_URL")
def test_server_searches_get_the_ef_their_collection_recorded():  # pragma: no cover - needs a server
    """Two server collections, one sparse graph (m=4, ef_construct=8), recorded ef 10 and 3000: the same search
    (no ``--hnsw-ef``) through ``QdrantStore.query`` misses most of numpy's exact top 10 in the first and finds them in
    the second (measured on Edge with the same data: recall 0.15 vs 0.99)."""
    import uuid

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = rng.normal(size=(30, 64)).astype(np.float32)
    url, recall = os.environ["QDRANT_URL"], {}
    for ef in (10, 3000):
        name = f"e5v-test-ef{ef}-{uuid.uuid4().hex[:8]}"
        make = QdrantStore(StoreConfig(qdrant_url=url, hnsw_m=4, hnsw_ef_construct=8, hnsw_ef=ef))
        make.create_plain(name, 64, storage_options=True)
        make.client.update_collection(name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1))
        points = [models.PointStruct(id=i, vector={VECTOR_NAME: v.tolist()}) for i, v in enumerate(x)]
        make.upsert(name, points)
        make.close()
        store = QdrantStore(StoreConfig(qdrant_url=url))  # names no ef
        try:
            for _ in range(600):
                if (store.client.get_collection(name).indexed_vectors_count or 0) >= len(x):
                    break
                time.sleep(0.1)
            hits = sum(
                len({p.id for p in store.query(name, q, top_k=10)} & set(np.argsort(-(x @ q))[:10].tolist()))
                for q in queries
            )
            recall[ef] = hits / (10 * len(queries))
        finally:
            store.client.delete_collection(name)
            store.close()
    assert recall[3000] > 0.95 and recall[10] < 0.5
