"""The server as the one owner of its store: watched folders kept in sync and ingest jobs, sharing the model with
search requests.

Ingestion runs on threads of its own and reaches the model and the store the way requests do: its encoder calls are
jobs of the ``DynamicBatcher`` (so a search waits for at most one ingestion batch, never for a bulk ingest), and its
store calls run on the model worker thread, where search's store calls run (``BatchedEncoder``, ``ModelThreadStore``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..config import IngestConfig
from ..errors import E5VConfigError, E5VError
from ..ingest import check_paths
from ..ingest.local import ingest_local
from ..live.config import LiveConfig
from ..live.follow import LiveFolders
from ..live.sync import FolderSync
from .batching import QueueFullError

__all__ = [
    "check_owner",
    "BatchedEncoder",
    "ModelThreadStore",
    "LiveService",
    "OutsideRootsError",
    "IMAGE_TOKENS_ESTIMATE",
]

log = logging.getLogger(__name__)

#: Tokens an image is counted as when ingestion queues it (fairness only): the largest anyres image of LLaVA-NeXT.
IMAGE_TOKENS_ESTIMATE = 2880
#: Finished jobs whose report ``GET /v1/jobs/{id}`` still answers.
_KEPT_JOBS = 100
#: Ingest options a request may not set: they would read outside the allowed roots or leave this process.
_REFUSED_OPTIONS = ("follow_symlinks", "engine", "ray_address", "replicas", "gpus_per_replica", "write_concurrency")


class OutsideRootsError(E5VError, PermissionError):
    """An ingest request names a path outside the server's ``--ingest-root`` folders (or the server has none)."""


def check_owner(store, live: LiveConfig, ingest: IngestConfig | None, encoder_config) -> None:
    """Refuse to watch into a collection of another model (or a dense one with ``--hybrid``) before the model loads.

    Raises:
        CollectionMismatchError: naming both models and the remedies.
    """
    from ..pipeline import EncoderFacts
    from ..sparse import DEFAULT_ENCODER

    physical = store.resolve(live.collection) if live.watch else None
    if physical is not None:
        store.check_compatible(live.collection, physical, EncoderFacts.of(encoder_config))
        hybrid = ingest is not None and ingest.hybrid
        store.check_sparse(live.collection, physical, DEFAULT_ENCODER.spec() if hybrid else None)


