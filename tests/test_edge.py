"""Qdrant Edge engine specifics: atomic alias switch under crashes, one process per folder, engine detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from e5v_qdrant.config import EncoderConfig, StoreConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.store import (
    MANIFEST,
    EdgeClient,
    QdrantStore,
    StoreError,
    bulk_load,
    detect_engine,
    read_store_manifest,
)

DIM = 16


def _encoder(fid):
    return types.SimpleNamespace(dim=DIM, fingerprint={"id": fid, "model": "m"}, config=EncoderConfig(model="m"))


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        models.PointStruct(id=i, vector={"text-dense": rng.normal(size=DIM).tolist()}, payload={"source": f"s{i}"})
        for i in range(n)
    ]


_SWITCH = """
import os, sys
from e5v_qdrant.config import EncoderConfig, StoreConfig
from e5v_qdrant.store import QdrantStore
crash_at = int(sys.argv[2])
calls = {"n": 0}
def step(real):
    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            os._exit(9)  # a crash: no cleanup, no flush
        return real(*args, **kwargs)
    return wrapped
with QdrantStore(StoreConfig(qdrant_path=sys.argv[1])) as store:
    os.fsync, os.replace = step(os.fsync), step(os.replace)  # the steps of one manifest write
    store.point_alias("docs", "docs-e5v-new")
