"""Qdrant Edge (``qdrant-edge-py``, beta) as an embedded engine, behind the part of the ``QdrantClient`` API we use.

Qdrant Edge runs the Qdrant engine in-process (segments, WAL, HNSW, quantization, payload indexes, mmap storage) but
knows only *shards*: one folder, one set of vectors, no collections, aliases or metadata. ``EdgeClient`` adds those
on top so ``QdrantStore``, ingest, reingest, search, evaluation and the Ray writer stay engine-agnostic:

- a store folder holds one shard folder per collection under ``collections/`` and a small manifest,
  ``e5v_edge.json``: collection name -> shard folder, creation options and metadata (the model stamp), plus the alias
  map. The manifest is replaced atomically (write a temp file, fsync, ``os.replace``, fsync the folder), so a crash at
  any point leaves either the old or the new mapping. Shard folders have unique names: a crash between creating a
  shard and recording it leaves an unreferenced folder that the next writer removes.
- one process per store folder: an exclusive ``flock`` on ``.e5v-edge.lock`` (holding the owner's pid); a second
  process gets an error naming the holder. The kernel releases the lock when the holder dies (kill -9 included).
- requests and results use ``qdrant_client.models`` (``PointStruct``, ``Filter``, ``ScoredPoint``, ``Record``…), so
  callers cannot tell the engines apart. ``get_collection`` answers the fields this package reads (params, HNSW,
  quantization, metadata, payload schema, counts), not the whole server ``CollectionInfo``.
- Edge builds indexes only when asked (``EdgeShard.optimize``). ``EdgeClient`` asks after every
  ``INDEX_EVERY_POINTS`` written points and when a client that wrote is closed, unless indexing is deferred
  (``update_collection(hnsw_config=HnswConfigDiff(m=0))``, what ``store.bulk_load`` sends); restoring ``m`` builds
  the index once. Segments smaller than ``INDEXING_THRESHOLD_KB`` stay plain (exact brute force, see the README).
- Qdrant maps each appendable-segment vector file twice (read-write, and read-only for sequential reads), so
  while the optimizer copies a segment RSS counts its vectors twice; ``_qe`` sets Qdrant's own opt-out
  (``QDRANT_NO_MULTI_MMAP=1``) unless the caller set it.
- Edge truncates its write-ahead log only up to what a flush persisted, so ``EdgeClient`` flushes a shard every
  ``FLUSH_EVERY_POINTS`` written points and before each optimizer run (the log is memory-mapped: unflushed, it stays
  resident).

Everything that touches the ``qdrant_edge`` module lives in this file, so a change of its beta API touches one file.

Example:
    >>> client = EdgeClient("qdrant_data")                                   # doctest: +SKIP
    >>> client.get_collections()                                             # doctest: +SKIP
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from .errors import E5VConfigError

__all__ = [
    "MANIFEST",
    "LOCK_FILE",
    "EdgeClient",
    "EdgeNotInstalledError",
    "detect_engine",
    "read_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

#: The manifest of an Edge store folder (collections, their options and stamps, aliases).
MANIFEST = "e5v_edge.json"
#: Lock file of an Edge store folder (one process at a time).
LOCK_FILE = ".e5v-edge.lock"
_FORMAT = "e5v-qdrant-edge"
_VERSION = 1
#: Segments holding more vector data than this (KB) get an HNSW index when optimized. 20,000 KB (~1,200 float32
#: 4096-d vectors) is the Qdrant server's own default (``indexing_threshold_kb``, qdrant config/config.yaml).
INDEXING_THRESHOLD_KB = 20_000
#: Run the optimizer after this many points were written since its last run (ingest keeps the index current).
INDEX_EVERY_POINTS = 20_000
#: Flush a shard after this many points were written since its last flush. Edge truncates its write-ahead log only
#: up to what a flush persisted, and the log is memory-mapped: without flushes a 100k-point ingest keeps its whole
#: ~2 GB log mapped and resident (measured with benchmarks/store.py); with them it stays near 100 MB.
FLUSH_EVERY_POINTS = 2_048
_DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10_000}


class EdgeNotInstalledError(E5VConfigError):
    """``qdrant-edge-py`` is not installed but an Edge store was asked for."""


#: Reciprocal rank fusion constant: score = sum of 1 / (k + rank); 2 is the Qdrant server's value, so Edge and a server
#: fuse alike.
RRF_K = 2


#: Qdrant's own switch (``QDRANT_NO_MULTI_MMAP``, qdrant ``lib/common/memory/src/mmap_ops.rs``) to map each chunked
#: vector file once. By default Qdrant maps it twice, read-write and read-only for sequential reads, and the
#: optimizer copies a segment through the second map while the first still holds it: RSS counts the segment's
#: vectors twice for the whole HNSW build (10k E5-V points: peak 0.71 -> 0.54 GiB, the build no slower;
#: benchmarks/store.py). Set before the engine's first map, unless the caller set it (an empty value keeps both maps).
_SINGLE_MMAP_ENV = "QDRANT_NO_MULTI_MMAP"


@functools.cache
def _qe():
    os.environ.setdefault(_SINGLE_MMAP_ENV, "1")
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EdgeNotInstalledError(
            "the Qdrant Edge engine needs the package qdrant-edge-py: pip install qdrant-edge-py "
            "(or use --embedded local for a qdrant-client local-mode folder)"
        ) from exc
    return qdrant_edge


# ---------------------------------------------------------------- folder: engine detection, manifest
def detect_engine(path: str) -> str | None:
    """The engine of an embedded store folder: ``"edge"``, ``"local"`` (qdrant-client local mode) or ``None`` (new).
    The Edge manifest decides first: ``QdrantClient(path=...)`` opened on an Edge folder writes a ``meta.json`` there."""
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return "edge"
    if os.path.isfile(os.path.join(path, "meta.json")) or os.path.isdir(os.path.join(path, "collection")):
        return "local"
    return None


def _empty_manifest() -> dict[str, Any]:
    return {"format": _FORMAT, "version": _VERSION, "collections": {}, "aliases": {}}


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of the Edge store in ``path`` (an empty one if the folder is new)."""
    file = os.path.join(path, MANIFEST)
    if not os.path.exists(file):
        return _empty_manifest()
    with open(file, encoding="utf-8") as fh:
        data = json.load(fh)
    if data.get("format") != _FORMAT or data.get("version", 0) > _VERSION:
        raise E5VConfigError(
            f"{file} is not a manifest this version of e5v-qdrant can read (format {data.get('format')!r}, "
            f"version {data.get('version')!r}): upgrade e5v-qdrant"
        )
    return data


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically: temp file, fsync, ``os.replace``, fsync of the folder."""
    tmp = os.path.join(path, f".{MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(path, MANIFEST))
    _fsync_dir(path)


class _FolderLock:
    """Exclusive ``flock`` on the store folder's lock file, holding the owner's pid."""

    def __init__(self, path: str):
        self.file = os.path.join(path, LOCK_FILE)
        self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(self.fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            # "already accessed by another instance" is what qdrant-client local mode says: store.is_transient
            # retries it and store.open_client turns it into a clear error.
            raise RuntimeError(
                f"Storage folder {path} is already accessed by another instance of Qdrant Edge (pid {holder})"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- qdrant_client models -> Edge
def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _vector_params(params: dict[str, Any]):
    qe = _qe()
    kwargs: dict[str, Any] = {"size": int(params["size"]), "distance": _distance(params["distance"])}
    if params.get("on_disk"):
        kwargs["on_disk"] = True
    datatype = _enum_name(params.get("datatype") or "float32")
    if datatype != "float32":
        kwargs["datatype"] = {"float16": qe.VectorStorageDatatype.Float16, "uint8": qe.VectorStorageDatatype.Uint8}[
            datatype
        ]
    return qe.EdgeVectorParams(**kwargs)


def _sparse_params(params: dict[str, Any]):
    """A sparse vector's Edge parameters; ``modifier: idf`` makes the engine weight query terms by their IDF."""
    qe = _qe()
    idf = _enum_name(params.get("modifier") or "none") == "idf"
    return qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if idf else None)


