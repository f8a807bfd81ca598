"""ingest/ray_data.py: Ray Data ingestion equals the local engine; the Qdrant Datasink's batching, retries and failures;
killed workers / jobs converge to the clean point set. CPU only, one local Ray session for the whole module."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs pip install 'e5v-qdrant[ray]'")

from helpers import points_of  # noqa: E402
from qdrant_client import QdrantClient, models  # noqa: E402

from e5v_qdrant.chunking import ChunkerSpec, load_chunker  # noqa: E402
from e5v_qdrant.cli import main  # noqa: E402
from e5v_qdrant.config import EncoderConfig, IngestConfig, StoreConfig  # noqa: E402
from e5v_qdrant.ingest import ingest  # noqa: E402
from e5v_qdrant.ingest.ray_data import (  # noqa: E402
    POINT_SCHEMA,
    REST_MAX_REQUEST_BYTES,
    QdrantDatasink,
    RayEncoderActor,
    ingest_ray,
)
from e5v_qdrant.sources import SourceFile, read_source  # noqa: E402
from e5v_qdrant.store import VECTOR_NAME, QdrantStore, StoreError, open_client  # noqa: E402
from e5v_qdrant.testing import draw_image  # noqa: E402

CHUNK = {"chunk_size": 32, "chunk_overlap": 4}


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs, no GPU) for every test of this module."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this module's test classes by value
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Texts (several chunks each, one HTML), images, and bad inputs (corrupt image, empty file, unsupported type)."""
    root = tmp_path_factory.mktemp("corpus")
    sentences = [
        "A cat sits on the warm windowsill and watches the birds outside.",
        "Two dogs are running across a green field chasing a red ball.",
        "Fresh bread, cheese and olives are laid out on a wooden table.",
        "Snow covers the mountains and a small wooden cabin stands by the frozen lake.",
    ]
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text(" ".join(sentences * 2))
    (root / "docs" / "b.md").write_text("# Notes\n\n" + " ".join(reversed(sentences)))
    (root / "docs" / "c.html").write_text("<html><body><p>" + sentences[0] + "</p><script>x()</script></body></html>")
    (root / "img").mkdir()
    for i, size in enumerate([(80, 60), (50, 90)]):
        draw_image(*size, seed=i).save(root / "img" / f"p{i}.png")
    (root / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "docs" / "empty.txt").write_bytes(b"")
    (root / "docs" / "data.xyz").write_text("unsupported")
    return root


def _encoder_config(replica_path) -> EncoderConfig:
    return EncoderConfig(model=str(replica_path), device="cpu", dtype="float32", batch_size=4, preprocess_workers=0)


def _points(path, collection: str = "c") -> dict[str, tuple[dict, np.ndarray]]:
    return points_of(path, collection, vectors=True)


def _assert_same_points(got: dict, want: dict) -> None:
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for pid, (payload, vec) in want.items():
        assert got[pid][0] == payload, pid
        other = got[pid][1]
        cos = float(vec @ other / (np.linalg.norm(vec) * np.linalg.norm(other)))
        assert cos >= 0.9999, (pid, cos)


def _local_ingest(corpus_path, store_path, encoder):
    """The single-machine engine (``--engine local``) on a corpus: (points, report)."""
    config = IngestConfig(collection="c", paths=[str(corpus_path)], **CHUNK)
    with QdrantStore(StoreConfig(qdrant_path=str(store_path))) as store:
        report = ingest(config, encoder, store, progress=False)
    return _points(store_path), report


@pytest.fixture(scope="module")
def local_run(corpus, encoder, tmp_path_factory):
    return _local_ingest(corpus, tmp_path_factory.mktemp("local-store"), encoder)


