"""Ingestion stages shared by the local engine (``ingest``), the Ray engine (``ray_engine``) and ``reingest``.

One place for each rule, so the engines cannot drift apart:

- ``plan``: a read ``Document`` against the ids stored for its source → the ``FileWork`` to do (or ``None``);
- ``decode_images``: image bytes → validated ``PIL`` images, just before embedding;
- ``embed_points``: items → ``PointStruct``s (``make_point`` is the only place a point is built: vector name,
  payload, ``model_fingerprint``);
- ``vanished_sources``: the stored sources ``sync`` deletes;
- ``IngestReport``: the outcome both engines return.

Point ids and the LlamaIndex payload of an item are made in ``sources`` (``store.point_id``), from the content only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import E5VImageError, E5VInputError
from .media import load_image
from .sources import Document, Item, SkippedInput
from .store import VECTOR_NAME

__all__ = [
    "FileWork",
    "IngestReport",
    "plan",
    "decode_images",
    "make_point",
    "embed_points",
    "under",
    "vanished_sources",
]

#: ``skip(source, reason)``: how a stage reports a file it gives up on.
Skip = Callable[[str, str], None]


@dataclass
class FileWork:
    """What one changed file needs: items to embed and write, then stale ids to delete."""

    source: str
    status: str  # "new" | "replaced" | "deleted"
    items: list[Item]
    stale_ids: set[str]
    failed: bool = False


@dataclass
class IngestReport:
    """Counts and per-input outcomes of one ingest run (``to_dict`` is the ``--json`` / ``--report`` format).

    File counts: ``discovered`` (supported files found), ``new``, ``unchanged``, ``replaced``, ``deleted`` (vanished
    sources removed by ``sync``), ``skipped`` (bad inputs, listed in ``skipped_inputs``). Point counts: ``embedded``
    (vectors computed), ``points_written``, ``points_deleted``.
    """

    collection: str
    physical_collection: str = ""
    model_fingerprint: str = ""
    discovered: int = 0
    new: int = 0
    unchanged: int = 0
    replaced: int = 0
    deleted: int = 0
    skipped: int = 0
    embedded: int = 0
    points_written: int = 0
    points_deleted: int = 0
    seconds: float = 0.0
    skipped_inputs: list[SkippedInput] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every input was ingested, 1 when some were skipped."""
        return 1 if self.skipped_inputs else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "physical_collection": self.physical_collection,
            "model_fingerprint": self.model_fingerprint,
            "counts": {
                k: getattr(self, k)
                for k in (
                    "discovered",
                    "new",
                    "unchanged",
                    "replaced",
                    "deleted",
                    "skipped",
                    "embedded",
                    "points_written",
                    "points_deleted",
                )
            },
            "seconds": round(self.seconds, 3),
            "skipped_inputs": [s.to_dict() for s in self.skipped_inputs],
            "warnings": self.warnings,
        }


def plan(doc: Document, have: set[str]) -> FileWork | None:
    """The work that makes the stored ids of ``doc.source`` (``have``) equal the ids ``doc`` yields.

    Returns:
        ``None`` when they are equal (unchanged), else a ``FileWork``: the items whose ids are missing and the stored
        ids the file no longer yields (deleted only after the new points are written).
    """
    expected = {item.id for item in doc.items}
    if expected == have:
        return None
    todo = [item for item in doc.items if item.id not in have]
    return FileWork(doc.source, "replaced" if have else "new", todo, have - expected)


def decode_images(work: FileWork, max_pixels: int | None, skip: Skip) -> bool:
    """Decode and validate ``work``'s image bytes in place; ``False`` (and ``skip`` called) if one is unusable."""
    for item in work.items:
        if item.modality == "image" and isinstance(item.content, (bytes, bytearray)):
            try:
                item.content = load_image(item.content, max_pixels=max_pixels, name=work.source)
            except E5VImageError as exc:
                work.failed = True
                skip(work.source, exc.reason)
                return False
    return True


def make_point(point_id: str, vector, payload: dict[str, Any], fingerprint_id: str | None = None):
    """The Qdrant point of one embedding: ``vector`` under ``store.VECTOR_NAME``, the payload (with
    ``model_fingerprint`` set when given)."""
    from qdrant_client import models

    if fingerprint_id is not None:
        payload = {**payload, "model_fingerprint": fingerprint_id}
    values = vector.tolist() if hasattr(vector, "tolist") else list(vector)
    return models.PointStruct(id=point_id, vector={VECTOR_NAME: values}, payload=payload)


def embed_points(
    encoder, pending: list[tuple[FileWork, Item]], fingerprint_id: str, skip: Skip | None = None
) -> list[Any]:
    """Embed a batch (texts and images in one call each) into points.

    With ``skip``, an item the encoder refuses (``E5VInputError``) marks its file failed and reports it, and the rest
    of the batch is embedded one by one; without, the error propagates.
    """
    points = []
    for modality in ("text", "image"):
        group = [(w, it) for w, it in pending if it.modality == modality and not w.failed]
        if not group:
            continue
        embed = encoder.embed_texts if modality == "text" else encoder.embed_images
        try:
            vectors = embed([it.content for _, it in group])
        except E5VInputError:
            if skip is None:
                raise
            vectors = None
        if vectors is None:  # find the culprit(s) one by one
            vectors = []
            for work, item in group:
                try:
                    vectors.append(embed([item.content])[0] if not work.failed else None)
                except E5VInputError as exc:
                    work.failed = True
                    skip(work.source, f"cannot embed: {exc.reason}")
                    vectors.append(None)
        for (work, item), vector in zip(group, vectors, strict=True):
            if vector is not None and not work.failed:
                points.append(make_point(item.id, vector, item.payload, fingerprint_id))
    return points


def under(source: str, roots: Iterable[str]) -> bool:
    """Whether ``source`` is one of ``roots`` or inside one of them (absolute paths)."""
    return any(source == root or source.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def vanished_sources(stored: Iterable[str], paths: Iterable[str | os.PathLike], seen: set[str]) -> list[str]:
    """Stored sources under ``paths`` that this run neither saw nor skipped and that no longer exist (``sync``)."""
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    return sorted(s for s in stored if under(s, roots) and s not in seen and not os.path.exists(s))