class BatchedEncoder:
    """The served encoder as ingestion sees it: attributes are the encoder's, ``embed_texts`` / ``embed_images`` queue
    in the batcher beside search requests (called from a thread other than the event loop's)."""

    def __init__(self, encoder, batcher, loop: asyncio.AbstractEventLoop, *, slice_size: int | None = None):
        self._encoder, self._batcher, self._loop = encoder, batcher, loop
        #: most ingestion inputs per batcher job: a quarter of the batcher's batch
        self.slice_size = slice_size or max(1, batcher.max_batch_size // 4)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def embed_texts(self, texts):
        # tokens only size the fair share: estimated (~3 characters a token) instead of tokenized on this thread
        return self._submit("text", list(texts), [len(t) // 3 + 1 for t in texts])

    def embed_images(self, images):
        return self._submit("image", list(images), [IMAGE_TOKENS_ESTIMATE] * len(images))

    def _submit(self, kind: str, items: list, tokens: list[int]):
        """Queue ``items`` in slices of ``slice_size``: a search waits for at most one encoder call, and an ingestion
        call holds at most a slice (a full batch of long chunks takes seconds on a CPU)."""
        size = self.slice_size
        return np.concatenate(
            [self._submit_slice(kind, items[i : i + size], tokens[i : i + size]) for i in range(0, len(items), size)]
        )

    def _submit_slice(self, kind: str, items: list, tokens: list[int]):
        for _ in range(600):  # a full queue (clients' requests) is waited out, up to a minute
            future = asyncio.run_coroutine_threadsafe(self._batcher.submit(kind, items, tokens=tokens), self._loop)
            try:
                return future.result()
            except QueueFullError:
                time.sleep(0.1)
        raise QueueFullError("the model queue stayed full for a minute; ingestion retries with the next sync")


class ModelThreadStore:
    """A ``QdrantStore`` whose calls run on the model worker thread (where search's store calls run), so the
    embedded store is only ever used from one thread; ``scroll`` is read there ``page`` records at a time, so a
    search waits for at most one page of a long scroll."""

    def __init__(self, store, batcher, loop: asyncio.AbstractEventLoop, *, page: int = 1024):
        self._store, self._batcher, self._loop, self._page = store, batcher, loop, page

    def _run(self, call):
        return asyncio.run_coroutine_threadsafe(self._batcher.run(call), self._loop).result()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value
        if name == "scroll":
            return lambda *args, **kwargs: self._scroll(value(*args, **kwargs))
        return lambda *args, **kwargs: self._run(lambda: value(*args, **kwargs))

    def _scroll(self, records):
        """The records of a (not yet started) ``scroll`` generator, advanced on the model thread a page at a time."""
        while True:
            page = self._run(lambda: list(itertools.islice(records, self._page)))
            yield from page
            if len(page) < self._page:
                return


@dataclasses.dataclass
class _Job:
    id: str
    collection: str
    paths: list[str]
    state: str = "running"
    files_done: int = 0
    report: dict[str, Any] | None = None
    summary: str = ""
    exit_code: int | None = None
    error: str = ""
    started: float = dataclasses.field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LiveService:
    """Watched folders and ingest jobs of one server.

    Args:
        encoder: the served encoder; store: the open store; metrics: the server's ``Metrics``.
        live: ``--watch`` folders and ``--ingest-root`` roots; ingest: the ingest options of the watched folders.
    """

    def __init__(self, encoder, store, metrics, live: LiveConfig | None = None, ingest: IngestConfig | None = None):
        self.encoder, self.store, self.metrics = encoder, store, metrics
        self.live = live or LiveConfig()
        self.ingest = ingest
        self.folders: LiveFolders | None = None
        self.jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._proxies: tuple[BatchedEncoder, ModelThreadStore] | None = None

    async def start(self, batcher) -> None:
        """Catch up and follow the watched folders (the checks of the collection run before this returns)."""
        loop = asyncio.get_running_loop()
        self._proxies = (BatchedEncoder(self.encoder, batcher, loop), ModelThreadStore(self.store, batcher, loop))
        if self.ingest is None or not self.live.watch:
            return
        store_path = self.store.config.resolved_path and os.path.abspath(self.store.config.resolved_path)
        inside = [os.path.relpath(store_path, r) for r in self.live.watch if store_path and _under(store_path, r)]
        config = dataclasses.replace(  # a store folder inside a watched folder is not a source
            self.ingest,
            collection=self.live.collection,
            paths=list(self.live.watch),
            exclude=[*self.ingest.exclude, *inside],
        )
        sync = await asyncio.to_thread(FolderSync, config, *self._proxies, on_counts=self.metrics.observe_sync)
        self.folders = LiveFolders(
            sync,
            quiet_ms=self.live.watch_quiet_ms,
            force_polling=self.live.watch_polling or None,
            ignore=[store_path] if store_path else [],
            on_event=self.metrics.ingest_events.inc,
        )
        self.metrics.track_live(lambda: len(self.folders.watcher.pending), lambda: len(sync.status.ingesting))
        self.folders.start()

    @property
    def model_thread_store(self) -> ModelThreadStore:
        """The store, its calls run on the model thread (safe from any other thread while the server runs)."""
        return self._proxies[1]

    async def stop(self) -> None:
        if self.folders is not None:
            await asyncio.to_thread(self.folders.stop)

    # ------------------------------------------------------------ status
    def collection_status(self, name: str) -> dict[str, Any] | None:
        """The sync status of ``name`` if it is the watched collection, else ``None``."""
        if self.folders is None or name != self.live.collection:
            return None
        return self.folders.to_dict()

    # ------------------------------------------------------------ jobs
    def start_job(
        self, collection: str, paths: list[str], options: Mapping[str, Any], encoder: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start ingesting ``paths`` (on this machine, under the ingest roots) into ``collection``; returns the job.

        ``encoder``: encoder options the client gave; refused if they would make other vectors than the served
        model's (the job embeds with the served model).

        Raises:
            OutsideRootsError: a path is outside the roots, or the server has none.
            E5VConfigError: bad options (or ones a request may not set: ``follow_symlinks``, the Ray engine), or
                encoder options this server's model does not match.
            E5VInputError: a path does not exist.
        """
        self.check_encoder(encoder or {})
        roots = self.live.roots
        if not roots:
            raise OutsideRootsError(
                "this server ingests no paths: start it with --ingest-root FOLDER (or --watch FOLDER)"
            )
        refused = sorted(set(options) & set(_REFUSED_OPTIONS))
        if refused:
            raise E5VConfigError(f"ingest options not accepted through the server: {', '.join(refused)}")
        absolute = [os.path.abspath(p) for p in paths]
        for path in absolute:
            if not any(_under(os.path.realpath(path), r) for r in roots):
                raise OutsideRootsError(
                    f"{path} is outside this server's ingest roots ({', '.join(roots)}); restart it with "
                    "--ingest-root covering it, or ingest without the server"
                )
        config = IngestConfig.from_options(dict(options), collection=collection, paths=absolute)
        check_paths(config.paths)
        job = _Job(f"job-{next(self._ids)}", collection, absolute)
        self.jobs[job.id] = job
        for old in [j for j in self.jobs.values() if j.state != "running"][:-_KEPT_JOBS]:
            del self.jobs[old.id]  # the reports of the last finished jobs are kept
        threading.Thread(target=self._run_job, args=(job, config), name=job.id, daemon=True).start()
        return job.to_dict()

    def check_encoder(self, given: Mapping[str, Any]) -> None:
        """Refuse encoder options whose vectors differ from the served model's (``identity.fingerprint`` ids)."""
        from ..config import EncoderConfig
        from ..identity import fingerprint

        served = self.encoder.config
        vector_options = {f.name for f in dataclasses.fields(EncoderConfig) if f.metadata.get("vectors")}
        differing = {k: v for k, v in given.items() if k in vector_options and v != getattr(served, k)}
        if not differing:  # device, dtype, batch sizes… do not change the vectors
            return
        wanted = EncoderConfig.from_options({**dataclasses.asdict(served), **differing})
        if fingerprint(wanted)["id"] != self.encoder.fingerprint["id"]:
            options = ", ".join(sorted(differing))
            raise E5VConfigError(
                f"this server embeds with {served.model} and its options; the options given ({options}) make other "
                "vectors: drop them to ingest through the server, or stop the server to ingest with them"
            )

    def _run_job(self, job: _Job, config: IngestConfig) -> None:
        encoder, store = self._proxies

        def done_one(source: str, outcome: str) -> None:
            job.files_done += 1

        try:
            report = ingest_local(config, encoder, store, progress=False, on_file=done_one)
            job.report, job.summary, job.exit_code = report.to_dict(), report.summary(), report.exit_code
            self.metrics.ingest_embedded.inc(report.embedded)
            self.metrics.ingest_deleted.inc(report.points_deleted)
            job.state = "done"
        except Exception as exc:  # noqa: BLE001 - the job fails (exit code 2, as the command would), the server stays up
            if not isinstance(exc, E5VError):
                log.exception("ingest %s failed", job.id)
            job.error, job.exit_code, job.state = str(exc), 2, "failed"

    def job(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        return None if job is None else job.to_dict()


def _under(path: str, root: str) -> bool:
    """Whether absolute ``path`` is ``root`` or inside it."""
    root = os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
