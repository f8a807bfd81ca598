"""ingest.py: retrieval of what was stored, idempotent re-runs, incremental == clean, sync, retries (tiny replica)."""

from __future__ import annotations

import logging
import shutil
import time

import pytest
from helpers import TEXTS, FlakyClient, make_corpus
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

from e5v_qdrant.config import IngestConfig, StoreConfig
from e5v_qdrant.ingest import ingest
from e5v_qdrant.search import search
from e5v_qdrant.store import QdrantStore, StoreError
from e5v_qdrant.testing import draw_image


def cfg(root, **kw) -> IngestConfig:
    return IngestConfig(collection="docs", paths=[str(root)], chunk_size=96, chunk_overlap=4, **kw)


def snapshot(store: QdrantStore, name: str = "docs") -> dict[str, dict]:
    return {str(r.id): r.payload for r in store.scroll(name, with_payload=True)}


class CountingEncoder:
    """Delegates to the real encoder and counts how many items it was asked to embed."""

    def __init__(self, inner):
        self._inner = inner
        self.items = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def embed_texts(self, texts, **kw):
        self.items += len(texts)
        return self._inner.embed_texts(texts, **kw)

    def embed_images(self, images, **kw):
        self.items += len(images)
        return self._inner.embed_images(images, **kw)


@pytest.fixture
def store():
    s = QdrantStore(StoreConfig(retry_wait=0.001, write_batch_size=8), client=QdrantClient(":memory:"))
    yield s
    s.close()


def test_stored_chunks_and_images_are_found_first(tmp_path, encoder, store):
    root = make_corpus(tmp_path / "corpus")
    report = ingest(cfg(root), encoder, store, progress=False)
    assert report.exit_code == 0 and not report.skipped_inputs
    assert (report.discovered, report.new) == (6, 6)
    points = snapshot(store)
    assert report.embedded == report.points_written == len(points) > 6  # several chunks per document
    chunks = {pid: p for pid, p in points.items() if p["modality"] == "text"}
    images = {pid: p for pid, p in points.items() if p["modality"] == "image"}
    assert len(images) == 3
    import json

    for pid, payload in chunks.items():
        text = json.loads(payload["_node_content"])["text"]
        hits = search(store, encoder, "docs", text=text, top_k=3)
        assert hits[0].id == pid and hits[0].score == pytest.approx(1.0, abs=1e-4), text
    for pid, payload in images.items():
        hits = search(store, encoder, "docs", image=payload["source"], top_k=3)
        assert hits[0].id == pid and hits[0].modality == "image"
        only_text = search(store, encoder, "docs", image=payload["source"], top_k=3, modality="text")
        assert all(h.modality == "text" for h in only_text)
    composed = search(store, encoder, "docs", image=str(root / "pics" / "one.png"), text="make it blue", top_k=2)
    assert len(composed) == 2
    # every point carries the model fingerprint of the collection
    assert {p["model_fingerprint"] for p in points.values()} == {encoder.fingerprint["id"]}


def test_second_run_embeds_nothing_and_writes_nothing(tmp_path, encoder, store):
    root = make_corpus(tmp_path / "corpus")
    ingest(cfg(root), encoder, store, progress=False)
    before = snapshot(store)
    counting = CountingEncoder(encoder)
    report = ingest(cfg(root), counting, store, progress=False)
    assert counting.items == 0
    assert (report.embedded, report.points_written, report.points_deleted) == (0, 0, 0)
    assert (report.unchanged, report.new, report.replaced) == (6, 0, 0)
    assert snapshot(store) == before


def test_edit_one_file_replaces_only_its_chunks_and_matches_a_clean_run(tmp_path, encoder, store):
    root = make_corpus(tmp_path / "corpus")
    ingest(cfg(root), encoder, store, progress=False)
    before = snapshot(store)
    edited = root / "animals.txt"
    edited.write_text(TEXTS["animals.txt"].replace("number 7", "number seven").replace("owl", "eagle"))
    draw_image(120, 90, seed=11).save(root / "pics" / "one.png")  # an image changed too

    counting = CountingEncoder(encoder)
    report = ingest(cfg(root), counting, store, progress=False)
    after = snapshot(store)
    changed_sources = {str(edited), str(root / "pics" / "one.png")}
    assert report.replaced == 2 and report.unchanged == 4
    # other files' points are untouched, id for id, payload for payload
    keep = lambda snap: {k: v for k, v in snap.items() if v["source"] not in changed_sources}  # noqa: E731
    assert keep(after) == keep(before)
    # only new chunks were embedded (chunks identical at the same position keep their id and vector)
    new_ids = set(after) - set(before)
    assert report.embedded == report.points_written == len(new_ids) == counting.items
    assert report.points_deleted == len(set(before) - set(after)) > 0
    assert all(after[i]["source"] in changed_sources for i in new_ids)
    # incremental result == a clean run over the new content
    clean = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(cfg(root), encoder, clean, progress=False)
    assert snapshot(clean) == after


