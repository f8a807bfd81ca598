"""Deprecated: Qdrant Edge moved into the store package (``e5v_qdrant.store.edge``); import from ``e5v_qdrant.store``.

This module only re-exports the old public names (``read_manifest`` / ``write_manifest`` are now
``read_store_manifest`` / ``write_store_manifest``) and will be removed in a later release.
"""

from __future__ import annotations

import warnings

from .store.edge import (
    LOCK_FILE,
    MANIFEST,
    EdgeClient,
    EdgeNotInstalledError,
    detect_engine,
    read_store_manifest,
    write_store_manifest,
)

__all__ = [
    "MANIFEST",
    "LOCK_FILE",
    "EdgeClient",
    "EdgeNotInstalledError",
    "detect_engine",
    "read_manifest",
    "write_manifest",
]

#: Deprecated names of ``read_store_manifest`` / ``write_store_manifest``.
read_manifest = read_store_manifest
write_manifest = write_store_manifest

warnings.warn(
    "e5v_qdrant.edge is deprecated: import EdgeClient, detect_engine, … from e5v_qdrant.store",
    DeprecationWarning,
    stacklevel=2,
)
