"""Server / cluster collection settings: the create-collection request for each option (checked against
qdrant-client's models), search-time rescoring, CLI flags → config, and bulk-load mode restoring HNSW settings on
success and on failure. Local mode ignores HNSW and quantization, so requests are checked as objects; the same
requests go to a live server when QDRANT_URL is set."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from qdrant_client import QdrantClient, models

from e5v_qdrant.cli import build_parser
from e5v_qdrant.config import IngestConfig, StoreConfig, from_namespace
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.store import VECTOR_NAME, QdrantStore, StoreError, bulk_load, collection_create_kwargs, search_params

DIM = 8


def _vectors(**params) -> dict:
    return {VECTOR_NAME: models.VectorParams(size=DIM, distance=models.Distance.COSINE, **params)}


#: The store's HNSW defaults (README, "Choosing the HNSW defaults"), sent to servers with every new collection.
INDEX = {"hnsw_config": models.HnswConfigDiff(m=16, ef_construct=100)}

CASES = [
    ({}, {"vectors_config": _vectors()}),
    (
        {"hnsw_m": 48, "hnsw_ef_construct": 300},
        {"vectors_config": _vectors(), "hnsw_config": models.HnswConfigDiff(m=48, ef_construct=300)},
    ),
    ({"on_disk_vectors": True}, {"vectors_config": _vectors(on_disk=True)}),
    ({"vector_datatype": "float16"}, {"vectors_config": _vectors(datatype=models.Datatype.FLOAT16)}),
    (
        {"quantization": "int8"},
        {
            "vectors_config": _vectors(),
            "quantization_config": models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            ),
        },
    ),
    (
        {"quantization": "turbo4", "on_disk_vectors": True, "vector_datatype": "float16"},
        {
            "vectors_config": _vectors(on_disk=True, datatype=models.Datatype.FLOAT16),
            "quantization_config": models.TurboQuantization(
                turbo=models.TurboQuantQuantizationConfig(bits=models.TurboQuantBitSize.BITS4, always_ram=True)
            ),
        },
    ),
    (
        {"quantization": "turbo4", "quantized_on_disk": True},
        {
            "vectors_config": _vectors(),
            "quantization_config": models.TurboQuantization(
                turbo=models.TurboQuantQuantizationConfig(bits=models.TurboQuantBitSize.BITS4, always_ram=False)
            ),
        },
    ),
    (
        {"quantization": "binary", "on_disk_vectors": True},
        {
            "vectors_config": _vectors(on_disk=True),
            "quantization_config": models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True)),
        },
    ),
    (
        {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2},
        {"vectors_config": _vectors(), "shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2},
    ),
]


@pytest.mark.parametrize(
    "options,expected",
    CASES,
    ids=[
        "default",
        "hnsw",
        "on_disk",
        "float16",
        "int8",
        "turbo4+float16+on_disk",
        "turbo4 memory-mapped",
        "binary+on_disk",
        "shards+replicas",
    ],
)
def test_create_collection_request_for_each_cluster_option(options, expected):
    config = StoreConfig(qdrant_url="http://cluster:6333", **options)
    assert collection_create_kwargs(config, DIM, server=True) == {**INDEX, **expected}
    # the embedded store gets none of the server-only options
    assert collection_create_kwargs(config, DIM, server=False) == {"vectors_config": _vectors()}


def test_search_params_rescore_and_oversampling_only_with_quantization():
    assert search_params(StoreConfig()) is None
    assert search_params(StoreConfig(quantization="int8")) == models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0)
    )
    assert search_params(StoreConfig(quantization="binary", rescore=False, oversampling=3.5)) == models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=False, oversampling=3.5)
    )


class SpyClient:
    """A real in-memory client that records update_collection / query_points requests and tracks the HNSW ``m`` /
    ``payload_m`` a server would hold (local mode ignores HNSW). ``fail_updates`` makes chosen update calls raise."""

    def __init__(
        self,
        m: int = 16,
        payload_m: int | None = None,
        fail_updates: dict[int, Exception] | None = None,
        metadata: dict | None = None,
    ):
        self.inner = QdrantClient(":memory:")
        self.inner.create_collection("c", vectors_config=_vectors(), metadata=metadata)
        self.hnsw = {"m": m, "payload_m": payload_m}
        self.updates: list[models.HnswConfigDiff] = []
        self.queries: list[dict] = []
        self.fail_updates = fail_updates or {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_collection(self, name):
        info = self.inner.get_collection(name)
        info.config.hnsw_config = info.config.hnsw_config.model_copy(update=self.hnsw)
        return info

    def update_collection(self, collection_name, hnsw_config=None, **kwargs):
        call = len(self.updates)
        self.updates.append(hnsw_config)
        if call in self.fail_updates:
            raise self.fail_updates[call]
        for key in ("m", "payload_m"):
            if getattr(hnsw_config, key) is not None:
                self.hnsw[key] = getattr(hnsw_config, key)
        return True

    def query_points(self, **kwargs):
        self.queries.append(kwargs)
        return self.inner.query_points(**kwargs)


def _server_store(client, **options) -> QdrantStore:
    return QdrantStore(StoreConfig(qdrant_url="http://spy:6333", retry_wait=0.001, **options), client=client)


def test_queries_carry_rescoring_params_and_the_ef_the_collection_recorded():
    """A server is sent the search ef its collection recorded at creation (``--hnsw-ef`` then, else the default)
    unless the search names one; a collection that recorded none gets none (the server's own default)."""
    client = SpyClient(metadata={"e5v_qdrant_search": {"hnsw_ef": 300}})
    _server_store(client, quantization="int8", oversampling=3.0).query("c", [0.1] * DIM, top_k=3)
    assert client.queries[-1]["search_params"] == models.SearchParams(
        hnsw_ef=300, quantization=models.QuantizationSearchParams(rescore=True, oversampling=3.0)
    )
    _server_store(client, hnsw_ef=40).query("c", [0.1] * DIM, top_k=3)
    assert client.queries[-1]["search_params"] == models.SearchParams(hnsw_ef=40)
    legacy = SpyClient()
    _server_store(legacy, quantization="int8").query("c", [0.1] * DIM, top_k=3)
    assert legacy.queries[-1]["search_params"].hnsw_ef is None


def test_bulk_load_defers_then_restores_hnsw_on_success():
    client = SpyClient(m=32, payload_m=8)
    store = _server_store(client)
    with bulk_load(store, "c"):
        assert client.hnsw["m"] == 0  # indexing deferred during the block
    assert client.hnsw == {"m": 32, "payload_m": 8}
    assert client.updates == [models.HnswConfigDiff(m=0), models.HnswConfigDiff(m=32, payload_m=8)]


def test_bulk_load_restores_hnsw_when_the_run_fails():
    client = SpyClient(m=24)
    with pytest.raises(RuntimeError, match="ingest died"):
        with bulk_load(_server_store(client), "c"):
            raise RuntimeError("ingest died")
    assert client.hnsw["m"] == 24 and client.updates[-1] == models.HnswConfigDiff(m=24)


def test_bulk_load_restore_retries_transient_errors_and_reports_permanent_ones(caplog):
    client = SpyClient(m=16, fail_updates={1: ConnectionResetError("reset"), 2: TimeoutError("slow")})
    with bulk_load(_server_store(client), "c"):
        pass
    assert client.hnsw["m"] == 16 and len(client.updates) == 4  # defer, 2 failed restores, restore

    bad = 400
    from qdrant_client.http.exceptions import UnexpectedResponse

    refused = UnexpectedResponse(bad, "Bad Request", b"{}", None)
    client = SpyClient(m=16, fail_updates={1: refused})
    with pytest.raises(StoreError, match=r"Re-apply them with .*m=16"):
        with bulk_load(_server_store(client), "c"):
            pass
    client = SpyClient(m=16, fail_updates={1: refused})
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(KeyError),
    ):  # the run's own error wins; the restore failure is logged
        with bulk_load(_server_store(client), "c"):
            raise KeyError("run failed")
    assert "could not restore HNSW" in caplog.text