def _distance(name: Any):
    qe = _qe()
    return {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}[_enum_name(name)]


def _quantization(config: dict[str, Any] | None):
    if not config:
        return None
    qe = _qe()
    if "scalar" in config:
        scalar = config["scalar"]
        return qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=scalar.get("quantile"), always_ram=scalar.get("always_ram")
        )
    if "binary" in config:
        return qe.BinaryQuantizationConfig(always_ram=config["binary"].get("always_ram"))
    raise E5VConfigError(f"quantization {config} is not supported by the Edge engine (use scalar int8 or binary)")


def _edge_config(spec: dict[str, Any]):
    qe = _qe()
    hnsw = {**_DEFAULT_HNSW, **{k: v for k, v in (spec.get("hnsw_config") or {}).items() if v is not None}}
    if not hnsw.get("m"):  # deferred (bulk load) is an optimizer decision here, not a shard setting
        hnsw["m"] = _DEFAULT_HNSW["m"]
    return qe.EdgeConfig(
        vectors={name: _vector_params(p) for name, p in spec["vectors"].items()},
        sparse_vectors={name: _sparse_params(p) for name, p in (spec.get("sparse_vectors") or {}).items()} or None,
        hnsw_config=qe.HnswIndexConfig(
            m=int(hnsw["m"]),
            ef_construct=int(hnsw["ef_construct"]),
            full_scan_threshold=int(hnsw["full_scan_threshold"]),
            payload_m=hnsw.get("payload_m"),
        ),
        quantization_config=_quantization(spec.get("quantization_config")),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
    )


