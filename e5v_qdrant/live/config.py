"""``LiveConfig``: what `e5v-qdrant serve` keeps in sync (``--watch``) and where ingest jobs may read
(``--ingest-root``); the ingest options of the watched folders are ``config.IngestConfig``'s."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..collection_names import check_collection_name
from ..errors import E5VConfigError
from ..options import Options, option

__all__ = ["LiveConfig", "SERVE_INGEST_EXCLUDED"]

#: ``IngestConfig`` options `serve` does not offer for its --watch folders: the collection is ``LiveConfig``'s, a live
#: sync always deletes what vanished, writes with the index on and runs in the server's process.
SERVE_INGEST_EXCLUDED = ("collection", "sync", "verify", "bulk_load", "queue_size", "engine", "ray_address",
                         "replicas", "gpus_per_replica", "write_concurrency")  # fmt: skip


@dataclass
class LiveConfig(Options):
    """Folders a server keeps a collection in step with, and the roots its ``POST /v1/ingest`` jobs may read."""

    watch: list[str] = option(
        default_factory=list,
        help="keep --collection in step with this folder: catch up at start, then follow file events (repeatable; "
        "every ingest option applies)",
        metavar="FOLDER",
        repeatable=True,
    )
    collection: str | None = option(None, help="collection the --watch folders are synced into", metavar="NAME")
    ingest_root: list[str] = option(
        default_factory=list,
        help="folder under which POST /v1/ingest jobs (and `e5v-qdrant ingest` through this server) may read "
        "(repeatable; default: the --watch folders; no other path of the server's machine is ever read)",
        metavar="FOLDER",
        repeatable=True,
    )
    watch_quiet_ms: float = option(
        500.0, help="sync a change once the folder has had no event for this long (a burst of writes is one change)"
    )
    watch_polling: bool = option(
        False, help="poll the folders instead of using file-system events (network mounts, some containers)"
    )

    def validate(self) -> None:
        if self.watch and not self.collection:
            raise E5VConfigError("--watch needs --collection NAME: the collection the folders are synced into")
        if self.collection:
            check_collection_name(self.collection)
        for folder in self.watch:
            if not os.path.isdir(folder):
                raise E5VConfigError(f"--watch {folder}: not a folder (give an existing folder to keep in sync)")
        if self.watch_quiet_ms < 0:
            raise E5VConfigError(f"watch_quiet_ms must be >= 0, got {self.watch_quiet_ms}")

    @property
    def roots(self) -> list[str]:
        """Absolute real paths under which ingest jobs may read: the ``--ingest-root`` folders, else the watched
        ones."""
        return [os.path.realpath(p) for p in (self.ingest_root or self.watch)]
