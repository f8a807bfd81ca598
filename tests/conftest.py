"""Shared fixtures: one tiny E5-V replica per test session (built through the real save/load path)."""

from __future__ import annotations

import warnings

import pytest
from helpers import edge_points_now

from e5v_qdrant.testing import ReplicaSpec, build_replica


@pytest.fixture(scope="session")
def replica_path(tmp_path_factory):
    """A tiny replica with every trap of the published checkpoint (image id outside vocab, legacy processor config,
    legacy weight names, right padding saved in the tokenizer)."""
    return build_replica(tmp_path_factory.mktemp("replica") / "e5v-tiny", ReplicaSpec(legacy_weight_names=True))


@pytest.fixture(scope="session")
def encoder(replica_path):
    """One loaded ``E5VEncoder`` over ``replica_path`` shared by the whole session (float32, CPU)."""
    from e5v_qdrant import E5VEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=4)


# ---------------------------------------------------------------- embedded engines (issue 14)
#: Test modules whose every test runs once per embedded engine: Qdrant Edge (the default) and qdrant-client local mode.
ENGINE_MODULES = {"test_ingest", "test_cli_ingest", "test_reingest", "test_store"}


def pytest_configure(config):
    config.addinivalue_line("markers", "local_mode_only: reads a store with a tool that only knows local mode")


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.rsplit(".", 1)[-1] in ENGINE_MODULES and "embedded_engine" in metafunc.fixturenames:
        engines = ["local"] if metafunc.definition.get_closest_marker("local_mode_only") else ["edge", "local"]
        metafunc.parametrize("embedded_engine", engines, indirect=True)


@pytest.fixture(autouse=True)
def embedded_engine(request, monkeypatch, tmp_path_factory):
    """The engine of new embedded stores for this test (``None`` outside ``ENGINE_MODULES``).

    For "edge" it sets ``$E5V_QDRANT_EMBEDDED`` (reaching CLI child processes too) and, in the test module, swaps
    ``QdrantClient(":memory:")`` for an Edge store in a fresh folder and ``QdrantClient(path=...)`` for the engine
    that folder holds, and makes the kill -9 tests' "points stored so far" probes read Edge folders.
    """
    engine = getattr(request, "param", None)
    if engine is None:
        return None
    from qdrant_client import QdrantClient

    from e5v_qdrant.config import StoreConfig
    from e5v_qdrant.edge import EdgeClient
    from e5v_qdrant.store import NEW_FOLDER_ENGINE_ENV, open_client

    monkeypatch.setenv(NEW_FOLDER_ENGINE_ENV, engine)
    if engine == "local":
        return engine

    def client(location=None, *, path=None, **kwargs):
        if location == ":memory:":
            return EdgeClient(str(tmp_path_factory.mktemp("edge")))
        if path is not None and not kwargs:
            return open_client(StoreConfig(qdrant_path=str(path), retries=1))
        return QdrantClient(location, path=path, **kwargs)

    import sys

    module = request.module
    for other in list(sys.modules.values()):  # helpers imported from another engine module (points_of …)
        if getattr(other, "__name__", "").rsplit(".", 1)[-1] in ENGINE_MODULES and hasattr(other, "QdrantClient"):
            monkeypatch.setattr(other, "QdrantClient", client)
    if hasattr(module, "_stored_count"):  # test_cli_ingest: points in the "docs" collection of a live store
        monkeypatch.setattr(module, "_stored_count", lambda qd: edge_points_now(qd, "docs"))
    if hasattr(module, "_target_count"):  # test_reingest: points in the new physical collection of a live store
        monkeypatch.setattr(
            module, "_target_count", lambda folder, fid: edge_points_now(folder.parent, f"docs-e5v-{fid}")
        )
    return engine