def _point_id(value: Any) -> int | str:
    if isinstance(value, int):
        return value
    return str(value)


def _ids(values: Iterable[Any]) -> list[Any]:
    return [_point_id(v) for v in values]


def _vector(value: Any) -> Any:
    from qdrant_client import models

    if isinstance(value, models.SparseVector):
        return _qe().SparseVector(indices=list(value.indices), values=[float(v) for v in value.values])
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {name: _vector(v) for name, v in value.items()}
    return value


def _match(match):
    qe = _qe()
    from qdrant_client import models

    if isinstance(match, models.MatchValue):
        return qe.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(list(match.any))
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(list(match.except_))
    if isinstance(match, models.MatchText):
        return qe.MatchText(match.text)
    raise E5VConfigError(f"filter match {type(match).__name__} is not supported by the Edge engine")


def _condition(cond):
    qe = _qe()
    from qdrant_client import models

    if isinstance(cond, models.Filter):
        return _filter(cond)
    if isinstance(cond, models.FieldCondition):
        kwargs: dict[str, Any] = {"key": cond.key}
        if cond.match is not None:
            kwargs["match"] = _match(cond.match)
        if cond.range is not None:
            bounds = {k: getattr(cond.range, k) for k in ("gt", "gte", "lt", "lte")}
            if isinstance(cond.range, models.DatetimeRange):
                kwargs["range"] = qe.RangeDateTime(**{k: v if v is None else str(v) for k, v in bounds.items()})
            else:
                kwargs["range"] = qe.RangeFloat(**bounds)
        if cond.is_empty is not None:
            kwargs["is_empty"] = cond.is_empty
        if cond.is_null is not None:
            kwargs["is_null"] = cond.is_null
        if cond.values_count is not None:
            kwargs["values_count"] = qe.ValuesCount(**cond.values_count.model_dump())
        if cond.geo_bounding_box or cond.geo_radius or cond.geo_polygon:
            raise E5VConfigError(f"geo filters on {cond.key!r} are not supported by the Edge engine here")
        return qe.FieldCondition(**kwargs)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition(set(_ids(cond.has_id)))
    if isinstance(cond, models.IsEmptyCondition):
        return qe.IsEmptyCondition(cond.is_empty.key)
    if isinstance(cond, models.IsNullCondition):
        return qe.IsNullCondition(cond.is_null.key)
    if isinstance(cond, models.NestedCondition):
        return qe.NestedCondition(cond.nested.key, _filter(cond.nested.filter))
    raise E5VConfigError(f"filter condition {type(cond).__name__} is not supported by the Edge engine")


