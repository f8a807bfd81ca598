"""The local ingestion engine: files → items → E5-V vectors → Qdrant, idempotent, resumable and bad-input safe.

Per file (``pipeline.plan_file``), a file whose stat (size, mtime, inode) equals what its stored points record is
*unchanged* without being opened (points made by another chunker are kept, with a warning, unless ``rechunk``);
otherwise the ids a clean run would store are computed from its current
content (ids are deterministic) and compared with the ids stored for that source:

- equal sets → *unchanged*: nothing is embedded or written (kept points are re-stamped with the new stat);
- otherwise only the missing ids are embedded and upserted, and **after** they are written the stored ids the file
  no longer yields are deleted (*new* / *replaced*);
- with ``sync``, points of sources under the given folders that no longer exist are deleted (*deleted*).

Because every decision is "make the stored id set equal the expected one" and writes go new-before-stale, a run
killed at any moment and re-run converges to exactly the point set of a clean run. Any exception while reading,
chunking, decoding or embedding one file skips that file only (``failed`` in the report).

The model is loaded (and the collection created) only when the first file needs embedding; an existing collection is
checked against the model's fingerprint (``identity.fingerprint``, no weights) before anything is read.

Three stages overlap through bounded queues (memory stays flat): a reader thread (discover, plan, decode images),
the embedding loop in the calling thread, and a writer thread (retried upserts, re-stamps, deletes).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from .chunking import ChunkerSpec, load_chunker
from .config import EncoderConfig, IngestConfig
from .errors import E5VInputError
from .pipeline import (
    EncoderFacts,
    FileWork,
    IngestReport,
    decode_images,
    embed_points,
    plan_file,
    restamp,
    stored_index,
    vanished_sources,
)
from .sources import Item, SkippedInput, discover
from .sparse import DEFAULT_ENCODER, encoder_from_spec
from .store import QdrantStore

__all__ = ["IngestReport", "IngestInterrupted", "ingest", "check_paths"]

logger = logging.getLogger(__name__)

_DONE = object()
#: Test hook: seconds to sleep before each upsert batch (crash tests use it to SIGKILL a run mid-way).
WRITE_DELAY_ENV = "E5V_QDRANT_TEST_WRITE_DELAY"


class _Stop(Exception):
    pass


class IngestInterrupted(KeyboardInterrupt):
    """An ingest stopped by ``KeyboardInterrupt`` (Ctrl-C; the CLI turns SIGTERM into one too) after finishing the
    write in progress. ``report`` counts what was done (``report.interrupted`` names the signal); running the same
    ingest again resumes: it embeds only what is not stored yet."""

    def __init__(self, report: IngestReport):
        super().__init__(report.interrupted)
        self.report = report


def _join(threads: list[threading.Thread]) -> None:
    """Wait for the reader and writer to stop (the writer finishes the write in progress), even through further
    interrupts: a half-done stop would leave the process with threads still writing."""
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt:
                logger.warning("still finishing the write in progress; it stops in a moment")


def _put(q: queue.Queue, value, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(value, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


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
        config: paths, collection, chunking, sync.
        encoder: an ``E5VEncoder`` (anything with ``embed_texts``, ``embed_images``, ``dim``, ``fingerprint``,
            ``config``), or an ``EncoderConfig`` to load one from.
        store: the open ``QdrantStore``.
        progress: show tqdm bars (``None`` = only on a terminal).
        on_file: called with (source, outcome) after each file's outcome is known (tests, custom progress).

    Returns:
        The run's ``IngestReport``.

    Raises:
        CollectionMismatchError: the collection serves another model.
        StoreError: Qdrant failed permanently (or transient errors outlasted the retries).
        IngestInterrupted: a ``KeyboardInterrupt`` arrived while files were processed; the write in progress was
            finished and the exception carries the report so far (a ``KeyboardInterrupt``, so callers that catch
            that keep working). ``KeyboardInterrupt("SIGTERM")`` is reported as SIGTERM.

    Example:
        >>> report = ingest(IngestConfig(collection="docs", paths=["./docs"]), E5VEncoder(), QdrantStore())  # doctest: +SKIP

    With ``config.engine == "ray"`` the work runs on Ray (``ray_engine.ingest_ray``; ``encoder`` then only supplies
    its config and fingerprint). With ``config.bulk_load`` on a server, HNSW building is deferred for the run
    (``store.bulk_load``) and restored after, even on failure.
    """
    check_paths(config.paths)
    sparse_spec = DEFAULT_ENCODER.spec() if config.hybrid else None
    if config.engine == "ray":
        from .ray_engine import ingest_ray

        if isinstance(encoder, EncoderConfig):  # the model is loaded on the Ray workers only
            return ingest_ray(config, encoder, store, progress=progress)
        return ingest_ray(config, encoder.config, store, encoder=encoder, progress=progress)
    model = _Model(encoder)
    if config.bulk_load and store.is_server:
        import dataclasses

        from .store import bulk_load

        with bulk_load(store, store.ensure_collection(config.collection, model.get(), sparse=sparse_spec)):
            return ingest(
                dataclasses.replace(config, bulk_load=False), model.get(), store, progress=progress, on_file=on_file
            )

    from tqdm.auto import tqdm

    started = time.perf_counter()
    report = IngestReport(collection=config.collection, roots=[os.path.abspath(os.fspath(p)) for p in config.paths])
    physical = store.resolve(config.collection)
    if physical is not None:
        stamp = store.stamp(physical)
        store.check_compatible(config.collection, physical, model.facts())  # another model is refused up front
        store.check_sparse(config.collection, physical, sparse_spec)  # so is --hybrid on a dense-only collection
        report.physical_collection = physical
        report.model_fingerprint = (stamp.fingerprint.get("id") if stamp else None) or ""
    stored = stored_index(store, physical) if physical is not None else {}
    target = {"physical": physical, "ensured": False}  # ensured (created, checked) when the first file is to embed
    recorded_sparse = store.sparse_spec(physical) if physical is not None else sparse_spec
    # a hybrid collection gets sparse vectors even without --hybrid (the setting is part of its stamp)
    sparse_encoder = encoder_from_spec(recorded_sparse) if recorded_sparse else None
    chunker = load_chunker(ChunkerSpec.for_encoder(model.config, config.chunk_size, config.chunk_overlap))
    max_pixels = model.config.max_image_pixels
    batch = max(store.config.write_batch_size, model.config.batch_size)
    disable = None if progress is None else not progress
    write_delay = float(os.environ.get(WRITE_DELAY_ENV) or 0)

    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    work_q: queue.Queue = queue.Queue(maxsize=config.queue_size)
    write_q: queue.Queue = queue.Queue(maxsize=config.queue_size)
    discovered_sources: set[str] = set()
    file_bar = tqdm(desc="files", unit="file", disable=disable, dynamic_ncols=True, position=0)
    item_bar = tqdm(desc="embedded", unit="item", total=0, disable=disable, dynamic_ncols=True, position=1)

    def skip(source: str, reason: str, outcome: str = "failed") -> None:
        with lock:
            report.skipped_inputs.append(SkippedInput(source, reason, outcome))
            report.skipped += 1
        logger.info("%s %s: %s", outcome, source, reason)
        if on_file:
            on_file(source, "skipped")

    def counted(work: FileWork) -> None:
        with lock:
            report.count_file(work)
        if on_file:
            on_file(work.source, work.status)

    # ---------------------------------------------------------- stage 1: discover, plan (read, chunk, compare), decode
    def reader() -> None:
        current = None
        try:
            entries = []
            for entry in discover(
                config.paths, follow_symlinks=config.follow_symlinks, include=config.include, exclude=config.exclude
            ):
                if isinstance(entry, SkippedInput):
                    skip(entry.source, entry.reason, entry.outcome)
                else:
                    entries.append(entry)
            report.discovered = len(entries)
            file_bar.reset(total=len(entries))
            for entry in entries:
                if stop.is_set():
                    return
                current = entry.source
                discovered_sources.add(entry.source)
                work = plan_file(
                    entry,
                    chunker,
                    stored.get(entry.source, {}),
                    verify=config.verify,
                    pdf_pages=config.pdf_pages,
                    rechunk=config.rechunk,
                    max_file_bytes=config.max_file_bytes,
                    max_chunks=config.max_chunks_per_file,
                )
                file_bar.update(1)
                if isinstance(work, SkippedInput):
                    skip(work.source, work.reason, work.outcome)
                    continue
                for warning in work.warnings:
                    with lock:
                        report.warnings.append({"source": work.source, "warning": warning})
                    logger.info("%s: %s", work.source, warning)
                if work.status == "unchanged" and not work.restamp_ids:
                    counted(work)
                    continue
                if not decode_images(work, max_pixels, skip):
                    continue
                with lock:
                    item_bar.total += len(work.items)
                _put(work_q, work, stop)
            current = None
            _put(work_q, _DONE, stop)
        except _Stop:
            return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            if current is not None:
                exc.add_note(f"(e5v-qdrant ingest was processing {current})")
            errors.append(exc)
            stop.set()

    # ---------------------------------------------------------- stage 3: write
    def writer() -> None:
        try:
            while True:
                message = _get(write_q, stop)
                if message is _DONE:
                    return
                kind, payload = message
                if kind == "points":
                    if write_delay:
                        time.sleep(write_delay)  # test hook: lets crash tests kill the process mid-run
                    written = store.upsert(target["physical"], payload)
                    with lock:
                        report.points_written += written
                else:  # a file's points are all written: re-stamp the kept ones, then drop its stale ones
                    work: FileWork = payload
                    if work.failed:
                        continue
                    if work.restamp_ids:
                        restamp(store, target["physical"], work.restamp_ids, work.file_stat, work.source)
                    if work.stale_ids:
                        deleted = store.delete(target["physical"], sorted(work.stale_ids))
                        with lock:
                            report.points_deleted += deleted
                    counted(work)
        except _Stop:
            return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=reader, name="e5v-ingest-read", daemon=True),
        threading.Thread(target=writer, name="e5v-ingest-write", daemon=True),
    ]
    for t in threads:
        t.start()

    # ---------------------------------------------------------- stage 2: embed (calling thread)
    pending: list[tuple[FileWork, Item]] = []
    finished: list[FileWork] = []  # files whose items are all in `pending` or already sent

    def flush() -> None:
        if pending:
            points = embed_points(model.get(), pending, model.fingerprint_id, skip, sparse_encoder=sparse_encoder)
            with lock:
                report.embedded += len(points)
            item_bar.update(len(pending))
            if points:
                _put(write_q, ("points", points), stop)
            pending.clear()
        for work in finished:
            _put(write_q, ("file", work), stop)
        finished.clear()

    try:
        while True:
            work = _get(work_q, stop)
            if work is _DONE:
                break
            if work.items and not target["ensured"]:  # the first file to embed: load the model, ensure the collection
                target["physical"] = store.ensure_collection(config.collection, model.get(), sparse=sparse_spec)
                target["ensured"] = True
                report.physical_collection, report.model_fingerprint = target["physical"], model.fingerprint_id
            for item in work.items:
                pending.append((work, item))
                if len(pending) >= batch:
                    flush()
            finished.append(work)
            if len(pending) >= batch or not work.items:
                flush()
        flush()
        if config.sync:
            seen = discovered_sources | {s.source for s in report.skipped_inputs}
            for source in vanished_sources(stored, config.paths, seen):
                _put(write_q, ("file", FileWork(source, "deleted", [], set(stored[source]))), stop)
        _put(write_q, _DONE, stop)
    except _Stop:
        pass
    except BaseException as exc:
        errors.append(exc)
        stop.set()
    finally:
        _join(threads)
        file_bar.close()
        item_bar.close()
    report.model_loaded = model.loaded
    report.seconds = time.perf_counter() - started
    if errors and isinstance(errors[0], KeyboardInterrupt):
        report.interrupted = str(errors[0]) or "SIGINT"
        raise IngestInterrupted(report) from errors[0]
    if errors:
        raise errors[0]
    return report