def _ray_ingest(
    corpus_path, store_path, encoder, replica_path, *, store=None, embedder_class=RayEncoderActor, **options
):
    config = IngestConfig(
        collection="c", paths=[str(corpus_path)], engine="ray", replicas=1, gpus_per_replica=0, **CHUNK, **options
    )
    target = store if store is not None else StoreConfig(qdrant_path=str(store_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ingest_ray(
            config,
            _encoder_config(replica_path),
            target,
            encoder=encoder,
            progress=False,
            embedder_class=embedder_class,
        )


# ---------------------------------------------------------------- 1. Ray run == local run, resume semantics
def test_ray_engine_matches_local_engine_then_resumes(ray_session, corpus, encoder, replica_path, tmp_path, capsys):
    import shutil

    work = tmp_path / "corpus"  # a private copy: this test edits it afterwards
    shutil.copytree(corpus, work)
    want, local_report = _local_ingest(work, tmp_path / "local-store", encoder)
    store_path = tmp_path / "ray-store"
    report = _ray_ingest(work, store_path, encoder, replica_path)
    got = _points(store_path)
    assert len(got) >= 8  # texts with several chunks + 2 images
    _assert_same_points(got, want)  # same ids, payloads, vectors (cos >= 0.9999)
    for key in ("discovered", "new", "unchanged", "replaced", "skipped", "embedded", "points_written"):
        assert getattr(report, key) == getattr(local_report, key), key
    assert sorted(s.source for s in report.skipped_inputs) == sorted(s.source for s in local_report.skipped_inputs)
    assert any(s.source.endswith("broken.jpg") for s in report.skipped_inputs)

    # re-run after editing one file and deleting another, with sync: only the edit is embedded
    changed = work / "docs" / "b.md"
    changed.write_text("An entirely different note about invoices charged twice this month, and nothing else at all.")
    os.remove(work / "img" / "p1.png")
    # ... through the CLI this time (the driver loads no model: a Ray task reads the fingerprint)
    argv = ["ingest", str(work), "--collection", "c", "--qdrant-path", str(store_path), "--engine", "ray",
            "--replicas", "1", "--gpus-per-replica", "0", "--sync", "--chunk-size", "32", "--chunk-overlap", "4",
            "--model", str(replica_path), "--device", "cpu", "--dtype", "float32", "--no-progress", "--json"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(argv)
    again = json.loads(capsys.readouterr().out)["counts"]
    assert status == 1  # finished, some inputs (the bad ones) skipped
    chunker = load_chunker(ChunkerSpec.for_encoder(EncoderConfig(model=str(replica_path)), **CHUNK))
    doc = read_source(SourceFile(str(changed), "text"), chunker)  # independent: the ids a clean run stores
    assert (again["replaced"], again["deleted"], again["new"]) == (1, 1, 0)
    assert again["unchanged"] == report.new - 2
    assert again["embedded"] == again["points_written"] == len(doc.items)
    after = _points(store_path)
    by_source: dict[str, set[str]] = {}
    for pid, (payload, _) in after.items():
        by_source.setdefault(payload["source"], set()).add(pid)
    assert by_source[str(changed)] == {item.id for item in doc.items}
    assert str(work / "img" / "p1.png") not in by_source
    untouched = {pid for pid, (p, _) in got.items() if p["source"] not in (str(changed), str(work / "img" / "p1.png"))}
    assert untouched <= after.keys() and len(after) == len(untouched) + len(doc.items)


def _points_with_sparse(path, collection: str = "c") -> dict[str, tuple[dict, np.ndarray, tuple | None]]:
    """Point id -> (payload, dense vector, (indices, values) of the sparse vector or None), read with the client."""
    from e5v_qdrant.points import SPARSE_VECTOR_NAME

    client = open_client(StoreConfig(qdrant_path=str(path), retries=1))
    try:
        out, offset = {}, None
        while True:
            records, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True, with_vectors=True)
            for r in records:
                sparse = r.vector.get(SPARSE_VECTOR_NAME)
                out[str(r.id)] = (
                    r.payload,
                    np.asarray(r.vector[VECTOR_NAME], dtype=np.float64),
                    (list(sparse.indices), list(sparse.values)) if sparse is not None else None,
                )
            if offset is None:
                return out
    finally:
        client.close()


def test_ray_hybrid_pdf_page_images_write_the_same_points_as_the_local_engine(
    ray_session, corpus, encoder, replica_path, tmp_path, capsys
):
    """``ingest --engine ray --hybrid --pdf-pages images`` (once refused) == the local engine with the same options:
    same ids and payloads, same dense vectors, same sparse vectors (exactly), PDF pages as page images."""
    import shutil

    from test_pdf_pages import write_text_pdf

    work = tmp_path / "corpus"
    shutil.copytree(corpus, work)
    write_text_pdf(work / "docs" / "manual.pdf")
    local_store, ray_store = tmp_path / "local-store", tmp_path / "ray-store"
    config = IngestConfig(collection="c", paths=[str(work)], hybrid=True, pdf_pages="images", **CHUNK)
    with QdrantStore(StoreConfig(qdrant_path=str(local_store))) as store:
        ingest(config, encoder, store, progress=False)
    argv = ["ingest", str(work), "--collection", "c", "--qdrant-path", str(ray_store), "--engine", "ray",
            "--replicas", "1", "--gpus-per-replica", "0", "--hybrid", "--pdf-pages", "images",
            "--chunk-size", "32", "--chunk-overlap", "4", "--model", str(replica_path), "--device", "cpu",
            "--dtype", "float32", "--no-progress", "--json"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(argv)
    assert status == 1, capsys.readouterr()  # finished; the corpus's bad inputs are skipped
    want, got = _points_with_sparse(local_store), _points_with_sparse(ray_store)
    pdf_points = [p for p, _, _ in want.values() if p["source"].endswith("manual.pdf")]
    assert sorted(p["page"] for p in pdf_points) == [1, 2, 3] and {p["modality"] for p in pdf_points} == {"image"}
    assert sum(s is not None for _, _, s in want.values()) >= 4  # the text chunks carry keyword vectors
    assert set(got) == set(want), f"missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for pid, (payload, dense, sparse) in want.items():
        assert got[pid][0] == payload, pid
        cos = float(dense @ got[pid][1] / (np.linalg.norm(dense) * np.linalg.norm(got[pid][1])))
        assert cos >= 0.9999, (pid, cos)
        assert got[pid][2] == sparse, pid  # None for images; identical (indices, values) for text


# ---------------------------------------------------------------- 2. the Datasink: batching, retries, failures
DIM = 16


def _rows(n: int, text_len: int = 40) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        vec = rng.normal(size=DIM).astype(np.float32)
        payload = {"source": f"s{i}", "text": ("ü" * text_len) + str(i), "chunk_index": i}
        rows.append(
            {
                "id": f"00000000-0000-5000-8000-{i:012d}",
                "vector": vec.tobytes(),
                "payload": json.dumps(payload, ensure_ascii=False),
                "note": None,
            }
        )
    return rows


def _table(rows):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=POINT_SCHEMA)


class FaultyClient:
    """A real in-memory Qdrant client whose ``upsert`` fails: ``transient`` times before applying, ``lost_acks`` times
    after applying (the ack is lost, the client retries), or always (``permanent``). Records every applied request."""

    def __init__(self, transient: int = 0, lost_acks: int = 0, permanent: bool = False, collection: str = "c"):
        self.inner = QdrantClient(":memory:")
        self.inner.create_collection(
            collection, vectors_config={VECTOR_NAME: models.VectorParams(size=DIM, distance=models.Distance.COSINE)}
        )
        self.transient, self.lost_acks, self.permanent = transient, lost_acks, permanent
        self.applied: list[list[str]] = []
        self.requests: list[list] = []
        self.upsert_calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, collection_name, points, wait=True, **kw):
        self.upsert_calls += 1
        assert wait is True
        if self.permanent:
            from qdrant_client.http.exceptions import UnexpectedResponse

            raise UnexpectedResponse(400, "Bad Request", b'{"status":{"error":"Wrong input: injected"}}', None)
        if self.transient:
            self.transient -= 1
            raise ConnectionResetError("injected connection reset")
        result = self.inner.upsert(collection_name, points, wait=wait, **kw)
        self.applied.append([str(p.id) for p in points])
        self.requests.append(points)
        if self.lost_acks:
            self.lost_acks -= 1
            raise TimeoutError("injected: applied, but the ack was lost")
        return result

    def close(self):
        pass


def _sink(client, **store_options) -> QdrantDatasink:
    config = StoreConfig(qdrant_url="http://injected:6333", **{"retry_wait": 0.001, **store_options})
    return QdrantDatasink("c", config, client=client)


def test_datasink_delivers_every_point_exactly_once_through_transient_faults():
    rows = _rows(23)
    client = FaultyClient(transient=4)
    sink = _sink(client, write_batch_size=5, retries=6)
    stats = sink.write([_table(rows[:10]), _table(rows[10:])])
    applied = [pid for request in client.applied for pid in request]
    assert sorted(applied) == sorted(r["id"] for r in rows)  # each exactly once, none lost
    assert stats["points"] == 23 and stats["requests"] == len(client.applied) == 5
    assert client.upsert_calls == 5 + 4
    stored = client.inner.retrieve("c", [r["id"] for r in rows], with_vectors=True, with_payload=True)
    assert len(stored) == 23
    by_id = {str(p.id): p for p in stored}
    for r in rows:  # vector (a cosine collection stores it normalised) and payload arrive intact
        sent = np.frombuffer(r["vector"], np.float32)
        np.testing.assert_allclose(
            by_id[r["id"]].vector[VECTOR_NAME], sent / np.linalg.norm(sent), rtol=1e-5, atol=1e-6
        )
        assert by_id[r["id"]].payload == json.loads(r["payload"])


def test_datasink_lost_acks_are_retried_and_idempotent():
    rows = _rows(12)
    client = FaultyClient(lost_acks=2)
    _sink(client, write_batch_size=4).write([_table(rows)])
    assert client.inner.count("c", exact=True).count == 12  # re-sent requests overwrite the same ids
    assert len(client.applied) == 3 + 2


def test_datasink_splits_requests_by_bytes_under_the_limit():
    rows = _rows(30, text_len=2000)
    client = FaultyClient()
    limit = 24 * 1024
    _sink(client, write_batch_size=64, write_batch_bytes=limit).write([_table(rows)])
    assert len(client.requests) > 1
    for request in client.requests:  # measured independently: the JSON body qdrant-client sends over REST
        body = json.dumps({"points": [p.model_dump(mode="json") for p in request]})
        assert len(body.encode()) <= limit
    assert sum(len(r) for r in client.requests) == 30
    assert REST_MAX_REQUEST_BYTES == 32 * 1024 * 1024


def test_datasink_permanent_error_fails_fast_and_never_creates_collections():
    client = FaultyClient(permanent=True)
    started = time.perf_counter()
    with pytest.raises(StoreError, match="Wrong input: injected"):
        _sink(client, retries=6, retry_wait=1.0).write([_table(_rows(3))])
    assert client.upsert_calls == 1 and time.perf_counter() - started < 1.0  # no retry on a 400

    missing = FaultyClient(collection="other")
    with pytest.raises(StoreError, match="never creates collections"):
        _sink(missing).write([_table(_rows(2))])
    assert missing.upsert_calls == 0 and not missing.inner.collection_exists("c")


@ray.remote
class Recorder:
    def __init__(self, faults: int):
        self.faults, self.applied = faults, []

    def take_fault(self) -> bool:
        if self.faults > 0:
            self.faults -= 1
            return True
        return False

    def record(self, ids):
        self.applied.extend(ids)

    def get(self):
        return self.applied


class RecordingClientFactory:
    """Picklable: each Ray write task gets a client that fails when the shared recorder says so."""

    def __init__(self, recorder, permanent: bool = False):
        self.recorder, self.permanent = recorder, permanent

    def __call__(self):
        recorder, permanent = self.recorder, self.permanent

        class Client(FaultyClient):
            def upsert(self, collection_name, points, wait=True, **kw):
                if permanent or ray.get(recorder.take_fault.remote()):
                    self.permanent = permanent
                    self.transient = 1
                result = super().upsert(collection_name, points, wait=wait, **kw)
                ray.get(recorder.record.remote([str(p.id) for p in points]))  # recorded before the ack
                return result

        return Client()


def test_datasink_in_a_ray_job_exactly_once_and_loud_failure(ray_session):
    rows = _rows(40)
    recorder = Recorder.remote(5)
    config = StoreConfig(qdrant_url="http://injected:6333", retry_wait=0.001, write_batch_size=4)
    sink = QdrantDatasink("c", config, client_factory=RecordingClientFactory(recorder))
    ray.data.from_arrow(_table(rows)).repartition(4).write_datasink(sink, concurrency=2)
    applied = ray.get(recorder.get.remote())
    assert sorted(applied) == sorted(r["id"] for r in rows)
    assert sink.result["points"] == 40 and ray.get(recorder.take_fault.remote()) is False  # all 5 faults were hit

    failing = QdrantDatasink("c", config, client_factory=RecordingClientFactory(Recorder.remote(0), permanent=True))
    with pytest.raises(Exception, match="Wrong input: injected") as info:
        ray.data.from_arrow(_table(rows)).write_datasink(failing)
    assert "StoreError" in repr(info.value) or isinstance(info.value, StoreError)


# ---------------------------------------------------------------- 3. killed worker / killed job → same point set
class CrashOnceActor(RayEncoderActor):
    """Kills its own process on its first batch (marker file absent); the restarted actor works normally."""

    marker = ""  # set by the test; this module is pickled by value, so workers see the value

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


class FailAfter:
    """A real client whose upserts fail permanently after ``n`` successful ones (the job dies mid-write)."""

    def __init__(self, inner, n: int):
        self.inner, self.left = inner, n

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, *args, **kwargs):
        if self.left <= 0:
            raise ValueError("injected: the job is killed here")
        self.left -= 1
        return self.inner.upsert(*args, **kwargs)