def _filter(flt):
    """A ``qdrant_client.models.Filter`` as an Edge ``Filter`` (``None`` stays ``None``)."""
    if flt is None:
        return None
    qe = _qe()

    def clauses(value):
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return [_condition(c) for c in items]

    kwargs = {"must": clauses(flt.must), "should": clauses(flt.should), "must_not": clauses(flt.must_not)}
    if flt.min_should is not None:
        kwargs["min_should"] = qe.MinShould(
            conditions=[_condition(c) for c in flt.min_should.conditions], min_count=flt.min_should.min_count
        )
    return qe.Filter(**kwargs)


def _with_payload(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise E5VConfigError(f"with_payload={value!r} is not supported by the Edge engine (use a bool or field list)")


def _with_vector(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return bool(value)
    return list(value)


def _search_params(params):
    if params is None:
        return None
    qe = _qe()
    quantization = None
    if params.quantization is not None:
        quantization = qe.QuantizationSearchParams(
            ignore=bool(params.quantization.ignore),
            rescore=params.quantization.rescore,
            oversampling=params.quantization.oversampling,
        )
    return qe.SearchParams(hnsw_ef=params.hnsw_ef, exact=bool(params.exact), quantization=quantization)


def _query_vector(query: Any):
    """A dense query vector as floats, or a sparse one as Edge's ``SparseVector``."""
    from qdrant_client import models

    if isinstance(query, models.NearestQuery):
        query = query.nearest
    if isinstance(query, models.SparseVector):
        return _vector(query)
    if hasattr(query, "tolist"):
        query = query.tolist()
    if not isinstance(query, list):
        raise E5VConfigError(f"query {type(query).__name__} is not supported by the Edge engine (give a dense vector)")
    return [float(x) for x in query]


# ---------------------------------------------------------------- Edge results -> qdrant_client models
def _out_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


def _out_vector(value: Any) -> Any:
    """Edge's vectors as ``qdrant_client`` ones (a sparse vector becomes ``models.SparseVector``)."""
    from qdrant_client import models

    if isinstance(value, dict):
        return {name: _out_vector(v) for name, v in value.items()}
    if isinstance(value, _qe().SparseVector):
        return models.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def _record(rec):
    from qdrant_client import models

    return models.Record(id=_out_id(rec.id), payload=rec.payload, vector=_out_vector(rec.vector))


def _scored(point):
    from qdrant_client import models

    return models.ScoredPoint(
        id=_out_id(point.id),
        version=point.version,
        score=point.score,
        payload=point.payload,
        vector=_out_vector(point.vector),
    )


# ---------------------------------------------------------------- the client
class EdgeClient:
    """An embedded Qdrant Edge store folder behind the ``QdrantClient`` methods this package calls.

    Args:
        path: the store folder (created if missing). Must not be a qdrant-client local-mode folder.

    Raises:
        E5VConfigError: ``path`` is a local-mode folder or its manifest is unreadable.
        RuntimeError: another process holds the folder (the message names its pid; ``QdrantStore`` retries it).
    """

    #: What ``QdrantStore.engine`` reports (wrappers that delegate attributes report it too).
    e5v_engine = "edge"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if detect_engine(self.path) == "local":
            raise E5VConfigError(
                f"{path!r} is a qdrant-client local-mode store; open it with --embedded local "
                f"(or copy it into an Edge store with `e5v-qdrant migrate`)"
            )
        os.makedirs(os.path.join(self.path, "collections"), exist_ok=True)
        self._lock = _FolderLock(self.path)
        self._shards: dict[str, Any] = {}
        self._written: dict[str, int] = {}
        self._unflushed: dict[str, int] = {}
        try:
            self._manifest = read_manifest(self.path)
            if not os.path.exists(os.path.join(self.path, MANIFEST)):
                write_manifest(self.path, self._manifest)
            self._remove_orphans()
        except BaseException:
            self._lock.release()
            raise

    # ------------------------------------------------------------ bookkeeping
    def _remove_orphans(self) -> None:
        """Delete shard folders no manifest entry refers to (a crash between creating and recording them)."""
        used = {spec["dir"] for spec in self._manifest["collections"].values()}
        root = os.path.join(self.path, "collections")
        for entry in os.listdir(root):
            if entry not in used:
                logger.info("removing unreferenced Edge shard folder %s (left by an interrupted run)", entry)
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)

    def _commit(self, manifest: dict[str, Any]) -> None:
        write_manifest(self.path, manifest)
        self._manifest = manifest

    def _spec(self, name: str) -> dict[str, Any]:
        spec = self._manifest["collections"].get(name)
        if spec is None:
            target = self._manifest["aliases"].get(name)
            spec = self._manifest["collections"].get(target) if target else None
        if spec is None:
            raise ValueError(f"Collection {name} not found")
        return spec

    def resolve(self, name: str) -> str:
        """The collection behind ``name`` (an alias or a collection name).

        Raises:
            ValueError: neither exists (qdrant-client's "not found" error).
        """
        return self._physical(name)

    def _physical(self, name: str) -> str:
        if name in self._manifest["collections"]:
            return name
        target = self._manifest["aliases"].get(name)
        if target in self._manifest["collections"]:
            return target
        raise ValueError(f"Collection {name} not found")

    def _shard(self, name: str):
        physical = self._physical(name)
        shard = self._shards.get(physical)
        if shard is None:
            spec = self._manifest["collections"][physical]
            shard = _qe().EdgeShard.load(os.path.join(self.path, "collections", spec["dir"]))
            self._shards[physical] = shard
        return shard

    def _after_write(self, physical: str, count: int) -> None:
        self._written[physical] = self._written.get(physical, 0) + count
        self._unflushed[physical] = self._unflushed.get(physical, 0) + count
        if self._written[physical] >= INDEX_EVERY_POINTS and not self._deferred(physical):
            self._optimize(physical)  # flushes first
        elif self._unflushed[physical] >= FLUSH_EVERY_POINTS:
            self._flush(physical)

    def _flush(self, physical: str) -> None:
        """Persist the shard's segments, which lets Edge truncate its (memory-mapped) write-ahead log."""
        self._shard(physical).flush()
        self._unflushed[physical] = 0

    def _deferred(self, physical: str) -> bool:
        return (self._manifest["collections"][physical].get("hnsw_config") or {}).get("m") == 0

    def _optimize(self, physical: str) -> None:
        shard = self._shard(physical)
        logger.info("Qdrant Edge: optimizing %s (building indexes over large segments)", physical)
        self._flush(physical)  # truncate the log first: its mapped pages are not held through the index build
        shard.optimize()
        self._written[physical] = 0

    # ------------------------------------------------------------ collections
    def get_collections(self):
        from qdrant_client import models

        return models.CollectionsResponse(
            collections=[models.CollectionDescription(name=n) for n in sorted(self._manifest["collections"])]
        )

    def collection_exists(self, collection_name: str) -> bool:
        return collection_name in self._manifest["collections"]

    def create_collection(
        self,
        collection_name: str,
        vectors_config,
        *,
        metadata: dict[str, Any] | None = None,
        hnsw_config=None,
        quantization_config=None,
        sparse_vectors_config=None,
        **server_only: Any,
    ) -> bool:
        """Create a collection (one shard). Sharding/replication options are ignored (one embedded shard)."""
        from qdrant_client import models

        if collection_name in self._manifest["collections"]:
            raise ValueError(f"Collection {collection_name} already exists")
        if isinstance(vectors_config, models.VectorParams):
            vectors_config = {"": vectors_config}
        if not isinstance(vectors_config, dict) or not vectors_config:
            raise E5VConfigError("the Edge engine needs dense vectors_config (named VectorParams)")
        unsupported = [name for name, p in vectors_config.items() if p.quantization_config or p.multivector_config]
        if unsupported:
            raise E5VConfigError(f"per-vector quantization/multivectors {unsupported} are not supported on Edge")
        spec = {
            "dir": f"{uuid.uuid4().hex}",
            "vectors": {name: p.model_dump(mode="json", exclude_none=True) for name, p in vectors_config.items()},
            "hnsw_config": hnsw_config.model_dump(mode="json", exclude_none=True) if hnsw_config else None,
            "quantization_config": quantization_config.model_dump(mode="json", exclude_none=True)
            if quantization_config
            else None,
            "sparse_vectors": {
                name: p.model_dump(mode="json", exclude_none=True) for name, p in (sparse_vectors_config or {}).items()
            },
            "metadata": metadata or {},
            "payload_schema": {},
        }
        shard = _qe().EdgeShard.create(os.path.join(self.path, "collections", spec["dir"]), _edge_config(spec))
        manifest = json.loads(json.dumps(self._manifest))
        manifest["collections"][collection_name] = spec
        self._commit(manifest)  # the collection exists from here on
        self._shards[collection_name] = shard
        return True

    def delete_collection(self, collection_name: str, **_: Any) -> bool:
        """Delete a collection and the aliases pointing at it (manifest first, then its folder)."""
        if collection_name not in self._manifest["collections"]:
            return False
        manifest = json.loads(json.dumps(self._manifest))
        spec = manifest["collections"].pop(collection_name)
        manifest["aliases"] = {a: c for a, c in manifest["aliases"].items() if c != collection_name}
        self._commit(manifest)
        shard = self._shards.pop(collection_name, None)
        if shard is not None:
            shard.close()
        self._written.pop(collection_name, None)
        self._unflushed.pop(collection_name, None)
        shutil.rmtree(os.path.join(self.path, "collections", spec["dir"]), ignore_errors=True)
        return True

    def get_collection(self, collection_name: str):
        """What this package reads of ``CollectionInfo``: config (params, HNSW, quantization, metadata), counts."""
        from qdrant_client import models

        physical = self._physical(collection_name)
        spec = self._manifest["collections"][physical]
        info = self._shard(physical).info()
        hnsw = {**_DEFAULT_HNSW, **(spec.get("hnsw_config") or {})}
        quantization = None
        if spec.get("quantization_config"):
            q = spec["quantization_config"]
            quantization = (
                models.ScalarQuantization.model_validate(q)
                if "scalar" in q
                else models.BinaryQuantization.model_validate(q)
            )
        return SimpleNamespace(
            status=models.CollectionStatus.GREEN,
            points_count=info.points_count,
            indexed_vectors_count=info.indexed_vectors_count,
            segments_count=info.segments_count,
            payload_schema=dict(spec.get("payload_schema") or {}),
            config=SimpleNamespace(
                params=SimpleNamespace(
                    vectors={n: models.VectorParams.model_validate(p) for n, p in spec["vectors"].items()},
                    sparse_vectors={
                        n: models.SparseVectorParams.model_validate(p)
                        for n, p in (spec.get("sparse_vectors") or {}).items()
                    }
                    or None,
                ),
                hnsw_config=models.HnswConfig(**hnsw),
                quantization_config=quantization,
                metadata=dict(spec.get("metadata") or {}),
            ),
        )

    def update_collection(self, collection_name: str, *, hnsw_config=None, metadata=None, **_: Any) -> bool:
        """Record HNSW ``m`` (0 defers indexing; restoring it builds the index once) and/or merge ``metadata``."""
        physical = self._physical(collection_name)
        manifest = json.loads(json.dumps(self._manifest))
        spec = manifest["collections"][physical]
        if metadata is not None:
            spec["metadata"] = {**(spec.get("metadata") or {}), **metadata}
        was_deferred = self._deferred(physical)
        if hnsw_config is not None:
            spec["hnsw_config"] = {
                **(spec.get("hnsw_config") or {}),
                **hnsw_config.model_dump(mode="json", exclude_none=True),
            }
        self._commit(manifest)
        if was_deferred and not self._deferred(physical):
            self._optimize(physical)
        return True

    def create_payload_index(self, collection_name: str, field_name: str, field_schema=None, **_: Any):
        qe = _qe()
        physical = self._physical(collection_name)
        kind = _enum_name(field_schema or "keyword")
        schema = {
            "keyword": qe.PayloadSchemaType.Keyword,
            "integer": qe.PayloadSchemaType.Integer,
            "float": qe.PayloadSchemaType.Float,
            "bool": qe.PayloadSchemaType.Bool,
            "text": qe.PayloadSchemaType.Text,
            "datetime": qe.PayloadSchemaType.Datetime,
            "uuid": qe.PayloadSchemaType.Uuid,
        }[kind]
        self._shard(physical).update(qe.UpdateOperation.create_field_index(field_name, schema))
        manifest = json.loads(json.dumps(self._manifest))
        manifest["collections"][physical].setdefault("payload_schema", {})[field_name] = kind
        self._commit(manifest)

    # ------------------------------------------------------------ aliases (one manifest write = atomic switch)
    def get_aliases(self):
        from qdrant_client import models

        return models.CollectionsAliasesResponse(
            aliases=[
                models.AliasDescription(alias_name=a, collection_name=c)
                for a, c in sorted(self._manifest["aliases"].items())
            ]
        )

    def update_collection_aliases(self, change_aliases_operations: Sequence[Any], **_: Any) -> bool:
        """Apply create/delete/rename alias operations all at once (one atomic manifest replacement)."""
        from qdrant_client import models

        manifest = json.loads(json.dumps(self._manifest))
        aliases = manifest["aliases"]
        for op in change_aliases_operations:
            if isinstance(op, models.CreateAliasOperation):
                if op.create_alias.collection_name not in manifest["collections"]:
                    raise ValueError(f"Collection {op.create_alias.collection_name} not found")
                aliases[op.create_alias.alias_name] = op.create_alias.collection_name
            elif isinstance(op, models.DeleteAliasOperation):
                aliases.pop(op.delete_alias.alias_name, None)
            elif isinstance(op, models.RenameAliasOperation):
                aliases[op.rename_alias.new_alias_name] = aliases.pop(op.rename_alias.old_alias_name)
            else:
                raise E5VConfigError(f"alias operation {type(op).__name__} is not supported")
        self._commit(manifest)
        return True

    # ------------------------------------------------------------ points
    def upsert(self, collection_name: str, points: Sequence[Any], **_: Any):
        """Upsert ``PointStruct`` s (durable in Edge's WAL when this returns, like ``wait=True``)."""
        from qdrant_client import models

        qe = _qe()
        physical = self._physical(collection_name)
        if isinstance(points, models.Batch):
            vectors = points.vectors
            points = [
                models.PointStruct(
                    id=pid,
                    vector={k: v[i] for k, v in vectors.items()} if isinstance(vectors, dict) else vectors[i],
                    payload=(points.payloads or [None] * len(points.ids))[i],
                )
                for i, pid in enumerate(points.ids)
            ]
        edge_points = []
        for p in points:
            vector = _vector(p.vector)
            if not isinstance(vector, dict):
                vector = {"": vector}
            edge_points.append(qe.Point(id=_point_id(p.id), vector=vector, payload=p.payload or {}))
        self._shard(physical).update(qe.UpdateOperation.upsert_points(edge_points))
        self._after_write(physical, len(edge_points))
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def delete(self, collection_name: str, points_selector, **_: Any):
        from qdrant_client import models

        qe = _qe()
        shard = self._shard(collection_name)
        if isinstance(points_selector, models.PointIdsList):
            op = qe.UpdateOperation.delete_points(_ids(points_selector.points))
        elif isinstance(points_selector, models.FilterSelector):
            op = qe.UpdateOperation.delete_points_by_filter(_filter(points_selector.filter))
        elif isinstance(points_selector, models.Filter):
            op = qe.UpdateOperation.delete_points_by_filter(_filter(points_selector))
        else:
            op = qe.UpdateOperation.delete_points(_ids(points_selector))
        shard.update(op)
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def set_payload(self, collection_name: str, payload: dict[str, Any], points, **_: Any):
        from qdrant_client import models

        qe = _qe()
        ids = points.points if isinstance(points, models.PointIdsList) else points
        self._shard(collection_name).update(qe.UpdateOperation.set_payload(_ids(ids), payload))
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def scroll(
        self,
        collection_name: str,
        scroll_filter=None,
        limit: int = 10,
        offset=None,
        with_payload: Any = True,
        with_vectors: Any = False,
        **_: Any,
    ):
        qe = _qe()
        records, next_offset = self._shard(collection_name).scroll(
            qe.ScrollRequest(
                offset=None if offset is None else _point_id(offset),
                limit=limit,
                filter=_filter(scroll_filter),
                with_payload=_with_payload(with_payload),
                with_vector=_with_vector(with_vectors),
            )
        )
        return [_record(r) for r in records], None if next_offset is None else _out_id(next_offset)

    def retrieve(
        self, collection_name: str, ids: Sequence[Any], with_payload: Any = True, with_vectors: Any = False, **_: Any
    ):
        records = self._shard(collection_name).retrieve(
            _ids(ids), with_payload=_with_payload(with_payload), with_vector=_with_vector(with_vectors)
        )
        return [_record(r) for r in records]

    def count(self, collection_name: str, count_filter=None, exact: bool = True, **_: Any):
        from qdrant_client import models

        qe = _qe()
        n = self._shard(collection_name).count(qe.CountRequest(exact=True, filter=_filter(count_filter)))
        return models.CountResult(count=n)

    def _request(
        self,
        query,
        using=None,
        limit=10,
        offset=None,
        filter=None,
        params=None,
        score_threshold=None,
        with_payload=True,
        with_vector=False,
    ):
        qe = _qe()
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=qe.Query.Nearest(_query_vector(query), using=using or ""),
            filter=_filter(filter),
            params=_search_params(params),
            score_threshold=score_threshold,
            with_payload=_with_payload(with_payload),
            with_vector=_with_vector(with_vector),
        )

    def _fusion_request(self, query, prefetch, limit, offset, query_filter, with_payload, with_vector):
        from qdrant_client import models

        qe = _qe()
        if not isinstance(query, models.FusionQuery):
            raise E5VConfigError("the Edge engine fuses prefetches only with a FusionQuery (rrf or dbsf)")
        fusion = qe.Fusion.Dbsf() if query.fusion == models.Fusion.DBSF else qe.Fusion.Rrf(k=RRF_K)
        prefetches = [
            qe.Prefetch(
                limit=p.limit or 10,
                query=qe.Query.Nearest(_query_vector(p.query), using=p.using or ""),
                filter=_filter(p.filter),
                params=_search_params(p.params),
            )
            for p in (prefetch if isinstance(prefetch, list) else [prefetch])
        ]
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=fusion,
            prefetches=prefetches,
            filter=_filter(query_filter),
            with_payload=_with_payload(with_payload),
            with_vector=_with_vector(with_vector),
        )

    def query_points(
        self,
        collection_name: str,
        query=None,
        using: str | None = None,
        query_filter=None,
        search_params=None,
        limit: int = 10,
        offset: int | None = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        score_threshold: float | None = None,
        prefetch=None,
        **_: Any,
    ):
        """Nearest points to a dense or sparse ``query`` vector, or ``prefetch`` results fused by a ``FusionQuery``
        (reciprocal rank fusion with Qdrant's k = 2, or distribution-based score fusion), as a server answers."""
        from qdrant_client.http import models as rest

        if prefetch is not None:
            request = self._fusion_request(query, prefetch, limit, offset, query_filter, with_payload, with_vectors)
        else:
            request = self._request(
                query, using, limit, offset, query_filter, search_params, score_threshold, with_payload, with_vectors
            )
        return rest.QueryResponse(points=[_scored(p) for p in self._shard(collection_name).query(request)])

    def query_batch_points(self, collection_name: str, requests: Sequence[Any], **_: Any):
        from qdrant_client.http import models as rest

        qe = _qe()
        batch = qe.QueryBatchRequest(
            [
                self._request(
                    r.query,
                    r.using,
                    r.limit or 10,
                    r.offset,
                    r.filter,
                    r.params,
                    r.score_threshold,
                    True if r.with_payload is None else r.with_payload,
                    r.with_vector or False,
                )  # fmt: skip
                for r in requests
            ]
        )
        results = self._shard(collection_name).query_batch(batch)
        return [rest.QueryResponse(points=[_scored(p) for p in points]) for points in results]

    # ------------------------------------------------------------ lifecycle
    def close(self, **_: Any) -> None:
        """Build pending indexes of collections this client wrote to (unless deferred), flush, release the folder."""
        if self._lock.fd is None:
            return
        try:
            for physical, shard in list(self._shards.items()):
                if self._written.get(physical) and not self._deferred(physical):
                    self._optimize(physical)
                shard.flush()
                shard.close()
        finally:
            self._shards.clear()
            self._lock.release()

    def __del__(self):  # pragma: no cover - best effort for clients never closed
        try:
            if getattr(self, "_lock", None) is not None and self._lock.fd is not None:
                self.close()
        except Exception:
            pass