print("done")
"""


def test_alias_switch_is_atomic_under_a_crash_between_every_step(tmp_path):
    store_dir = str(tmp_path / "qd")
    with QdrantStore(StoreConfig(qdrant_path=store_dir)) as store:
        store.ensure_collection("docs", _encoder("old"))  # creates docs-e5v-old and points "docs" at it
        store.create_physical("docs-e5v-new", _encoder("new"), alias="docs")  # what reingest builds
        for physical in ("docs-e5v-old", "docs-e5v-new"):
            store.upsert(physical, _points(5))
    # steps of a manifest write: fsync(temp file), replace, fsync(folder); crash before each, and after the last
    outcomes = []
    for crash_at in (1, 2, 3, 4):
        code = subprocess.run(
            [sys.executable, "-c", _SWITCH, store_dir, str(crash_at)], capture_output=True, text=True, timeout=120
        )
        with QdrantStore(StoreConfig(qdrant_path=store_dir)) as store:
            target = store.aliases()["docs"]
            assert target in ("docs-e5v-old", "docs-e5v-new")
            assert store.count("docs") == 5 and store.stamp(target).fingerprint["id"] == target.rsplit("-", 1)[1]
            outcomes.append((crash_at, code.returncode, target))
            store.point_alias("docs", "docs-e5v-old")  # reset for the next crash point
    assert [o[2] for o in outcomes] == ["docs-e5v-old", "docs-e5v-old", "docs-e5v-new", "docs-e5v-new"], outcomes
    assert [o[1] for o in outcomes[:3]] == [9, 9, 9] and outcomes[3][1] in (0, 9), code.stderr[-2000:]
    manifest = json.loads(open(os.path.join(store_dir, MANIFEST)).read())
    assert set(manifest["collections"]) == {"docs-e5v-old", "docs-e5v-new"}


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    store_dir = str(tmp_path / "qd")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from e5v_qdrant.store import EdgeClient
            c = EdgeClient({store_dir!r}); print("ready", flush=True); time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=rf"already accessed .*\(pid {holder.pid}\).*Another process holds"):
            QdrantStore(StoreConfig(qdrant_path=store_dir, retries=2, retry_wait=0.01))
    finally:
        holder.kill()
        holder.wait(10)
    QdrantStore(StoreConfig(qdrant_path=store_dir)).close()  # the kernel released the dead holder's lock


def test_engine_is_detected_and_never_converted(tmp_path):
    local_dir, edge_dir = str(tmp_path / "local"), str(tmp_path / "edge")
    QdrantClient(path=local_dir).close()
    assert detect_engine(local_dir) == "local" and detect_engine(edge_dir) is None
    with QdrantStore(StoreConfig(qdrant_path=edge_dir)) as store:  # a new folder is Edge
        assert store.engine == "edge"
    with QdrantStore(StoreConfig(qdrant_path=local_dir)) as store:  # an existing local folder stays local
        assert store.engine == "local"
    with pytest.raises(E5VConfigError, match="never converted"):
        QdrantStore(StoreConfig(qdrant_path=local_dir, embedded="edge"))
    with pytest.raises(E5VConfigError, match="local-mode store"):
        EdgeClient(local_dir)
    assert detect_engine(local_dir) == "local" and detect_engine(edge_dir) == "edge"


def test_edge_applies_storage_options_and_bulk_load_defers_then_builds(tmp_path):
    config = StoreConfig(
        qdrant_path=str(tmp_path / "qd"),
        vector_datatype="float16",
        on_disk_vectors=True,
        quantization="int8",
        hnsw_m=24,
        hnsw_ef_construct=64,
        hnsw_ef=77,
    )
    with QdrantStore(config) as store:
        physical = store.ensure_collection("docs", _encoder("f"))
        info = store.client.get_collection(physical)
        vector = info.config.params.vectors["text-dense"]
        assert (vector.datatype, vector.on_disk) == (models.Datatype.FLOAT16, True)
        assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (24, 64)
        assert info.config.metadata["e5v_qdrant_search"] == {"hnsw_ef": 77}
        assert isinstance(info.config.quantization_config, models.ScalarQuantization)
        assert set(info.payload_schema) == {"modality", "source", "folders", "page"}  # the search filters' fields
        points = _points(50)
        with bulk_load(store, "docs"):
            assert store.client.get_collection(physical).config.hnsw_config.m == 0
            store.upsert("docs", points)
        assert store.client.get_collection(physical).config.hnsw_config.m == 24  # restored
        # float16 + int8 with rescoring still ranks a stored vector first for itself
        for p in points[:10]:
            assert store.query("docs", p.vector["text-dense"], top_k=1)[0].id == p.id


def test_bulk_load_on_edge_builds_a_graph_per_segment_as_a_plain_write_does(tmp_path, monkeypatch):
    """While HNSW m is 0 the optimizer still seals and merges segments, without graphs (searches scan them exactly);
    restoring m builds one graph per segment: the segments of a plain write, not one graph over everything (which
    cost recall and twice the vectors in memory at 250k: README, "Bulk load"). A sparse graph (m=4, ef_construct=8)
    searched with ef 10 tells graphs from exact scans: it misses neighbours numpy finds."""
    from e5v_qdrant.store.edge import client as edge_client
    from e5v_qdrant.store.edge import convert as edge_convert

    monkeypatch.setattr(edge_convert, "INDEXING_THRESHOLD_KB", 100)
    monkeypatch.setattr(edge_convert, "MAX_SEGMENT_SIZE_KB", 1000)  # ~3,900 of these 64-d points
    monkeypatch.setattr(edge_client, "INDEX_EVERY_POINTS", 2000)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = rng.normal(size=(40, 64)).astype(np.float32)
    truth = [set(np.argsort(-(x @ q))[:10].tolist()) for q in queries]

    def recall(client):
        got = [client.query_points("c", query=q.tolist(), using="text-dense", limit=10).points for q in queries]
        return sum(len({p.id for p in g} & t) for g, t in zip(got, truth, strict=True)) / (10 * len(queries))

    segments, found = {}, {}
    for mode in ("plain", "bulk"):
        client = EdgeClient(str(tmp_path / mode))
        client.create_collection(
            "c",
            {"text-dense": models.VectorParams(size=64, distance="Cosine")},
            hnsw_config=models.HnswConfigDiff(m=4, ef_construct=8, full_scan_threshold=10),
            metadata={"e5v_qdrant_search": {"hnsw_ef": 10}},
        )
        if mode == "bulk":
            client.update_collection("c", hnsw_config=models.HnswConfigDiff(m=0))
        for s in range(0, len(x), 1000):
            client.upsert(
                "c",
                [
                    models.PointStruct(id=s + i, vector={"text-dense": v.tolist()})
                    for i, v in enumerate(x[s : s + 1000])
                ],
            )
        if mode == "bulk":
            found["deferred"] = recall(client)
            segments["deferred"] = client.get_collection("c").segments_count
            client.update_collection("c", hnsw_config=models.HnswConfigDiff(m=4))
        info = client.get_collection("c")
        assert info.points_count == len(x)
        segments[mode], found[mode] = info.segments_count, recall(client)
        client.close()
    assert found["deferred"] == 1.0  # no graphs yet: every segment scanned exactly
    assert segments["bulk"] == segments["plain"] > 2
    assert found["bulk"] < 0.9 and abs(found["bulk"] - found["plain"]) < 0.1  # graphs, of the same segments


@pytest.mark.parametrize("quantized_on_disk", [False, True])
def test_edge_turbo4_quantized_collection_is_recorded_reopened_and_rescored(tmp_path, quantized_on_disk):
    """TurboQuant 4-bit codes (qdrant-edge-py's TurboQuantQuantizationConfig), in RAM or left memory-mapped
    (``--quantized-on-disk``): the collection reports them after a reopen, and searches with rescoring from float16
    originals on disk return numpy's exact top-5."""
    config = StoreConfig(
        qdrant_path=str(tmp_path / "qd"),
        vector_datatype="float16",
        on_disk_vectors=True,
        quantization="turbo4",
        quantized_on_disk=quantized_on_disk,
    )
    points = _points(200)
    with QdrantStore(config) as store:
        store.ensure_collection("docs", _encoder("f"))
        store.upsert("docs", points)
    matrix = np.array([p.vector["text-dense"] for p in points], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    with QdrantStore(config) as store:
        q = store.client.get_collection(store.resolve("docs")).config.quantization_config
        assert q == models.TurboQuantization(
            turbo=models.TurboQuantQuantizationConfig(
                bits=models.TurboQuantBitSize.BITS4, always_ram=not quantized_on_disk
            )
        )
        for p in points[:10]:
            expected = [str(points[i].id) for i in np.argsort(-(matrix @ matrix[points.index(p)]))[:5]]
            assert [str(h.id) for h in store.query("docs", p.vector["text-dense"], top_k=5)] == expected


def test_orphan_shard_of_a_crash_between_create_and_record_is_removed(tmp_path):
    client = EdgeClient(str(tmp_path / "qd"))
    client.create_collection("a", {"text-dense": models.VectorParams(size=DIM, distance="Cosine")})
    client.close()
    orphan = tmp_path / "qd" / "collections" / "deadbeef"
    orphan.mkdir()
    (orphan / "x").write_text("left by a crash")
    client = EdgeClient(str(tmp_path / "qd"))
    assert not orphan.exists() and client.collection_exists("a")
    client.close()


def test_the_write_ahead_log_stays_bounded_while_a_large_collection_is_written(tmp_path):
    """Edge truncates its memory-mapped write-ahead log only up to what a flush persisted. Without periodic flushes
    the log grows with everything written (at 100k E5-V points, 2 GB mapped and resident: benchmarks/store.py)."""
    dim, n, batch = 1024, 64_000, 1_000
    client = EdgeClient(str(tmp_path / "qd"), defer_indexing=True)  # no optimizer runs (they flush too)
    client.create_collection("big", {"text-dense": models.VectorParams(size=dim, distance="Cosine")})
    rng = np.random.default_rng(0)
    for start in range(0, n, batch):
        vectors = rng.random((batch, dim), dtype=np.float32)
        client.upsert(
            "big", [models.PointStruct(id=start + i, vector={"text-dense": v.tolist()}) for i, v in enumerate(vectors)]
        )
    wal = (
        tmp_path / "qd" / "collections" / read_store_manifest(str(tmp_path / "qd"))["collections"]["big"]["dir"] / "wal"
    )
    logged = sum(f.stat().st_size for f in wal.iterdir())
    written = n * dim * 4  # 256 MiB of vector data went through the log
    assert logged <= written * 0.6, f"the log holds {logged >> 20} MiB after {written >> 20} MiB written"
    assert client.count("big").count == n
    client.close()


_MAPS = """
import collections, sys
from qdrant_client import models
from e5v_qdrant.store import EdgeClient
client = EdgeClient(sys.argv[1])
client.create_collection("docs", {"text-dense": models.VectorParams(size=16, distance="Cosine")})
client.upsert("docs", [models.PointStruct(id=i, vector={"text-dense": [i + 1.0] * 16}) for i in range(10)])
with open("/proc/self/maps") as maps:
    files = collections.Counter(l.split()[-1] for l in maps if "/vector_storage-" in l and l.rstrip().endswith(".mmap"))
print(len(files), max(files.values()))
client.close()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize(("setting", "maps_per_file"), [(None, 1), ("", 2)])
def test_vector_files_are_mapped_once_unless_the_caller_keeps_qdrants_second_map(tmp_path, setting, maps_per_file):
    """Qdrant maps an appendable segment's vector files twice (read-write and read-only for sequential reads); while
    the optimizer copies a segment, RSS counts its vectors twice. The store turns that off through Qdrant's own
    ``QDRANT_NO_MULTI_MMAP`` unless the caller set the variable (empty: keep both maps)."""
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_NO_MULTI_MMAP"}
    if setting is not None:
        env["QDRANT_NO_MULTI_MMAP"] = setting
    out = subprocess.run(
        [sys.executable, "-c", _MAPS, str(tmp_path / "qd")], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    files, most = int(out[0]), int(out[1])
    assert files >= 1 and most == maps_per_file


_KILLED_WRITER = """
import os, sys
import numpy as np
from qdrant_client import models
from e5v_qdrant.store.edge import client as edge_client, convert as edge_convert
edge_convert.INDEXING_THRESHOLD_KB = 100  # segments over 100 KB get an index
client = edge_client.EdgeClient(sys.argv[1], defer_indexing=True)
client.create_collection("docs", {"text-dense": models.VectorParams(size=64, distance="Cosine")})
x = np.random.default_rng(0).normal(size=(3000, 64))
client.upsert("docs", [models.PointStruct(id=i, vector={"text-dense": v.tolist()}) for i, v in enumerate(x)])
os._exit(0)  # killed before close: nothing built
"""


def test_the_next_client_to_close_builds_what_a_killed_deferred_writer_left_unindexed(tmp_path, monkeypatch):
    from e5v_qdrant.store.edge import client as edge_client

    folder = str(tmp_path / "qd")
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, folder], check=True)
    monkeypatch.setattr(edge_client, "INDEX_EVERY_POINTS", 1000)  # leftovers this large get built at close
    reader = EdgeClient(folder)
    info = reader.get_collection("docs")
    assert (info.points_count, info.indexed_vectors_count or 0) == (3000, 0)
    reader.close()  # it wrote nothing, but the leftovers are built
    reader = EdgeClient(folder)
    assert reader.get_collection("docs").indexed_vectors_count >= 2000
    reader.close()


def test_edge_searches_a_collection_with_the_ef_it_recorded(tmp_path, monkeypatch):
    """A query naming no ef gets the one the collection recorded at creation: a sparse graph (m=4, ef_construct=8)
    searched with ef 10 misses most neighbours (numpy brute force says which) that ef 3000 (every point) finds."""
    from e5v_qdrant.store.edge import convert as edge_convert

    monkeypatch.setattr(edge_convert, "INDEXING_THRESHOLD_KB", 100)  # index these small segments
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = rng.normal(size=(30, 64)).astype(np.float32)
    client = EdgeClient(str(tmp_path / "qd"), defer_indexing=True)
    recall = {}
    for ef in (10, 3000):
        name = f"ef{ef}"
        client.create_collection(
            name,
            {"text-dense": models.VectorParams(size=64, distance="Cosine")},
            hnsw_config=models.HnswConfigDiff(m=4, ef_construct=8, full_scan_threshold=10),  # KB: no exact scan
            metadata={"e5v_qdrant_search": {"hnsw_ef": ef}},
        )
        client.upsert(name, [models.PointStruct(id=i, vector={"text-dense": v.tolist()}) for i, v in enumerate(x)])
        client.optimize(name)
        assert client.get_collection(name).indexed_vectors_count > 0
        hits = 0
        for q in queries:
            got = client.query_points(name, query=q.tolist(), using="text-dense", limit=10).points
            hits += len({p.id for p in got} & set(np.argsort(-(x @ q))[:10].tolist()))
        recall[ef] = hits / (10 * len(queries))
    client.close()
    assert recall[3000] > 0.95 and recall[10] < 0.5  # measured: 0.99 and 0.15
