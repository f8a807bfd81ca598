"""``ingest``: the one entry point of an ingestion run; it checks the paths and hands the run to an executor.

Both executors build their run on ``ingest.run.IngestRun`` (compatibility, collection creation, bulk load, re-stamps,
deletes, ``sync``) and ``pipeline`` (planning, embedding into points, the report), so every ingest option means the
same on both and both write the same points.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import EncoderConfig, IngestConfig
from ..pipeline import IngestReport
from ..store import QdrantStore
from .local import ingest_local
from .run import check_paths

__all__ = ["ingest"]


def ingest(
    config: IngestConfig,
    encoder,
    store: QdrantStore,
    *,
    progress: bool | None = None,
    on_file: Callable[[str, str], None] | None = None,
) -> IngestReport:
    """Ingest ``config.paths`` into ``config.collection`` (created and aliased on first use).

    Args:
        config: paths, collection, chunking, sync, ``engine`` (``local`` threads or ``ray``), ``bulk_load``…
        encoder: an ``E5VEncoder`` (anything with ``embed_texts``, ``embed_images``, ``dim``, ``fingerprint``,
            ``config``), or an ``EncoderConfig`` to load one from (on first use; on the Ray workers only).
        store: the open ``QdrantStore``.
        progress: show progress bars (``None`` = only on a terminal).
        on_file: called with (source, outcome) after each file's outcome is known (local executor).

    Returns:
        The run's ``IngestReport``.

    Raises:
        E5VInputError: an input path does not exist (nothing is loaded or created).
        CollectionMismatchError: the collection serves another model.
        StoreError: Qdrant failed permanently (or transient errors outlasted the retries).
        IngestInterrupted: a ``KeyboardInterrupt`` arrived while files were processed (local executor); the write in
            progress was finished and the exception carries the report so far. ``KeyboardInterrupt("SIGTERM")`` is
            reported as SIGTERM.

    Example:
        >>> report = ingest(IngestConfig(collection="docs", paths=["./docs"]), E5VEncoder(), QdrantStore())  # doctest: +SKIP

    With ``config.bulk_load``, HNSW building is deferred from the collection's creation (or first write) to the end
    of the run, on a server and on Qdrant Edge (``IngestRun``).
    """
    check_paths(config.paths)
    if config.engine == "ray":
        from .ray_data import ingest_ray

        if isinstance(encoder, EncoderConfig):  # the model is loaded on the Ray workers only
            return ingest_ray(config, encoder, store, progress=progress)
        return ingest_ray(config, encoder.config, store, encoder=encoder, progress=progress)
    return ingest_local(config, encoder, store, progress=progress, on_file=on_file)
