"""The Ray Data executor: the same sources, planning, encoder, ids, run (``ingest.run.IngestRun``) and store as the
local executor, spread out.

    driver:  discover files · read the stored id index · ensure the collection · (bulk load) · deletes, sync, report
    Ray:     read_binary_files ─► plan tasks (read_source + plan: chunk, hash, ids, skip unchanged)
                               ─► encoder actors (map_batches over an ActorPoolStrategy, one E5VEncoder per actor /
                                  GPU; images decoded here, never resized)
                               ─► QdrantDatasink (request-size batching, retried upserts with wait=True)

Nothing is re-implemented: files are read and chunked by ``sources.read_source``, the new / changed / unchanged
decision is ``pipeline.plan`` against the id index the driver read from Qdrant, points are built by
``pipeline.embed_points`` (so ids, payloads and vectors equal the local engine's), and every Qdrant request goes through ``QdrantStore.call``
(tenacity back-off on ``store.is_transient`` errors, ``StoreError`` on permanent ones).

Stale points of changed files and points of vanished files (``sync``) are deleted by the driver after the Ray job
has written everything, so a job killed at any moment (driver, worker or actor) and re-run converges to exactly the
point set of a clean run: ids are deterministic, upserts idempotent, and the next run's planning sees what is missing.

The embedded store (``--qdrant-path``) can be opened by one process only: its points are written by the driver,
through the same ``QdrantDatasink.write``, from the stream of embedded batches. With ``--qdrant-url`` the sink runs
in ``write_concurrency`` parallel Ray write tasks, each with its own client. The API key is read from the environment
variable ``StoreConfig.api_key_env`` on each node (it is never shipped through Ray): set it on every node.

Example:
    >>> from e5v_qdrant.config import EncoderConfig, IngestConfig, StoreConfig
    >>> from e5v_qdrant.ingest.ray_data import ingest_ray
    >>> report = ingest_ray(IngestConfig(collection="docs", paths=["/data/docs"], engine="ray", replicas=8),
    ...                     EncoderConfig(), StoreConfig(qdrant_url="http://qdrant:6333"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunking import ChunkerSpec, load_chunker
from ..config import EncoderConfig, IngestConfig, StoreConfig
from ..errors import E5VConfigError
from ..pipeline import (
    EncoderFacts,
    FileWork,
    IngestReport,
    decode_images,
    earlier_chunking,
    embed_points,
    is_unchanged,
    plan_file,
    too_large,
)
from ..points import dense_vector, make_point, sparse_vector
from ..sources import Item, SkippedInput, SourceFile, discover, kind_of
from ..sparse import encoder_from_spec
from ..store import QdrantStore, StoreError
from .run import IngestRun

try:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.data.block import BlockAccessor
    from ray.data.datasource.datasink import Datasink, WriteResult
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise E5VConfigError(f"the Ray engine needs Ray Data ({exc}): pip install 'e5v-qdrant[ray]'") from exc

__all__ = [
    "QdrantDatasink",
    "ingest_ray",
    "plan_files",
    "RayEncoderActor",
    "estimate_point_bytes",
    "REST_MAX_REQUEST_BYTES",
]

logger = logging.getLogger(__name__)

#: Qdrant's default ``service.max_request_size_mb`` (32 MiB): the largest REST request body a server accepts.
REST_MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: Upper bound of one float in qdrant-client's REST JSON (``-1.2345678901234567e-05,``).
_REST_BYTES_PER_FLOAT = 25
_GRPC_BYTES_PER_FLOAT = 4
_POINT_OVERHEAD = 160

#: Rows between the plan tasks and the encoder actors: one per item to embed, plus one ``note`` per file.
PLAN_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("modality", pa.string()),
        ("source", pa.string()),
        ("text", pa.large_string()),
        ("data", pa.large_binary()),
        ("payload", pa.large_string()),
        ("note", pa.large_string()),
    ]
)
#: Rows the sink consumes: a point (id, float32 vector bytes, JSON payload, JSON [indices, values] of its sparse
#: vector in a hybrid collection) or a note for the driver.
POINT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("vector", pa.large_binary()),
        ("payload", pa.large_string()),
        ("sparse", pa.large_string()),
        ("note", pa.large_string()),
    ]
)


# ---------------------------------------------------------------- the Qdrant Datasink
def estimate_point_bytes(dim: int, payload_json: str, *, grpc: bool) -> int:
    """Upper estimate of one point's share of an upsert request: vector (JSON text for REST, 4 B/float for gRPC),
    payload JSON (counted as if every non-ASCII character were escaped, so never smaller than what is sent) and
    framing."""
    per_float = _GRPC_BYTES_PER_FLOAT if grpc else _REST_BYTES_PER_FLOAT
    non_ascii = len(payload_json) - len(payload_json.encode("ascii", "ignore"))
    return dim * per_float + len(payload_json) + 11 * non_ascii + _POINT_OVERHEAD  # an escaped emoji is 12 bytes


@dataclass
class _Request:
    points: list
    nbytes: int = 0


class QdrantDatasink(Datasink[dict]):
    """Writes rows ``{id, vector (float32 bytes), payload (JSON)}`` into an existing Qdrant collection.

    - Requests hold at most ``store_config.write_batch_size`` points and ``store_config.write_batch_bytes`` estimated
      bytes (``estimate_point_bytes``; REST JSON or gRPC sizes); a single point over the server's REST limit fails
      with a message naming it.
    - Every request is an ``upsert(..., wait=True)`` (acknowledged when applied) through ``QdrantStore.call``: transient
      errors (timeouts, resets, 5xx/429, gRPC UNAVAILABLE) are retried with exponential back-off; permanent ones raise
      ``StoreError`` and fail the Ray job.
    - The collection is never created here: a missing one fails before anything is written.
    - Rows with a ``note`` (and no id) are side-channel records handed back to the driver in ``result["notes"]``.

    Args:
        collection: the physical collection (or alias) to write into.
        store_config: connection and batching options (a server URL for distributed writes).
        client_factory: builds the client each write task uses (default: ``store.open_client(store_config)``);
            tests inject failing clients here. Must be picklable for Ray write tasks.
        client: an open client to use instead; not picklable.
        store: an open ``QdrantStore`` to write through (driver-side writes, e.g. the embedded store); not picklable.

    After ``write_datasink`` (or direct ``write`` calls) ``result`` holds ``points``, ``requests`` and ``notes``.
    """

    def __init__(
        self, collection: str, store_config: StoreConfig, *, client_factory=None, client=None, store=None
    ) -> None:
        self.collection = collection
        self.store_config = store_config
        self.client_factory = client_factory
        self._client = client
        self._store = store
        #: whether the driver had an API key (the key itself stays out of the pickled sink)
        self.expects_api_key = bool(store_config.qdrant_url and store_config.api_key)
        self.result: dict[str, Any] = {"points": 0, "requests": 0, "notes": []}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = state["_store"] = None  # an open client never travels to workers
        return state

    def __repr__(self) -> str:
        where = self.store_config.qdrant_url or self.store_config.resolved_path
        return f"QdrantDatasink(collection={self.collection!r}, store={where!r})"

    def get_name(self) -> str:
        return "QdrantWrite"

    # ------------------------------------------------------------ lifecycle
    def _open(self) -> tuple[QdrantStore, bool]:
        """The store this task writes through, and whether the task opened it (and must close it)."""
        if self._store is not None:
            return self._store, False
        if self._client is not None:
            return QdrantStore(self.store_config, client=self._client), False
        if self.client_factory is not None:
            return QdrantStore(self.store_config, client=self.client_factory(), owns_client=True), True
        env = self.store_config.api_key_env
        if self.expects_api_key and not self.store_config.api_key:
            raise StoreError(
                f"the Qdrant API key variable {env} is set on the driver but not on this Ray node "
                f"({os.uname().nodename}): set it in every node's environment (keys are never shipped through Ray)"
            )
        return QdrantStore(self.store_config), True

    def _check_collection(self, store: QdrantStore) -> None:
        if store.resolve(self.collection) is None:
            raise StoreError(
                f"collection {self.collection!r} does not exist in {self.store_config.qdrant_url or 'the embedded store'}; "
                "the writer never creates collections: create it first (e5v-qdrant ingest does, with the model's size "
                "and fingerprint stamp)"
            )

    def on_write_start(self, schema=None) -> None:
        """Driver side, before any write task: fail clearly if the collection is missing."""
        store, owned = self._open()
        try:
            self._check_collection(store)
        finally:
            if owned:
                store.close()

    def write(self, blocks: Iterable, ctx=None) -> dict:
        """Write every point row of ``blocks`` (Arrow tables or any Ray block); returns this task's counts and notes.

        Raises:
            StoreError: a permanent Qdrant error, transient errors outlasting the retries, or a missing collection.
        """
        store, owned = self._open()
        grpc = bool(self.store_config.prefer_grpc and self.store_config.qdrant_url)
        max_points = self.store_config.write_batch_size
        max_bytes = self.store_config.write_batch_bytes
        stats = {"points": 0, "requests": 0, "notes": []}
        request = _Request([])
        try:
            self._check_collection(store)
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                columns = table.to_pydict()
                ids = columns.get("id") or [None] * table.num_rows
                notes = columns.get("note") or [None] * table.num_rows
                sparse = columns.get("sparse") or [None] * table.num_rows
                for i, pid in enumerate(ids):
                    if pid is None:
                        if notes[i] is not None:
                            stats["notes"].append(json.loads(notes[i]))
                        continue
                    vector = np.frombuffer(columns["vector"][i], dtype=np.float32)
                    payload_json = columns["payload"][i]
                    size = estimate_point_bytes(vector.shape[0], payload_json, grpc=grpc) + len(sparse[i] or "")
                    if not grpc and size > REST_MAX_REQUEST_BYTES:
                        raise StoreError(
                            f"point {pid} is about {size} bytes as REST JSON, over Qdrant's default 32 MiB request limit: "
                            "use --prefer-grpc or shrink its payload"
                        )
                    if request.points and (len(request.points) >= max_points or request.nbytes + size > max_bytes):
                        self._send(store, request, stats)
                        request = _Request([])
                    request.points.append((pid, vector, payload_json, sparse[i]))
                    request.nbytes += size
            if request.points:
                self._send(store, request, stats)
        finally:
            if owned:
                store.close()
        return stats

    def _send(self, store: QdrantStore, request: _Request, stats: dict) -> None:
        points = [
            make_point(pid, vector, json.loads(payload), sparse=json.loads(sparse) if sparse else None)
            for pid, vector, payload, sparse in request.points
        ]
        store.upsert(self.collection, points)  # at most write_batch_size points: one request
        stats["points"] += len(points)
        stats["requests"] += 1

    def on_write_complete(self, write_result: WriteResult) -> None:
        for part in write_result.write_returns:
            self._merge(part)

    def _merge(self, part: dict) -> None:
        self.result["points"] += int(part["points"])
        self.result["requests"] += int(part["requests"])
        self.result["notes"].extend(part["notes"])

    def on_write_failed(self, error: Exception) -> None:
        logger.error("writing to Qdrant collection %r failed: %s", self.collection, error)


# ---------------------------------------------------------------- plan tasks (read, chunk, hash, compare)
_WORKER_CACHE: dict[Any, Any] = {}


def _stored_index(holder: list) -> dict[str, set[str]]:
    ref = holder[0]
    key = ("stored", ref.hex() if isinstance(ref, ray.ObjectRef) else id(ref))
    if key not in _WORKER_CACHE:
        for old in [k for k in _WORKER_CACHE if k[0] == "stored"]:  # one run's index at a time per worker
            del _WORKER_CACHE[old]
        _WORKER_CACHE[key] = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
    return _WORKER_CACHE[key]


def _note(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False)


def plan_files(
    batch: pa.Table, *, chunker: ChunkerSpec, stored: list, max_chunks: int | None = None, pdf_pages: str = "auto"
):
    """Ray task: files (``bytes``, ``path``) → rows of items that need embedding, and one note per file.

    Uses ``pipeline.plan_file`` (read, decompress, strip HTML, chunk, hash, ids, payloads, compare with the stored
    ids; any exception skips only its file), exactly as the local engine does, with the same chunker: ``chunker``
    is its spec, built (tokenizer loaded) once per worker process.
    """
    chunker = load_chunker(chunker)
    shared = _stored_index(stored)
    index, entries = shared["index"], shared["entries"]
    rows: dict[str, list] = {name: [] for name in PLAN_SCHEMA.names}

    def add(**values):
        for name in PLAN_SCHEMA.names:
            rows[name].append(values.get(name))

    for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist(), strict=True):
        source = path  # read_binary_files gives back the absolute paths discover() produced
        entry = entries.get(source) or SourceFile(source, kind_of(source) or "sniff")
        # the driver checked stats and sizes
        work = plan_file(
            entry, chunker, index.get(source, {}), verify=True, data=data, max_chunks=max_chunks, pdf_pages=pdf_pages
        )
        if isinstance(work, SkippedInput):
            note = _note(source=source, status="skipped", reason=work.reason, outcome=work.outcome)
            add(source=source, note=note)
            continue
        note = _note(
            source=source,
            status=work.status,
            stale=sorted(work.stale_ids),
            restamp=sorted(work.restamp_ids),
            file_stat=work.file_stat,
            warnings=work.warnings,
        )
        add(source=source, note=note)
        for item in work.items:
            add(
                id=item.id,
                modality=item.modality,
                source=source,
                text=item.content if item.modality == "text" else None,
                data=bytes(item.content) if item.modality == "image" else None,
                payload=json.dumps(item.payload, ensure_ascii=False),
            )
    return pa.Table.from_pydict(rows, schema=PLAN_SCHEMA)


# ---------------------------------------------------------------- encoder actors
class RayEncoderActor:
    """One ``E5VEncoder`` per Ray actor (per GPU): decodes images (no resizing), embeds, builds the points.

    Points come from ``pipeline.embed_points`` (as in the local engine), so vectors and payloads are identical; an item
    the encoder refuses (a corrupt image…) becomes a ``skipped`` note for its file. Subclass to add hooks.

    Args:
        encoder_config: how to load the model; the actor loads it from ``encoder_config.model`` (a path every node
            can read, or a hub id).
        fingerprint_id: the fingerprint the driver stamped the collection with; a different one here fails loudly.
        sparse_spec: the collection's sparse encoder spec (a hybrid collection: text points also get its vector).
    """

    def __init__(self, encoder_config: EncoderConfig, fingerprint_id: str, sparse_spec: dict | None = None):
        from ..encoder import E5VEncoder

        self.encoder = E5VEncoder(config=encoder_config)
        if self.encoder.fingerprint["id"] != fingerprint_id:
            raise E5VConfigError(
                f"the encoder loaded on this worker has fingerprint {self.encoder.fingerprint['id']} but the collection "
                f"was prepared for {fingerprint_id}: every node must see the same model files ({encoder_config.model!r})"
            )
        self.fingerprint_id = fingerprint_id
        self.max_pixels = encoder_config.max_image_pixels
        self.sparse_encoder = encoder_from_spec(sparse_spec) if sparse_spec else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {name: [] for name in POINT_SCHEMA.names}

        def add(**values):
            for name in POINT_SCHEMA.names:
                out[name].append(values.get(name))

        skipped: list[tuple[str, str]] = []

        def skip(source: str, reason: str) -> None:
            skipped.append((source, reason))

        works: dict[str, FileWork] = {}
        for row in batch.to_pylist():
            if row["id"] is None:
                add(note=row["note"])
                continue
            source = row["source"]
            content = row["data"] if row["modality"] == "image" else row["text"]
            item = Item(row["id"], row["modality"], content, json.loads(row["payload"]))
            works.setdefault(source, FileWork(source, "new", [], set())).items.append(item)
        pending = []
        for work in works.values():
            if decode_images(work, self.max_pixels, skip):
                pending.extend((work, item) for item in work.items)
        points = embed_points(self.encoder, pending, self.fingerprint_id, skip, sparse_encoder=self.sparse_encoder)
        for point in points:
            vector = np.asarray(dense_vector(point), dtype=np.float32)
            sparse = sparse_vector(point)
            add(
                id=str(point.id),
                vector=vector.tobytes(),
                payload=json.dumps(point.payload, ensure_ascii=False),
                sparse=json.dumps([list(sparse.indices), list(sparse.values)]) if sparse is not None else None,
            )
        for source, reason in skipped:
            add(note=_note(source=source, status="skipped", reason=reason))
        return pa.Table.from_pydict(out, schema=POINT_SCHEMA)


# ---------------------------------------------------------------- the driver
def _init_ray(config: IngestConfig) -> None:
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {}  # worker logs (retries, skipped inputs) are forwarded to the driver's console
    if config.ray_address:
        kwargs["address"] = config.ray_address
    else:
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)


def ingest_ray(
    config: IngestConfig,
    encoder_config: EncoderConfig,
    store: QdrantStore | StoreConfig,
    *,
    encoder=None,
    progress: bool | None = None,
    embedder_class: type[RayEncoderActor] = RayEncoderActor,
):
    """Ingest ``config.paths`` into ``config.collection`` on Ray; same results as ``ingest.ingest``.

    Args:
        config: paths, collection, chunking, sync, and the Ray options (``ray_address``, ``replicas``,
            ``gpus_per_replica``, ``write_concurrency``, ``bulk_load``). Ray is initialised if it is not yet
            (``ray_address`` or a local instance).
        encoder_config: how each actor loads the model (every node must be able to read ``encoder_config.model``).
        store: an open ``QdrantStore`` or a ``StoreConfig`` to open one.
        encoder: an already loaded encoder on the driver, only used for its fingerprint and dimension (by default
            ``identity.fingerprint`` computes them on the driver from the checkpoint's config files, no weights: the
            driver must be able to read ``encoder_config.model`` too; each actor checks its loaded model matches).
        progress: Ray Data progress bars (``None`` = only on a terminal).
        embedder_class: the actor class (a ``RayEncoderActor`` subclass to add per-batch hooks).

    Returns:
        The run's ``pipeline.IngestReport`` (same counts as the local engine).

    Raises:
        CollectionMismatchError: the collection serves another model.
        StoreError: Qdrant failed permanently (the Ray job fails; re-running resumes).
    """
    started = time.perf_counter()
    _init_ray(config)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(progress) if progress is not None else os.isatty(2)
    owned = isinstance(store, StoreConfig)
    store = QdrantStore(store) if owned else store
    try:
        gpus = config.gpus_per_replica
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        cpus = ray.cluster_resources().get("CPU", 0)
        if not gpus and config.replicas >= cpus:
            raise E5VConfigError(
                f"{config.replicas} CPU encoder replicas would take all {cpus:g} CPUs of the Ray cluster and starve the "
                f"read and chunk tasks: use --replicas {max(1, int(cpus) - 1)} or fewer (or GPUs: --gpus-per-replica 1)"
            )
        if encoder is None:  # fingerprint and size from the config files; the model loads on the actors only
            encoder = EncoderFacts.of(encoder_config)
        report = IngestReport(collection=config.collection)
        with IngestRun(config, store, encoder, report) as run:
            _drive(config, encoder_config, encoder, store, run, report, gpus, embedder_class)
        report.skipped = len(report.skipped_inputs)
        report.seconds = time.perf_counter() - started
        return report
    finally:
        if owned:
            store.close()


def _drive(config, encoder_config, encoder, store, run: IngestRun, report, gpus, embedder_class) -> None:
    """Plan on the driver (unchanged files by stat), run the Ray pipeline over the rest, then the driver's part of
    each file's outcome (re-stamps, stale deletes) and ``sync``."""
    stored = run.stored
    spec = ChunkerSpec.for_encoder(encoder_config, config.chunk_size, config.chunk_overlap)
    chunker = load_chunker(spec)
    files: list[SourceFile] = []
    for entry in discover(
        config.paths, follow_symlinks=config.follow_symlinks, include=config.include, exclude=config.exclude
    ):
        if isinstance(entry, SkippedInput):
            report.skipped_inputs.append(entry)
        else:
            files.append(entry)
    report.discovered = len(files)
    todo = []
    for f in files:
        have = stored.get(f.source, {})
        if not config.verify and is_unchanged(f, chunker, have, config.pdf_pages, rechunk=config.rechunk):
            report.unchanged += 1
            note = earlier_chunking(chunker, have)
            if note:
                report.warnings.append({"source": f.source, "warning": note})
        elif (skipped := too_large(f, config.max_file_bytes)) is not None:
            report.skipped_inputs.append(skipped)
        else:
            todo.append(f)

    result: dict[str, Any] = {"points": 0, "notes": []}
    if todo:  # files whose stat changed: the collection is created (if new) only now
        physical = run.ensure_collection(encoder)
        sink = QdrantDatasink(physical, store.config, store=None if store.is_server else store)
        _run_pipeline(config, encoder_config, store, sink, todo, stored, run, gpus, embedder_class, spec)
        result = sink.result

    # ---------------------------------------------------------- driver: outcomes, re-stamps, stale deletes, sync
    notes = result["notes"]
    skipped = {n["source"]: n for n in notes if n["status"] == "skipped"}
    report.embedded = report.points_written = result["points"]
    for source, n in sorted(skipped.items()):
        report.skipped_inputs.append(SkippedInput(source, n["reason"], n.get("outcome", "failed")))
    for n in notes:
        for warning in n.get("warnings") or ():
            report.warnings.append({"source": n["source"], "warning": warning})
        if n["status"] in ("new", "replaced", "unchanged") and n["source"] not in skipped:
            setattr(report, n["status"], getattr(report, n["status"]) + 1)
            report.points_deleted += run.file_done(n["source"], n.get("restamp"), n.get("file_stat"), n.get("stale"))
    for source in run.vanished({f.source for f in files} | {s.source for s in report.skipped_inputs}):
        report.points_deleted += store.delete(run.physical, sorted(stored[source]))
        report.deleted += 1


