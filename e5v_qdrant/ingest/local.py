"""The local executor (threads): files → items → E5-V vectors → Qdrant, idempotent, resumable and bad-input safe.

The run's collection, compatibility checks, bulk load, re-stamps, deletes and ``sync`` are the driver's
(``ingest.run.IngestRun``); this module only turns planned files into points and hands them over.

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

from ..chunking import ChunkerSpec, load_chunker
from ..config import EncoderConfig, IngestConfig
from ..pipeline import EncoderFacts, FileWork, IngestReport, decode_images, embed_points, plan_file
from ..sources import Item, SkippedInput, discover
from ..store import QdrantStore
from .run import IngestRun

__all__ = ["IngestInterrupted", "ingest_local", "LazyEncoder"]

logger = logging.getLogger(__name__)

_DONE = object()


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


def ingest_local(
    config: IngestConfig,
    encoder,
    store: QdrantStore,
    *,
    progress: bool | None = None,
    on_file: Callable[[str, str], None] | None = None,
) -> IngestReport:
    """Ingest ``config.paths`` with the local executor (``ingest.ingest`` documents the arguments and errors).

    Three stages overlap through bounded queues (memory stays flat): a reader thread (discover, plan, decode images),
    the embedding loop in the calling thread, and a writer thread (retried upserts, then the driver's re-stamps and
    deletes per file).
    """
    model = LazyEncoder(encoder)
    started = time.perf_counter()
    report = IngestReport(collection=config.collection, roots=[os.path.abspath(os.fspath(p)) for p in config.paths])
    with IngestRun(config, store, model.facts(), report) as run:
        return _run(config, model, store, run, report, started, progress, on_file)


def _run(config, model, store, run: IngestRun, report, started, progress, on_file) -> IngestReport:
    from tqdm.auto import tqdm

    stored = run.stored
    sparse_encoder = run.sparse_encoder
    chunker = load_chunker(ChunkerSpec.for_encoder(model.config, config.chunk_size, config.chunk_overlap))
    max_pixels = model.config.max_image_pixels
    batch = max(store.config.write_batch_size, model.config.batch_size)
    disable = None if progress is None else not progress

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
                    written = store.upsert(run.physical, payload)
                    with lock:
                        report.points_written += written
                else:  # a file's points are all written: re-stamp the kept ones, then drop its stale ones
                    work: FileWork = payload
                    if work.failed:
                        continue
                    deleted = run.file_done(work.source, work.restamp_ids, work.file_stat, work.stale_ids)
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
            if work.items:  # the first file to embed loads the model and ensures the collection (once)
                run.ensure_collection(model.get())
            for item in work.items:
                pending.append((work, item))
                if len(pending) >= batch:
                    flush()
            finished.append(work)
            if len(pending) >= batch or not work.items:
                flush()
        flush()
        for source in run.vanished(discovered_sources | {s.source for s in report.skipped_inputs}):
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


class LazyEncoder:
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
            from ..encoder import E5VEncoder

            self._encoder = E5VEncoder(config=self.config)
            self.loaded = True
        return self._encoder

    @property
    def fingerprint_id(self) -> str:
        return self.get().fingerprint["id"]