class _Model:
    """The encoder of a run, loaded on first use when given as an ``EncoderConfig``."""

    def __init__(self, encoder):
        self._encoder = None if isinstance(encoder, EncoderConfig) else encoder
        self.config = encoder if isinstance(encoder, EncoderConfig) else encoder.config
        self.loaded = self._encoder is not None
        self._facts = None

    def facts(self):
        """The loaded encoder, or its ``EncoderFacts`` (fingerprint and size without loading weights)."""
        if self._encoder is None:
            if self._facts is None:
                self._facts = EncoderFacts.of(self.config)
            return self._facts
        return self._encoder

    def get(self):
        if self._encoder is None:
            from .encoder import E5VEncoder

            self._encoder = E5VEncoder(config=self.config)
            self.loaded = True
        return self._encoder

    @property
    def fingerprint_id(self) -> str:
        return self.get().fingerprint["id"]


def check_paths(paths) -> None:
    """Refuse a run whose input paths do not exist, before anything is loaded or created.

    Raises:
        E5VInputError: naming every missing path.
    """
    if not paths:
        raise E5VInputError("paths", "nothing to ingest: give one or more files or folders")
    missing = [os.fspath(p) for p in paths if not os.path.lexists(os.fspath(p))]
    if missing:
        raise E5VInputError(
            ", ".join(missing), "no such file or folder (check the path; nothing was loaded or written)"
        )
