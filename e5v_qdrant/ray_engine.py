"""Deprecated: the Ray Data executor moved into the ingestion package (``e5v_qdrant.ingest.ray_data``).

This module only re-exports the old public names and will be removed in a later release; ``ingest(config, ...)``
with ``IngestConfig(engine="ray")`` (or ``e5v-qdrant ingest --engine ray``) is the entry point.
"""

from __future__ import annotations

import warnings

from .ingest.ray_data import (
    REST_MAX_REQUEST_BYTES,
    QdrantDatasink,
    RayEncoderActor,
    estimate_point_bytes,
    ingest_ray,
    plan_files,
)

__all__ = [
    "REST_MAX_REQUEST_BYTES",
    "QdrantDatasink",
    "RayEncoderActor",
    "estimate_point_bytes",
    "ingest_ray",
    "plan_files",
]

warnings.warn(
    "e5v_qdrant.ray_engine is deprecated: import ingest_ray, QdrantDatasink, … from e5v_qdrant.ingest.ray_data",
    DeprecationWarning,
    stacklevel=2,
)