def test_sync_removes_exactly_the_vanished_files_points(tmp_path, encoder, store):
    root = make_corpus(tmp_path / "corpus")
    other = make_corpus(tmp_path / "other")  # a second folder in the same collection must be left alone
    ingest(cfg(root), encoder, store, progress=False)
    ingest(cfg(other), encoder, store, progress=False)
    before = snapshot(store)
    gone = {str(root / "food.md"), str(root / "pics" / "two.jpg")}
    (root / "food.md").unlink()
    shutil.rmtree(root / "pics")
    draw_image(10, 10, seed=5).save(tmp_path / "pics-one.png")
    gone |= {str(root / "pics" / "one.png"), str(root / "pics" / "three.webp")}

    no_sync = ingest(cfg(root), encoder, store, progress=False)
    assert no_sync.deleted == 0 and snapshot(store) == before

    report = ingest(cfg(root, sync=True), encoder, store, progress=False)
    after = snapshot(store)
    expected = {k: v for k, v in before.items() if v["source"] not in gone}
    assert after == expected
    assert report.deleted == len(gone) and report.points_deleted == len(before) - len(expected)
    assert report.embedded == 0


def test_transient_write_faults_are_retried_and_the_result_is_unchanged(tmp_path, encoder, caplog):
    root = make_corpus(tmp_path / "corpus")
    flaky = FlakyClient(QdrantClient(":memory:"), "upsert", fail=3)
    store = QdrantStore(StoreConfig(retry_wait=0.001, retries=5, write_batch_size=4), client=flaky)
    with caplog.at_level(logging.WARNING, logger="e5v_qdrant.store"):
        report = ingest(cfg(root), encoder, store, progress=False)
    assert len([r for r in caplog.records if "retrying upserting" in r.getMessage()]) == 3
    clean = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(cfg(root), encoder, clean, progress=False)
    assert snapshot(store) == snapshot(clean)
    assert report.points_written == len(snapshot(clean))


def test_permanent_write_error_stops_the_run_quickly(tmp_path, encoder):
    root = make_corpus(tmp_path / "corpus")
    bad = UnexpectedResponse(400, "Bad Request", b"payload too large", None)
    store = QdrantStore(
        StoreConfig(retry_wait=10.0), client=FlakyClient(QdrantClient(":memory:"), "upsert", fail=99, exc=bad)
    )
    start = time.perf_counter()
    with pytest.raises(StoreError, match="HTTP 400"):
        ingest(cfg(root), encoder, store, progress=False)
    assert time.perf_counter() - start < 30  # no 10 s back-off: not retried
    assert store.client.calls == 1


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch and continue)."""


class CrashingClient:
    """Wraps a real client and 'dies' right before its ``crash_at``-th write (upsert or delete); counts writes."""

    def __init__(self, inner, crash_at: int | None = None):
        self._inner, self.crash_at, self.writes = inner, crash_at, 0

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in ("upsert", "delete"):
            return attr

        def write(*args, **kwargs):
            self.writes += 1
            if self.writes == self.crash_at:
                raise Crash(f"killed before write {self.writes}")
            return attr(*args, **kwargs)

        return write


def test_crash_before_any_write_then_rerun_equals_a_clean_run(tmp_path, encoder):
    """Deterministic companion of the SIGKILL test: die before each write of an update run (new chunks, stale
    deletes, sync deletes), re-run, and compare ids, payloads and vectors with a clean run of the final corpus."""
    root = make_corpus(tmp_path / "corpus")
    shutil.rmtree(root / "pics")  # text is enough here: keeps the many re-runs cheap
    first = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(cfg(root), encoder, first, progress=False)
    initial = list(first.scroll("docs", with_payload=True, with_vectors=True))

    (root / "animals.txt").write_text(TEXTS["animals.txt"].replace("owl", "eagle"))
    (root / "food.md").unlink()
    (root / "new.txt").write_text("A brand new note about sailing boats on a calm lake at dawn.")
    clean = QdrantStore(StoreConfig(), client=QdrantClient(":memory:"))
    ingest(cfg(root), encoder, clean, progress=False)
    expected = {str(r.id): (r.payload, r.vector) for r in clean.scroll("docs", with_payload=True, with_vectors=True)}

    def restored(crash_at):
        from qdrant_client import models

        client = CrashingClient(QdrantClient(":memory:"), crash_at)
        store = QdrantStore(StoreConfig(write_batch_size=2), client=client)
        store.ensure_collection("docs", encoder)
        client._inner.upsert("docs", [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in initial])
        return client, store

    probe, store = restored(None)
    ingest(cfg(root, sync=True), encoder, store, progress=False)
    assert probe.writes >= 4  # several upsert batches, the stale delete and the sync delete
    print(f"update run makes {probe.writes} writes")
    for crash_at in range(1, probe.writes + 1):
        client, store = restored(crash_at)
        with pytest.raises(Crash):
            ingest(cfg(root, sync=True), encoder, store, progress=False)
        client.crash_at = None
        ingest(cfg(root, sync=True), encoder, store, progress=False)
        got = {str(r.id): (r.payload, r.vector) for r in store.scroll("docs", with_payload=True, with_vectors=True)}
        assert got.keys() == expected.keys(), crash_at
        for pid, (payload, vector) in expected.items():
            assert got[pid][0] == payload
            assert got[pid][1]["text-dense"] == pytest.approx(vector["text-dense"], abs=1e-5)