def test_killed_actor_and_killed_job_then_rerun_give_the_clean_point_set(
    ray_session, corpus, encoder, replica_path, local_run, tmp_path, monkeypatch
):
    """First run: the encoder actor kills its process on its first batch (Ray restarts it, so points still get
    written), then the job dies on a permanent write error. Re-run: exactly the clean run's points."""
    marker = tmp_path / "crashed"
    monkeypatch.setattr(CrashOnceActor, "marker", str(marker))
    store_path = tmp_path / "store"
    config = StoreConfig(qdrant_path=str(store_path), write_batch_size=2, retry_wait=0.001)
    real = open_client(config)
    with pytest.raises(StoreError, match="killed here"):
        _ray_ingest(
            corpus,
            store_path,
            encoder,
            replica_path,
            store=QdrantStore(config, client=FailAfter(real, 2)),
            embedder_class=CrashOnceActor,
        )
    real.close()
    assert marker.exists()  # the actor did die ...
    partial = _points(store_path)
    assert 0 < len(partial) < len(local_run[0])  # ... and its restart embedded points before the job died
    # the re-run goes through the Python API's ingest() with engine="ray" (the actors load encoder.config)
    rerun = IngestConfig(collection="c", paths=[str(corpus)], engine="ray", replicas=1, gpus_per_replica=0, **CHUNK)
    with QdrantStore(StoreConfig(qdrant_path=str(store_path))) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ingest(rerun, encoder, store, progress=False)
    assert report.embedded == len(local_run[0]) - len(partial)  # only the missing points are embedded
    _assert_same_points(_points(store_path), local_run[0])


