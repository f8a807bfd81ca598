"""Re-embed a collection with another model (e.g. a fine-tuned adapter) and switch its alias over atomically.

``reingest`` builds a new physical collection ``ALIAS-e5v-<new fingerprint>`` next to the one the alias serves,
re-embeds every stored point from its source — text from the payload, images re-read from their path and checked
against the stored content hash — with the same id and payload (only ``model_fingerprint`` changes), verifies that the
new collection holds exactly the expected ids, then points the alias at it in one ``update_collection_aliases`` call.
Searches through the alias see the old collection until that call and the new one after it, never a mix.

``sparse_encoder`` switches a hybrid collection's keyword encoder (or makes a dense collection hybrid): when the
dense vectors stay the same (the same model identity), only the keyword side is computed — dense vectors are copied
from the old collection and the model is not loaded (pass an ``EncoderConfig``).

Resumable: the target collection's name depends only on the alias, the new model and the keyword encoder, so a re-run after a crash
continues it, skipping points already written. Image sources that vanished, moved or changed are reported and the swap
is refused unless ``allow_missing`` (then those points are left out of the new collection, and listed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .config import EncoderConfig
from .errors import E5VConfigError, E5VImageError, E5VInputError
from .identity import stamp_id
from .media import load_image
from .pipeline import EncoderFacts, FileWork, embed_points
from .points import CONTENT_HASH, NODE_CONTENT, PAGE, SOURCE, dense_vector, make_point, point_modality
from .sources import PDF_SUFFIXES, Item, render_pdf_page
from .sparse import encoder_from_spec, spec_named
from .store import CollectionMismatchError, QdrantStore, StoreError, physical_name
from .store import bulk_load as store_bulk_load

__all__ = ["ReingestInterrupted", "ReingestReport", "reingest"]

logger = logging.getLogger(__name__)


@dataclass
class ReingestReport:
    """Outcome of a re-ingest (``to_dict`` is the ``--json`` format)."""

    alias: str
    source_collection: str = ""
    target_collection: str = ""
    old_fingerprint: str | None = None
    new_fingerprint: str = ""
    points: int = 0
    embedded: int = 0
    resumed: int = 0
    removed_stale: int = 0
    swapped: bool = False
    dropped_old: list[str] = field(default_factory=list)
    already_current: bool = False
    #: only the keyword (sparse) side was computed; dense vectors were copied (no model loaded)
    sparse_only: bool = False
    problems: list[dict[str, str]] = field(default_factory=list)
    #: the signal that stopped the run (``SIGINT`` / ``SIGTERM``), else ""; a re-run resumes
    interrupted: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 swapped (or already current) with nothing missing; 1 problems were found (swap refused or allowed);
        128 + the signal number when interrupted (130 Ctrl-C, 143 SIGTERM)."""
        if self.interrupted:
            return 128 + int(getattr(signal, self.interrupted, signal.SIGINT))
        return 1 if self.problems else 0

    def summary(self) -> str:
        """A few lines for people: what moved where, whether the alias switched, dropped collections, problems."""
        if self.interrupted:
            return (
                f"{self.alias}: interrupted ({self.interrupted}) after writing {self.embedded} points into "
                f"{self.target_collection} ({self.resumed} from an earlier run); the alias still serves "
                f"{self.source_collection}. Run the same command again to resume (points already written are kept)."
            )
        if self.already_current:
            lines = [f"{self.alias} -> {self.target_collection} already serves this model ({self.points} points)"]
        else:
            lines = [
                f"{self.alias}: {self.source_collection} -> {self.target_collection}: {self.points} points, "
                f"{self.embedded} {'keyword vectors computed (dense copied)' if self.sparse_only else 're-embedded'}, "
                f"{self.resumed} from an earlier run",
                "alias swapped" if self.swapped else "alias NOT swapped (see problems; --allow-missing to swap anyway)",
            ]
        lines += [f"dropped old collection {name}" for name in self.dropped_old]
        lines += [f"problem: {p['source']}: {p['reason']}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = {
            k: getattr(self, k)
            for k in (
                "alias",
                "source_collection",
                "target_collection",
                "old_fingerprint",
                "new_fingerprint",
                "points",
                "embedded",
                "resumed",
                "removed_stale",
                "swapped",
                "dropped_old",
                "already_current",
                "sparse_only",
                "problems",
            )
        }
        data["interrupted"] = self.interrupted or None
        data["seconds"] = round(self.seconds, 3)
        return data


class ReingestInterrupted(KeyboardInterrupt):
    """A re-ingest stopped by ``KeyboardInterrupt`` (Ctrl-C; the CLI turns SIGTERM into one too). ``report`` counts
    what was written; the alias was not touched and the same call resumes."""

    def __init__(self, report: ReingestReport):
        super().__init__(report.interrupted)
        self.report = report


