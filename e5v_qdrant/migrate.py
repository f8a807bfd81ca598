"""Copy a collection between stores: embedded Edge or local mode -> server, server -> embedded, local <-> Edge.

``migrate(name, source, target)`` copies the physical collection behind ``name`` — ids, vectors, payloads and the
model-fingerprint stamp — into a physical collection of the same name in the target, created with the target's
storage options (``collection_create_kwargs``), then points the alias ``name`` at it **last**, so readers of the target
see either nothing or the complete collection. It is resumable and idempotent: points already in the target with the
same payload are skipped (ids are deterministic), so a killed run continues where it stopped and a second run writes
nothing. A target collection stamped with another model fingerprint is refused.

Example:
    >>> with QdrantStore(StoreConfig(qdrant_path="qdrant_data")) as src, \\
    ...      QdrantStore(StoreConfig(qdrant_url="http://localhost:6333")) as dst:      # doctest: +SKIP
    ...     migrate("docs", src, dst)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .identity import stamp_id
from .store import CollectionMismatchError, CollectionStamp, QdrantStore, StoreError

__all__ = ["MigrationReport", "plan_migration", "migrate"]

logger = logging.getLogger(__name__)


@dataclass
class MigrationReport:
    """What a migration did (or would do, from ``plan_migration``)."""

    collection: str
    physical: str
    source_points: int
    already_there: int
    copied: int = 0
    created: bool = False
    alias_pointed: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _physical_and_stamp(source: QdrantStore, name: str) -> tuple[str, CollectionStamp | None]:
    physical = source.resolve(name)
    if physical is None:
        raise StoreError(f"collection {name!r} does not exist in the source store (see `e5v-qdrant collections`)")
    return physical, source.stamp(physical)


def plan_migration(name: str, source: QdrantStore, target: QdrantStore) -> MigrationReport:
    """How much of ``name`` is already in ``target`` (no writes).

    Raises:
        StoreError: ``name`` is not in the source.
        CollectionMismatchError: the target collection holds another model's vectors.
    """
    physical, stamp = _physical_and_stamp(source, name)
    count = source.count(physical)
    if not target.exists(physical):
        return MigrationReport(name, physical, count, 0)
    other = target.stamp(physical)
    mine = (stamp_id(stamp.fingerprint, stamp.encoder) if stamp else None), source.dimension(physical)
    theirs = (stamp_id(other.fingerprint, other.encoder) if other else None), target.dimension(physical)
    if mine != theirs:
        raise CollectionMismatchError(
            f"target collection {physical!r} holds vectors of fingerprint/dimension {theirs}, the source {mine}: "
            f"delete it in the target or migrate to another store"
        )
    return MigrationReport(name, physical, count, target.count(physical))


def migrate(
    name: str, source: QdrantStore, target: QdrantStore, *, batch_size: int = 256, progress: bool = True
) -> MigrationReport:
    """Copy collection ``name`` (alias or plain) from ``source`` to ``target`` and point the alias there last.

    Returns:
        The report: points in the source, already present in the target, copied now.

    Raises:
        StoreError / CollectionMismatchError: as ``plan_migration``.
    """
    from qdrant_client import models
    from tqdm.auto import tqdm

    report = plan_migration(name, source, target)
    physical = report.physical
    stamp = source.stamp(physical)
    if not target.exists(physical):
        if stamp is None:
            raise StoreError(
                f"collection {physical!r} has no e5v-qdrant stamp (not made by e5v-qdrant): nothing says how to create "
                f"its copy; copy it with Qdrant's own snapshot tools instead"
            )
        target.create_stamped(physical, stamp, source.dimension(physical))
        report.created = True
    bar = tqdm(total=report.source_points, desc=f"migrate {name}", unit="pt", disable=not progress)
    batch: list = []

    def flush() -> None:
        present = {str(r.id): r.payload for r in target.retrieve(physical, [str(r.id) for r in batch])}
        todo = [r for r in batch if present.get(str(r.id)) != r.payload]
        if todo:
            target.upsert(physical, [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in todo])
        report.copied += len(todo)
        bar.update(len(batch))
        batch.clear()

    for record in source.scroll(physical, with_payload=True, with_vectors=True, page_size=batch_size):
        batch.append(record)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    if name != physical:
        target.point_alias(name, physical)
        report.alias_pointed = True
    logger.info("migrated %s (%s): %d points, %d copied now", name, physical, report.source_points, report.copied)
    return report