def test_bulk_load_after_an_unfinished_bulk_run_restores_the_default_m():
    client = SpyClient(m=0)
    with bulk_load(_server_store(client), "c"):
        pass
    assert client.hnsw["m"] == 16  # the store's default (README)
    client = SpyClient(m=0)
    with bulk_load(_server_store(client, hnsw_m=20), "c"):
        pass
    assert client.hnsw["m"] == 20  # or the one the store is configured with


def test_bulk_load_is_a_no_op_on_the_embedded_store():
    client = SpyClient()
    with bulk_load(QdrantStore(StoreConfig(), client=client), "c"):
        pass
    assert client.updates == []


def test_ingest_bulk_load_restores_even_when_writes_fail(encoder, tmp_path):
    """The real pipeline (local engine) with --bulk-load: the upserts fail permanently, HNSW is restored anyway."""
    from e5v_qdrant.ingest import ingest

    (tmp_path / "a.txt").write_text("A cat sits on the warm windowsill and watches the birds outside.")
    client = SpyClient(m=20)

    def refuse(*args, **kwargs):
        raise ValueError("injected: disk full")

    client.upsert = refuse
    store = _server_store(client)
    config = IngestConfig(collection="docs", paths=[str(tmp_path)], bulk_load=True)
    with pytest.raises(StoreError, match="disk full"):
        ingest(config, encoder, store, progress=False)
    assert client.updates[0] == models.HnswConfigDiff(m=0) and client.hnsw["m"] == 20


