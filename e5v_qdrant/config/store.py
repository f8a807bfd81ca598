"""The store options: where vectors go and how collections are created, written and searched."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import E5VConfigError
from ..options import Options, at_least_1, option

__all__ = ["CREATE", "WRITE", "SEARCH", "StoreConfig"]

#: ``scope`` of the ``StoreConfig`` options used only to create collections, to write points, or to search; a command
#: offers the scopes it uses (``add_arguments(..., scopes=...)``); options without one (where the store is, how to
#: reach it) are offered by every command that opens a store.
CREATE, WRITE, SEARCH = "create", "write", "search"


@dataclass
class StoreConfig(Options):
    """Where vectors go: embedded Qdrant in a folder (default) or a Qdrant server / cluster by URL."""

    qdrant_path: str | None = option(
        None,
        help="folder of the embedded Qdrant store; default ./qdrant_data when no --qdrant-url is given",
    )
    qdrant_url: str | None = option(None, help="URL of a Qdrant server or cluster, e.g. http://localhost:6333")
    embedded: str | None = option(
        None,
        help="engine of the embedded store folder: edge = Qdrant Edge (the Qdrant engine in-process: HNSW, "
        "quantization, mmap; scales past 100k points) or local = qdrant-client local mode (pure Python, all in RAM); "
        "default: the engine of an existing folder (never converted), edge for a new one",
        choices=("edge", "local"),
        scope=CREATE,
    )
    api_key_env: str = option(
        "QDRANT_API_KEY",
        help="name of the environment variable holding the Qdrant server's API key (keys are never taken from argv)",
    )
    prefer_grpc: bool = option(False, help="talk gRPC to the server (port 6334) instead of REST")
    timeout: float = option(60.0, help="seconds before a Qdrant request times out")
    write_batch_size: int = option(
        64, help="points per upsert request (Qdrant advises 64-256 points, under ~5 MB)", scope=WRITE, check=at_least_1
    )
    retries: int = option(
        6, help="attempts per Qdrant request on transient errors (timeouts, resets, 5xx, lock contention)"
    )
    retry_wait: float = option(0.5, help="first back-off in seconds between retries; doubles each attempt (max 30 s)")
    on_disk_vectors: bool = option(
        False, help="server and Edge: keep vectors on disk (memmap) instead of RAM; ignored by local mode", scope=CREATE
    )
    vector_datatype: str = option(
        "float32",
        help="server and Edge: stored vector precision (float16 halves memory); ignored by local mode",
        choices=("float32", "float16"),
        scope=CREATE,
    )
    quantization: str = option(
        "none",
        help="server and Edge: int8 = scalar quantization (4x smaller), turbo4 = TurboQuant 4 bits per dimension (8x), "
        "binary = 1 bit per dimension (32x), kept in RAM and rescored with the original vectors; ignored by local mode",
        choices=("none", "int8", "turbo4", "binary"),
        scope=CREATE,
    )
    quantized_on_disk: bool = option(
        False,
        help="with quantization: leave the quantized vectors in their memory-mapped files (the page cache keeps the "
        "ones searches touch) instead of reading them all into RAM when the store opens; reopening 1M turbo4 points "
        "then takes seconds instead of reading 1.9 GiB (README, 'A million points')",
        scope=CREATE,
    )
    shard_number: int | None = option(
        None, help="server/cluster only: shards of a new collection (default: server's)", scope=CREATE
    )
    replication_factor: int | None = option(
        None, help="server/cluster only: replicas of each shard of a new collection", scope=CREATE
    )
    write_consistency_factor: int | None = option(
        None,
        help="server/cluster only: replicas that must acknowledge each write of a new collection (<= replication_factor)",
        scope=CREATE,
    )
    rescore: bool = option(
        True,
        help="with quantization: re-rank the quantized candidates with the original vectors at search time",
        scope=SEARCH,
    )
    oversampling: float = option(
        2.0, help="with quantization: fetch top_k x this many quantized candidates before rescoring", scope=SEARCH
    )
    #: HNSW (server and Edge); None = the store's measured defaults (store/hnsw.py), recorded in each collection
    hnsw_m: int | None = option(None, help="HNSW edges per node of a new collection", scope=CREATE, check=at_least_1)
    hnsw_ef_construct: int | None = option(None, help="HNSW build candidates", scope=CREATE, check=at_least_1)
    hnsw_ef: int | None = option(None, help="HNSW search candidates (recall vs speed)", scope=SEARCH, check=at_least_1)
    write_batch_bytes: int = option(
        4 * 1024 * 1024,
        help="most estimated bytes per upsert request of the Ray engine's writer (REST servers refuse bodies over 32 MiB)",
        scope=WRITE,
    )

    def validate(self) -> None:
        if self.qdrant_path and self.qdrant_url:
            raise E5VConfigError("give either --qdrant-path (embedded store) or --qdrant-url (server), not both")
        if self.timeout <= 0:
            raise E5VConfigError(f"timeout must be > 0, got {self.timeout}")
        if self.retries < 1:
            raise E5VConfigError(f"retries must be >= 1 (1 = no retry), got {self.retries}")
        if self.retry_wait < 0:
            raise E5VConfigError(f"retry_wait must be >= 0, got {self.retry_wait}")
        if self.oversampling < 1:
            raise E5VConfigError(f"oversampling must be >= 1, got {self.oversampling}")
        if self.write_batch_bytes < 1024:
            raise E5VConfigError(f"write_batch_bytes must be >= 1024, got {self.write_batch_bytes}")
        if (
            self.write_consistency_factor is not None
            and self.replication_factor is not None
            and self.write_consistency_factor > self.replication_factor
        ):
            raise E5VConfigError(
                f"write_consistency_factor ({self.write_consistency_factor}) cannot exceed replication_factor "
                f"({self.replication_factor}): a write would wait for replicas that do not exist"
            )
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise E5VConfigError(f"{name} must be >= 1, got {value}")

    @property
    def api_key(self) -> str | None:
        """The API key read from ``api_key_env`` (never logged)."""
        return os.environ.get(self.api_key_env) or None

    @property
    def resolved_path(self) -> str | None:
        """The embedded store folder, or ``None`` for a server."""
        if self.qdrant_url:
            return None
        return self.qdrant_path or "qdrant_data"