# ---------------------------------------------------------------- live server (only with QDRANT_URL)
@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server: set QDRANT_URL")
def test_ray_engine_against_a_live_server_matches_the_local_engine(
    ray_session, corpus, encoder, replica_path, local_run
):
    """Distributed writes (parallel Ray write tasks, each with its own client) into a real server."""
    import uuid

    name = f"e5v-ray-{uuid.uuid4().hex[:8]}"
    config = StoreConfig(qdrant_url=os.environ["QDRANT_URL"], write_batch_size=3)
    ingest_config = IngestConfig(
        collection=name, paths=[str(corpus)], engine="ray", replicas=1, gpus_per_replica=0, write_concurrency=2,
        bulk_load=True, **CHUNK,
    )  # fmt: skip
    with QdrantStore(config) as store:
        try:
            report = ingest_ray(ingest_config, _encoder_config(replica_path), store, encoder=encoder, progress=False)
            physical = store.resolve(name)
            got = {}
            for record in store.scroll(physical, with_vectors=True):
                got[str(record.id)] = (record.payload, np.asarray(record.vector[VECTOR_NAME], dtype=np.float64))
            _assert_same_points(got, local_run[0])
            assert report.points_written == len(local_run[0])
            assert store.client.get_collection(physical).config.hnsw_config.m != 0  # bulk load restored
        finally:
            physical = store.resolve(name)
            if physical and physical != name:
                store.client.update_collection_aliases(
                    change_aliases_operations=[
                        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))
                    ]
                )
            if physical:
                store.client.delete_collection(physical)


def test_old_ray_engine_module_reexports_the_executor_with_a_deprecation_warning():
    """``e5v_qdrant.ray_engine`` (the README's old path) still imports, warns, and is the moved executor."""
    import importlib
    import sys

    from e5v_qdrant.ingest import ray_data

    sys.modules.pop("e5v_qdrant.ray_engine", None)
    with pytest.warns(DeprecationWarning, match="e5v_qdrant.ingest.ray_data"):
        old = importlib.import_module("e5v_qdrant.ray_engine")
    assert old.ingest_ray is ray_data.ingest_ray and old.QdrantDatasink is ray_data.QdrantDatasink
