"""`e5v-qdrant migrate`: a copy between stores equals the source, resumes after a crash, refuses another model."""

from __future__ import annotations

import json
import os
import types
import uuid

import numpy as np
import pytest
from qdrant_client import models

from e5v_qdrant.cli import main
from e5v_qdrant.config import EncoderConfig, StoreConfig
from e5v_qdrant.migrate import migrate, plan_migration
from e5v_qdrant.store import CollectionMismatchError, QdrantStore, point_id

DIM = 24


def _encoder(fid):
    return types.SimpleNamespace(dim=DIM, fingerprint={"id": fid, "model": "m"}, config=EncoderConfig(model="m"))


def _unit(v):
    return v / np.linalg.norm(v)


def _fill(path, engine, n=300, fid="f1"):
    rng = np.random.default_rng(0)
    with QdrantStore(StoreConfig(qdrant_path=str(path), embedded=engine)) as store:
        physical = store.ensure_collection("docs", _encoder(fid))
        store.upsert(
            physical,
            [
                models.PointStruct(
                    id=point_id(f"file{i % 7}", i, "h"),
                    vector={"text-dense": _unit(rng.normal(size=DIM)).tolist()},  # E5-V vectors are unit
                    payload={"source": f"file{i % 7}", "modality": "text", "text": "x" * (i % 50)},
                )
                for i in range(n)
            ],
        )
        return physical


def _dump(path):
    with QdrantStore(StoreConfig(qdrant_path=str(path))) as store:
        physical = store.resolve("docs")
        points = {
            str(r.id): (r.payload, np.asarray(r.vector["text-dense"]))
            for r in store.scroll("docs", with_payload=True, with_vectors=True)
        }
        return physical, store.stamp(physical), points, store.engine


@pytest.mark.parametrize("source_engine,target_engine", [("local", "edge"), ("edge", "local")])
def test_cli_copy_equals_the_source_and_a_second_run_copies_nothing(tmp_path, capsys, source_engine, target_engine):
    _fill(tmp_path / "src", source_engine)
    argv = ["migrate", "--collection", "docs", "--qdrant-path", str(tmp_path / "src"), "--json"]
    argv += ["--to-path", str(tmp_path / "dst"), "--to-embedded", target_engine]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    src, dst = _dump(tmp_path / "src"), _dump(tmp_path / "dst")
    assert dst[3] == target_engine and dst[0] == src[0] and dst[1] == src[1]  # same physical name and stamp
    assert dst[2].keys() == src[2].keys() and len(src[2]) == 300
    for pid, (payload, vector) in src[2].items():
        assert dst[2][pid][0] == payload
        np.testing.assert_allclose(dst[2][pid][1], vector, atol=1e-6)
    assert (first["copied"], first["created"], first["alias_pointed"]) == (300, True, True)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["copied"], again["already_there"], again["created"]) == (0, 300, False)


class _CrashAfter:
    """Delegates to a client and raises after ``n`` upserts (a run killed mid-copy)."""

    def __init__(self, inner, n):
        self.inner, self.left = inner, n

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, *args, **kwargs):
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        return self.inner.upsert(*args, **kwargs)


def test_killed_copy_resumes_and_the_alias_appears_only_at_the_end(tmp_path):
    _fill(tmp_path / "src", "edge")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "src"))) as source:
        target_config = StoreConfig(qdrant_path=str(tmp_path / "dst"), embedded="edge", write_batch_size=16)
        with QdrantStore(target_config) as raw:
            crashing = QdrantStore(target_config, client=_CrashAfter(raw.client, 5))
            with pytest.raises(KeyboardInterrupt):
                migrate("docs", source, crashing, batch_size=32, progress=False)
            assert raw.aliases() == {}  # readers of the target see nothing until the copy is complete
            plan = plan_migration("docs", source, raw)
            assert plan.already_there == 5 * 16
            report = migrate("docs", source, raw, batch_size=32, progress=False)
            assert report.copied == 300 - 5 * 16 and raw.aliases() == {"docs": report.physical}
    assert _dump(tmp_path / "dst")[2].keys() == _dump(tmp_path / "src")[2].keys()


def test_target_with_another_model_is_refused(tmp_path):
    _fill(tmp_path / "src", "edge", fid="f1")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "dst"))) as target:
        target.create_physical("docs-e5v-f1", _encoder("f2"), alias=None)  # same name, other model stamp
    with (
        QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "src"))) as s,
        QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "dst"))) as t,
    ):
        with pytest.raises(CollectionMismatchError, match="fingerprint"):
            migrate("docs", s, t, progress=False)


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server at QDRANT_URL")
def test_migrate_to_a_live_server_and_back(tmp_path):  # pragma: no cover - needs a server
    _fill(tmp_path / "src", "edge")
    name = f"docs-{uuid.uuid4().hex[:8]}"
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "src"))) as src:
        src.point_alias(name, src.resolve("docs"))
        server = QdrantStore(StoreConfig(qdrant_url=os.environ["QDRANT_URL"], quantization="int8"))
        try:
            report = migrate(name, src, server, progress=False)
            assert server.count(name) == 300 and server.resolve(name) == report.physical
            assert server.stamp(report.physical) == src.stamp(report.physical)
            assert migrate(name, src, server, progress=False).copied == 0
            with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "back"))) as back:
                assert migrate(name, server, back, progress=False).copied == 300
        finally:
            server.client.delete_collection(report.physical)
            server.close()


@pytest.mark.parametrize("source_engine,target_engine", [("edge", "local"), ("local", "edge")])
def test_a_migrated_hybrid_collection_still_finds_a_rare_code(
    tmp_path, replica_path, capsys, source_engine, target_engine
):
    """Issue 25: the copy gets the sparse side (vector config, stamp, vectors) and the filter indexes, so `search
    --hybrid` on the target finds a rare part code exactly as on the source."""
    from test_hybrid import CODES, COMMON, make_notes

    notes = make_notes(tmp_path / "notes")
    src, dst = tmp_path / "src", tmp_path / "dst"
    base = ("--collection", "docs", "--qdrant-path")
    argv = ["ingest", notes, *base, src, "--model", replica_path, *COMMON, "--hybrid", "--embedded", source_engine]
    assert main([str(a) for a in argv]) == 0
    argv = ["migrate", *base, src, "--to-path", dst, "--to-embedded", target_engine]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    for i, code in CODES.items():
        for store in (src, dst):
            argv = ["search", code, *base, store, "--hybrid", "--top-k", "1", "--json"]
            assert main([str(a) for a in argv]) == 0
            assert [h["source"] for h in json.loads(capsys.readouterr().out)] == [str(notes / f"note{i:02d}.txt")]
    with QdrantStore(StoreConfig(qdrant_path=str(src))) as a, QdrantStore(StoreConfig(qdrant_path=str(dst))) as b:
        assert b.engine == target_engine
        physical = a.resolve("docs")
        assert b.resolve("docs") == physical
        assert b.stamp(physical).to_metadata() == a.stamp(physical).to_metadata()
        sparse = {str(r.id): r.vector.get("text-sparse-new") for r in b.scroll("docs", with_vectors=True)}
        original = {str(r.id): r.vector.get("text-sparse-new") for r in a.scroll("docs", with_vectors=True)}
        assert sparse.keys() == original.keys() and all(v is not None for v in sparse.values())
        for key, vector in original.items():
            assert (sparse[key].indices, pytest.approx(sparse[key].values)) == (vector.indices, vector.values)