@contextmanager
def _interrupts(report: ReingestReport):
    """Turn Ctrl-C / SIGTERM (``KeyboardInterrupt("SIGTERM")`` from the CLI) into ``ReingestInterrupted`` with the
    report so far. Points written are kept (ids are deterministic, upserts idempotent): a re-run resumes."""
    try:
        yield
    except KeyboardInterrupt as exc:
        report.interrupted = "SIGTERM" if str(exc) == "SIGTERM" else "SIGINT"
        raise ReingestInterrupted(report) from exc


def _text_of(payload: dict[str, Any]) -> str | None:
    content = payload.get(NODE_CONTENT)
    if isinstance(content, str):
        try:
            text = json.loads(content).get("text")
        except ValueError:
            return None
        return text if isinstance(text, str) else None
    return payload.get("text") if isinstance(payload.get("text"), str) else None


def _image_problem(payload: dict[str, Any], max_pixels) -> tuple[Any, str | None]:
    """(decoded image, None) or (None, reason) for an image point's source."""
    source = payload.get(SOURCE)
    if not source:
        return None, "no source path in the payload"
    try:
        if payload.get(PAGE) is not None and source.lower().endswith(PDF_SUFFIXES):  # a rendered PDF page
            if not os.path.exists(source):
                raise FileNotFoundError(source)
            data = render_pdf_page(source, int(payload[PAGE]))
        else:
            with open(source, "rb") as fh:
                data = fh.read()
    except FileNotFoundError:
        return None, "missing: the source file no longer exists (moved or deleted)"
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    except E5VInputError as exc:
        return None, f"unreadable: {exc.reason}"
    if payload.get(CONTENT_HASH) and hashlib.sha256(data).hexdigest() != payload[CONTENT_HASH]:
        return None, "changed: the file's content hash differs from the stored one (re-run `ingest` first)"
    try:
        return load_image(data, max_pixels=max_pixels, name=source), None
    except E5VImageError as exc:
        return None, f"unreadable: {exc.reason}"


