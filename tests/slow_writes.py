"""Run the ``e5v-qdrant`` CLI with every ``QdrantStore.upsert`` delayed, so crash and interrupt tests can stop a run
mid-way (the delay lives here, not in the package)::

    python tests/slow_writes.py SECONDS ingest FOLDER --collection docs ...
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from e5v_qdrant.cli import main
from e5v_qdrant.store import QdrantStore

#: The command prefix: ``[*command(0.4), "ingest", ...]``.
SCRIPT = str(Path(__file__).resolve())


def command(delay: float) -> list[str]:
    return [sys.executable, SCRIPT, str(delay)]


def slow_ingest(root, qd, model, *extra, delay: float = 0.4) -> list[str]:
    """``e5v-qdrant ingest ROOT`` into collection ``docs`` of the store ``qd``, 2 points a write, each write ``delay``
    seconds late (with the tests' common options): a run that takes a while to stop mid-way."""
    from helpers import COMMON

    args = ["ingest", root, "--collection", "docs", "--qdrant-path", qd, "--model", model, *COMMON]
    return [*command(delay), *map(str, args), "--write-batch-size", "2", "--batch-size", "2", *map(str, extra)]


def slow_down_writes(delay: float) -> None:
    upsert = QdrantStore.upsert

    def slow_upsert(self, collection, points):
        time.sleep(delay)
        return upsert(self, collection, points)

    QdrantStore.upsert = slow_upsert


if __name__ == "__main__":
    slow_down_writes(float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
