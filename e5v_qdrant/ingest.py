"""The ingestion pipeline: files → items → E5-V vectors → Qdrant, idempotent, resumable and bad-input safe.

Per file, the ids a clean run would store are computed from its current content (ids are deterministic), then
compared with the ids stored for that source:

- equal sets → *unchanged*: nothing is embedded or written;
- otherwise only the missing ids are embedded and upserted, and **after** they are written the stored ids the file
  no longer yields are deleted (*new* / *replaced*);
- with ``sync``, points of sources under the given folders that no longer exist are deleted (*deleted*).

Because every decision is "make the stored id set equal the expected one" and writes go new-before-stale, a run
killed at any moment and re-run converges to exactly the point set of a clean run.

Three stages overlap through bounded queues (memory stays flat): a reader thread (discover, read, chunk, hash,
compare, decode images), the embedding loop in the calling thread, and a writer thread (retried upserts, deletes).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from .config import EncoderConfig, IngestConfig
from .pipeline import FileWork, IngestReport, decode_images, embed_points, plan, vanished_sources
from .sources import Chunker, Item, SkippedInput, discover, read_source
from .store import QdrantStore

__all__ = ["IngestReport", "ingest"]

logger = logging.getLogger(__name__)

_DONE = object()
#: Test hook: seconds to sleep before each upsert batch (crash tests use it to SIGKILL a run mid-way).
WRITE_DELAY_ENV = "E5V_QDRANT_TEST_WRITE_DELAY"


class _Stop(Exception):
    pass


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

    Example:
        >>> report = ingest(IngestConfig(collection="docs", paths=["./docs"]), E5VEncoder(), QdrantStore())  # doctest: +SKIP

    With ``config.engine == "ray"`` the work runs on Ray (``ray_engine.ingest_ray``; ``encoder`` then only supplies
    its config and fingerprint). With ``config.bulk_load`` on a server, HNSW building is deferred for the run
    (``store.bulk_load``) and restored after, even on failure.
    """
    if config.engine == "ray":
        from .ray_engine import ingest_ray

        if isinstance(encoder, EncoderConfig):  # the model is loaded on the Ray workers only
            return ingest_ray(config, encoder, store, progress=progress)
        return ingest_ray(config, encoder.config, store, encoder=encoder, progress=progress)
    if isinstance(encoder, EncoderConfig):
        from .encoder import E5VEncoder

        encoder = E5VEncoder(config=encoder)
    if config.bulk_load and store.is_server:
        import dataclasses

        from .store import bulk_load

        with bulk_load(store, store.ensure_collection(config.collection, encoder)):
            return ingest(
                dataclasses.replace(config, bulk_load=False), encoder, store, progress=progress, on_file=on_file
            )

    from tqdm.auto import tqdm

    started = time.perf_counter()
    report = IngestReport(collection=config.collection)
    physical = store.ensure_collection(config.collection, encoder)
    fingerprint_id = encoder.fingerprint["id"]
    report.physical_collection, report.model_fingerprint = physical, fingerprint_id
    stored = store.source_index(physical)
    chunker = Chunker(config.chunk_size, config.chunk_overlap)
    max_pixels = encoder.config.max_image_pixels
    batch = max(store.config.write_batch_size, encoder.config.batch_size)
    disable = None if progress is None else not progress
    write_delay = float(os.environ.get(WRITE_DELAY_ENV) or 0)

    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    work_q: queue.Queue = queue.Queue(maxsize=config.queue_size)
    write_q: queue.Queue = queue.Queue(maxsize=config.queue_size)
    discovered_sources: set[str] = set()
    file_bar = tqdm(desc="files", unit="file", disable=disable, dynamic_ncols=True, position=0)
    item_bar = tqdm(desc="embedded", unit="item", disable=disable, dynamic_ncols=True, position=1)

    def skip(source: str, reason: str) -> None:
        with lock:
            report.skipped_inputs.append(SkippedInput(source, reason))
            report.skipped += 1
        logger.info("skipped %s: %s", source, reason)
        if on_file:
            on_file(source, "skipped")

    # ---------------------------------------------------------- stage 1: read, compare, decode
    def reader() -> None:
        try:
            for entry in discover(config.paths, follow_symlinks=config.follow_symlinks):
                if stop.is_set():
                    return
                if isinstance(entry, SkippedInput):
                    skip(entry.source, entry.reason)
                    continue
                discovered_sources.add(entry.source)
                with lock:
                    report.discovered += 1
                doc = read_source(entry, chunker)
                file_bar.update(1)
                if isinstance(doc, SkippedInput):
                    skip(doc.source, doc.reason)
                    continue
                for warning in doc.warnings:
                    with lock:
                        report.warnings.append({"source": doc.source, "warning": warning})
                    logger.warning("%s: %s", doc.source, warning)
                work = plan(doc, stored.get(doc.source, set()))
                if work is None:
                    with lock:
                        report.unchanged += 1
                    if on_file:
                        on_file(doc.source, "unchanged")
                    continue
                if not decode_images(work, max_pixels, skip):
                    continue
                _put(work_q, work, stop)
            _put(work_q, _DONE, stop)
        except _Stop:
            return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
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
                    written = store.upsert(physical, payload)
                    with lock:
                        report.points_written += written
                else:  # a file's points are all written: now drop its stale ones
                    work: FileWork = payload
                    if work.failed:
                        continue
                    if work.stale_ids:
                        deleted = store.delete(physical, sorted(work.stale_ids))
                        with lock:
                            report.points_deleted += deleted
                    with lock:
                        setattr(report, work.status, getattr(report, work.status) + 1)
                    if on_file:
                        on_file(work.source, work.status)
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
            points = embed_points(encoder, pending, fingerprint_id, skip)
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
                _put(write_q, ("file", FileWork(source, "deleted", [], stored[source])), stop)
        _put(write_q, _DONE, stop)
    except _Stop:
        pass
    except BaseException as exc:
        errors.append(exc)
        stop.set()
    finally:
        for t in threads:
            t.join()
        file_bar.close()
        item_bar.close()
    if errors:
        raise errors[0]
    report.seconds = time.perf_counter() - started
    return report