def reingest(
    alias: str,
    encoder,
    store: QdrantStore,
    *,
    sparse_encoder: str | None = None,
    bulk_load: bool = False,
    drop_old: bool = False,
    allow_missing: bool = False,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> ReingestReport:
    """Re-embed the collection behind ``alias`` with ``encoder`` and swap the alias to the result.

    Args:
        alias: the collection name users pass (an alias created by ``ingest``).
        encoder: the new ``E5VEncoder`` (e.g. ``E5VEncoder(model, adapter="out/adapter")``), or its ``EncoderConfig``
            (the model is then loaded only if dense vectors change).
        store: the open ``QdrantStore``.
        sparse_encoder: the keyword encoder of the new collection (``sparse.SPARSE_ENCODERS``; makes it hybrid);
            ``None`` keeps the old collection's (hybrid or not).
        bulk_load: server and Edge: build the new collection's HNSW index once after all points are written
            (``store.bulk_load``), not while writing; it is built before the alias swaps.
        drop_old: delete the previously served physical collection(s) of this alias after the swap.
        allow_missing: swap even if some image sources are missing or changed (their points are left out).
        batch_size: points per embedding call (default: the store's write batch size).
        progress: tqdm bar (``None`` = only on a terminal).

    Returns:
        The ``ReingestReport``; ``swapped`` tells whether the alias now serves the new collection.

    Raises:
        ReingestInterrupted: Ctrl-C (or SIGTERM through the CLI) arrived; carries the report; the alias is untouched.
        E5VConfigError: ``alias`` does not exist or is a plain collection (not an alias), or an unknown
            ``sparse_encoder``.
        StoreError: Qdrant failed, or the verification of the new collection failed.

    Example:
        >>> reingest("docs", EncoderConfig(), store, sparse_encoder="qdrant-bm25")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    loaded = None if isinstance(encoder, EncoderConfig) else encoder
    facts = EncoderFacts.of(encoder) if loaded is None else loaded
    fingerprint = facts.fingerprint
    report = ReingestReport(alias=alias, new_fingerprint=fingerprint["id"])
    aliases = store.aliases()
    if alias not in aliases:
        if store.resolve(alias) is not None:
            raise E5VConfigError(
                f"{alias!r} is a plain collection, not an alias made by `e5v-qdrant ingest`; an alias cannot replace "
                f"it atomically. Ingest into a new --collection instead."
            )
        raise E5VConfigError(
            f"collection {alias!r} does not exist; create it with `e5v-qdrant ingest PATH --collection {alias}`"
        )
    source = aliases[alias]
    stamp = store.stamp(source)
    report.source_collection = source
    report.old_fingerprint = stamp.fingerprint.get("id") if stamp else None
    old_sparse = stamp.sparse if stamp else None
    new_sparse = spec_named(sparse_encoder) if sparse_encoder is not None else old_sparse
    same_dense = source == physical_name(alias, fingerprint["id"], old_sparse) or (
        stamp is not None and stamp_id(stamp.fingerprint, stamp.encoder) == fingerprint["id"]
    )  # (a collection stamped before issue 27 may be named by its old id)
    target = physical_name(alias, fingerprint["id"], new_sparse)
    if target == source and new_sparse != old_sparse:  # a dense collection made hybrid with the default encoder
        target = f"{target}-{new_sparse['name']}"
    report.target_collection = target
    report.sparse_only = same_dense and new_sparse != old_sparse

    if same_dense and new_sparse == old_sparse:
        report.already_current = True
        report.points = store.count(source)
        report.target_collection = source
        if drop_old:
            report.dropped_old = _drop_others(store, alias, keep=source)
        report.seconds = time.perf_counter() - started
        return report

    if store.exists(target):
        store.check_compatible(alias, target, facts)
        if store.sparse_spec(target) != new_sparse:
            raise CollectionMismatchError(
                f"{target!r} exists with other keyword vectors than asked for (an older recipe version?); delete it "
                f"(`e5v-qdrant collections`) or reingest without --sparse-encoder"
            )
        logger.info("resuming re-ingest into existing %s", target)
    else:
        store.create_physical(target, facts, alias=alias, sparse=new_sparse)
    keywords = encoder_from_spec(new_sparse) if new_sparse else None
    done = {str(r.id) for r in store.scroll(target, with_payload=False, page_size=1024)}
    report.resumed = len(done)

    size = batch_size or store.config.write_batch_size
    max_pixels = facts.config.max_image_pixels
    expected: set[str] = set()
    pending: list[tuple[Any, str, Any]] = []  # (record, modality, content)
    bar = tqdm(
        total=store.count(source),
        desc="re-embedding",
        unit="point",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )

    def flush() -> None:
        nonlocal loaded
        if not pending:
            return
        if report.sparse_only:  # same dense vectors: copy them, compute only the keyword side
            points = [
                make_point(
                    str(r.id),
                    dense_vector(r),
                    dict(r.payload or {}),
                    sparse=keywords.encode_document(c) if keywords is not None and m == "text" else None,
                )
                for r, m, c in pending
            ]
            store.upsert(target, points)
            report.embedded += len(points)
            pending.clear()
            return
        if loaded is None:
            from .encoder import E5VEncoder

            loaded = E5VEncoder(config=facts.config)
        batch = [
            (
                FileWork(str((r.payload or {}).get(SOURCE)), "new", [], set()),
                Item(str(r.id), m, c, dict(r.payload or {})),
            )
            for r, m, c in pending
        ]
        points = embed_points(loaded, batch, fingerprint["id"], sparse_encoder=keywords)
        store.upsert(target, points)
        report.embedded += len(points)
        pending.clear()

    try:
        with store_bulk_load(store, target, enabled=bulk_load), _interrupts(report):
            for record in store.scroll(source, with_payload=True, with_vectors=report.sparse_only):
                report.points += 1
                bar.update(1)
                pid = str(record.id)
                payload = record.payload or {}
                modality = point_modality(payload)
                if modality == "image" and report.sparse_only:  # its dense vector is copied; it has no keyword side
                    content = None
                elif modality == "image":
                    image, problem = (None, None) if pid in done else _image_problem(payload, max_pixels)
                    if problem:
                        report.problems.append({"id": pid, "source": str(payload.get(SOURCE)), "reason": problem})
                        continue
                    content = image
                else:
                    content = _text_of(payload)
                    if content is None:
                        report.problems.append(
                            {"id": pid, "source": str(payload.get(SOURCE)), "reason": "no text in the payload"}
                        )
                        continue
                expected.add(pid)
                if pid in done:
                    continue
                pending.append((record, modality, content))
                if len(pending) >= size:
                    flush()
            flush()
    finally:
        bar.close()

    # verify: the target holds exactly the expected ids (drop points whose source point vanished meanwhile)
    stored = {str(r.id) for r in store.scroll(target, with_payload=False, page_size=1024)}
    stale = stored - expected
    if stale:
        report.removed_stale = store.delete(target, sorted(stale))
        stored -= stale
    if stored != expected or store.count(target) != len(expected):
        raise StoreError(
            f"verification failed: {target!r} holds {len(stored)} points, expected {len(expected)}; re-run reingest"
        )
    if report.problems and not allow_missing:
        logger.warning("%d source(s) missing or changed; alias %r left on %s", len(report.problems), alias, source)
        report.seconds = time.perf_counter() - started
        return report
    store.point_alias(alias, target)
    report.swapped = True
    logger.info("alias %s now serves %s (was %s)", alias, target, source)
    if drop_old:
        report.dropped_old = _drop_others(store, alias, keep=target)
    report.seconds = time.perf_counter() - started
    return report


def _drop_others(store: QdrantStore, alias: str, *, keep: str) -> list[str]:
    """Delete physical collections stamped for ``alias`` other than ``keep`` that no alias points at."""
    served = set(store.aliases().values())
    dropped = []
    for name in store.collection_names():
        if name == keep or name in served:
            continue
        stamp = store.stamp(name)
        if stamp is not None and stamp.alias == alias and name.startswith(f"{alias}-e5v-"):
            store.delete_collection(name)
            dropped.append(name)
    return dropped