def _run_pipeline(
    config, encoder_config, store, sink, files, stored, run: IngestRun, gpus, embedder_class, chunker
) -> None:
    stored_ref = ray.put({"index": stored, "entries": {f.source: f for f in files}})
    paths = sorted(f.source for f in files)
    ds = ray.data.read_binary_files(paths, include_paths=True)  # Ray sizes the read tasks and blocks
    ds = ds.map_batches(
        plan_files,
        batch_format="pyarrow",
        batch_size=16,
        # a CPU share unlike the actors' keeps reading + chunking in Ray tasks (not fused into the encoder actors)
        num_cpus=0.5,
        fn_kwargs={
            "chunker": chunker,
            "max_chunks": config.max_chunks_per_file,
            "pdf_pages": config.pdf_pages,
            "stored": [stored_ref],  # wrapped: the task fetches (and caches) it itself
        },
    )
    actor_resources = {"num_gpus": gpus} if gpus else {"num_cpus": 1}
    ds = ds.map_batches(
        embedder_class,
        batch_format="pyarrow",
        batch_size=max(encoder_config.batch_size * 4, 16),
        fn_constructor_kwargs={
            "encoder_config": encoder_config,
            "fingerprint_id": run.report.model_fingerprint,
            "sparse_spec": run.sparse_spec,
        },
        compute=ray.data.ActorPoolStrategy(size=config.replicas),
        **actor_resources,
    )
    if store.is_server:
        ds.write_datasink(sink, concurrency=config.write_concurrency)
    else:  # the embedded store: one process may open it, so the driver writes what the actors stream back
        sink._merge(sink.write(ds.iter_batches(batch_size=None, batch_format="pyarrow")))
