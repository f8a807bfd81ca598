"""One tiny E5-V replica per test session (no downloads) and a reference ``E5VEncoder`` loaded directly over it."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="session")
def replica_path(tmp_path_factory):
    from e5v_qdrant.testing import build_replica

    return build_replica(tmp_path_factory.mktemp("langchain_e5v") / "e5v-tiny")


@pytest.fixture(scope="session")
def reference(replica_path):
    """The independent reference: an ``E5VEncoder`` built directly (not through langchain_e5v or its cache)."""
    from e5v_qdrant.encoder import E5VEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the replica reproduces the published checkpoint's traps, with warnings
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=3)
