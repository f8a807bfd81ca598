"""Shared fixtures: one tiny E5-V replica per test session (built through the real save/load path)."""

from __future__ import annotations

import warnings

import pytest

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