def test_cli_flags_build_the_cluster_and_ray_configs():
    args = build_parser().parse_args(
        [
            "ingest", "docs/", "--collection", "docs", "--qdrant-url", "http://q:6333", "--prefer-grpc",
            "--timeout", "120", "--on-disk-vectors", "--vector-datatype", "float16", "--quantization", "binary",
            "--shard-number", "4", "--replication-factor", "2",
            "--write-consistency-factor", "2", "--api-key-env", "MY_KEY", "--engine", "ray", "--ray-address", "auto",
            "--replicas", "8", "--gpus-per-replica", "1", "--write-concurrency", "4", "--bulk-load",
        ]
    )  # fmt: skip
    store = from_namespace(StoreConfig, args)
    assert (store.qdrant_url, store.prefer_grpc, store.timeout, store.on_disk_vectors, store.vector_datatype) == (
        "http://q:6333", True, 120.0, True, "float16",
    )  # fmt: skip
    assert store.quantization == "binary"
    # search-time options belong to the commands that search
    searched = build_parser().parse_args(["search", "q", "--collection", "docs", "--no-rescore", "--oversampling", "3"])
    assert (from_namespace(StoreConfig, searched).rescore, from_namespace(StoreConfig, searched).oversampling) == (
        False,
        3.0,
    )
    assert (store.shard_number, store.replication_factor, store.write_consistency_factor) == (4, 2, 2)
    ingest = from_namespace(IngestConfig, args, paths=args.paths)
    assert (ingest.engine, ingest.ray_address, ingest.replicas, ingest.gpus_per_replica, ingest.write_concurrency) == (
        "ray", "auto", 8, 1.0, 4,
    )  # fmt: skip
    assert ingest.bulk_load is True


def test_api_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.setenv("MY_KEY", "s3cret")
    config = StoreConfig(qdrant_url="http://q:6333", api_key_env="MY_KEY")
    assert config.api_key == "s3cret" and "s3cret" not in repr(config)
    monkeypatch.delenv("MY_KEY")
    assert config.api_key is None


@pytest.mark.parametrize(
    "options,message",
    [
        ({"replication_factor": 1, "write_consistency_factor": 2}, "cannot exceed replication_factor"),
        ({"write_consistency_factor": 0}, "write_consistency_factor must be >= 1"),
        ({"oversampling": 0.5}, "oversampling must be >= 1"),
        ({"hnsw_ef": 0}, r"hnsw_ef \(--hnsw-ef\): must be >= 1, got 0"),
        ({"hnsw_m": -1}, r"hnsw_m \(--hnsw-m\): must be >= 1"),
        ({"write_batch_size": 0}, r"write_batch_size \(--write-batch-size\): must be >= 1"),
        ({"quantization": "pq"}, r"quantization .pq. is not one of none, int8, turbo4, binary \(--quantization\)"),
    ],
)
def test_invalid_cluster_options_are_refused(options, message):
    with pytest.raises(E5VConfigError, match=message):
        StoreConfig(**options)


# ---------------------------------------------------------------- live server (only with QDRANT_URL)
@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server: set QDRANT_URL")
def test_live_server_applies_the_options_and_bulk_load_restores():
    config = StoreConfig(
        qdrant_url=os.environ["QDRANT_URL"], on_disk_vectors=True, vector_datatype="float16", quantization="int8",
        shard_number=2, replication_factor=1, write_consistency_factor=1,
    )  # fmt: skip
    name = f"e5v-test-{uuid.uuid4().hex[:8]}"
    with QdrantStore(config) as store:
        store.client.create_collection(name, **collection_create_kwargs(config, DIM, server=True))
        try:
            info = store.client.get_collection(name)
            params = info.config.params
            vector = params.vectors[VECTOR_NAME]
            assert (vector.size, vector.on_disk, vector.datatype) == (DIM, True, models.Datatype.FLOAT16)
            assert (params.shard_number, params.replication_factor, params.write_consistency_factor) == (2, 1, 1)
            assert isinstance(info.config.quantization_config, models.ScalarQuantization)
            before = info.config.hnsw_config.m
            with bulk_load(store, name):
                assert store.client.get_collection(name).config.hnsw_config.m == 0
            assert store.client.get_collection(name).config.hnsw_config.m == before
        finally:
            store.client.delete_collection(name)
