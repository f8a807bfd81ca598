"""Bulk load: defer HNSW index building while a large write runs, restore it after (one index build)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .hnsw import HNSW_M
from .qdrant_store import QdrantStore
from .retry import StoreError

__all__ = ["bulk_load"]

logger = logging.getLogger("e5v_qdrant.store")


@contextmanager
def bulk_load(store: QdrantStore, collection: str, *, enabled: bool = True) -> Iterator[None]:
    """Defer HNSW index building on ``collection`` while the block runs; restore its HNSW settings after, even on error.

    Sets ``hnsw_config.m = 0`` (Qdrant then keeps incoming segments unindexed) and, on exit, sets ``m`` and
    ``payload_m`` back to the values read before, which makes the server build the index once over all the points.
    On Qdrant Edge, ``m = 0`` defers the optimizer and restoring ``m`` builds the index once, in the process.
    A no-op for local mode (it has no HNSW index) or when ``enabled`` is false. If the restore itself fails
    the error is raised (after the block's own error, if any, is logged) with the exact setting to re-apply.

    Example:
        >>> with bulk_load(store, "docs"):                      # doctest: +SKIP
        ...     ingest(config, encoder, store)
    """
    if not enabled or not store.honours_options:
        yield
        return
    from qdrant_client import models

    physical = store.resolve(collection) or collection
    info = store.call(f"reading collection {physical!r}", store.client.get_collection, physical)
    hnsw = info.config.hnsw_config
    original = models.HnswConfigDiff(m=hnsw.m, payload_m=hnsw.payload_m)
    if hnsw.m == 0:  # already deferred (a killed bulk run): restore the store's m when done
        m = store.config.hnsw_m if store.config.hnsw_m is not None else HNSW_M
        original = models.HnswConfigDiff(m=m, payload_m=hnsw.payload_m)
        logger.warning(
            "collection %s already had hnsw m=0 (an earlier bulk load did not finish); restoring m=%s after",
            physical,
            HNSW_M,
        )
    store.call(
        f"deferring HNSW indexing on {physical!r}",
        store.client.update_collection,
        collection_name=physical,
        hnsw_config=models.HnswConfigDiff(m=0),
    )
    logger.info("bulk load: HNSW indexing deferred on %s (m=0); will restore m=%s", physical, original.m)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        try:
            store.call(
                f"restoring HNSW settings on {physical!r}",
                store.client.update_collection,
                collection_name=physical,
                hnsw_config=original,
            )
            logger.info("bulk load: HNSW settings restored on %s (m=%s)", physical, original.m)
        except Exception as exc:
            message = (
                f"bulk load: could not restore HNSW settings on {physical!r} ({exc}); the collection is left unindexed. "
                f"Re-apply them with client.update_collection({physical!r}, hnsw_config=HnswConfigDiff(m={original.m}))"
            )
            if failed:
                logger.error(message)
            else:
                raise StoreError(message) from exc
