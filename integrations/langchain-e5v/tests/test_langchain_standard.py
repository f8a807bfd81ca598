"""LangChain's own standard embeddings suites (``langchain-tests``) on ``E5VEmbeddings`` over a tiny replica."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_e5v import E5VEmbeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests


class _OnReplica:
    replica: Path

    @pytest.fixture(autouse=True)
    def _use_replica(self, replica_path):
        type(self).replica = replica_path

    @property
    def embeddings_class(self) -> type[E5VEmbeddings]:
        return E5VEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": str(self.replica), "device": "cpu", "dtype": "float32", "batch_size": 2}


class TestE5VEmbeddingsUnit(_OnReplica, EmbeddingsUnitTests):
    pass


class TestE5VEmbeddingsIntegration(_OnReplica, EmbeddingsIntegrationTests):
    pass
