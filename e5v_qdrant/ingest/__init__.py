"""Ingestion: one driver, two executors.

- ``driver``: ``ingest(config, encoder, store)``, the entry point (checks the paths, picks the executor);
- ``run``: ``IngestRun``, what a run owns whatever executes it: compatibility checks, collection creation, bulk load,
  re-stamps, stale deletes, ``sync``;
- ``local``: the threads executor (read -> embed -> write through bounded queues; Ctrl-C finishes the write in
  progress, ``IngestInterrupted`` carries the report);
- ``ray_data``: the Ray Data executor (optional dependency `ray[data]`; imported only for ``engine="ray"``).
"""

from ..pipeline import IngestReport
from .driver import ingest
from .local import IngestInterrupted
from .run import IngestRun, check_paths

__all__ = ["IngestReport", "IngestInterrupted", "IngestRun", "ingest", "check_paths"]
