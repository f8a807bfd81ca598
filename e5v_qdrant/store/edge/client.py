"""``EdgeClient``: an Edge store folder behind the ``QdrantClient`` methods ``QdrantStore`` calls.

Collections are shards under ``collections/`` named in the folder's manifest (``folder``); requests and results are
converted by ``convert``. Edge builds indexes only when asked (``EdgeShard.optimize``): after every
``INDEX_EVERY_POINTS`` written points and when a client that wrote is closed, unless indexing is deferred
(``update_collection(hnsw_config=HnswConfigDiff(m=0))``, what ``store.bulk_load`` sends: segments are sealed without
graphs); restoring ``m`` builds one graph per segment. Edge truncates its write-ahead log only up to what a flush
persisted, so a shard is flushed every ``FLUSH_EVERY_POINTS`` written points and before each optimizer run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from ...errors import E5VConfigError
from ..hnsw import HNSW_EF_ONE_GRAPH, QDRANT_GENERIC_HNSW, index_defaults, recorded_hnsw_ef, search_record
from .convert import (
    RRF_K,
    client_id,
    client_record,
    client_scored_point,
    edge_config,
    edge_filter,
    edge_id,
    edge_ids,
    edge_query_vector,
    edge_search_params,
    edge_vector,
    edge_with_payload,
    edge_with_vector,
    enum_name,
    qdrant_edge_module,
)
from .folder import MANIFEST, FolderLock, detect_engine, read_store_manifest, write_store_manifest

__all__ = ["EdgeClient", "INDEX_EVERY_POINTS", "FLUSH_EVERY_POINTS"]

logger = logging.getLogger(__name__)

#: Run the optimizer after this many points were written since its last run (ingest keeps the index current).
INDEX_EVERY_POINTS = 20_000
#: Flush a shard after this many points were written since its last flush. Edge truncates its write-ahead log only
#: up to what a flush persisted, and the log is memory-mapped: without flushes a large ingest keeps its whole log
#: mapped and resident (measurements: README, "Flushes").
FLUSH_EVERY_POINTS = 2_048


class EdgeClient:
    """An embedded Qdrant Edge store folder behind the ``QdrantClient`` methods this package calls.

    Args:
        path: the store folder (created if missing). Must not be a qdrant-client local-mode folder.
        defer_indexing: never build indexes while writing (not every ``INDEX_EVERY_POINTS``): what is written stays
            in plain segments, searched exactly, until ``optimize`` or ``close`` builds the index once. Writes then
            cost what appending costs (the LlamaIndex store's ``add``).

    Raises:
        E5VConfigError: ``path`` is a local-mode folder or its manifest is unreadable.
        RuntimeError: another process holds the folder (the message names its pid; ``QdrantStore`` retries it).
    """

    #: What ``QdrantStore.engine`` reports (wrappers that delegate attributes report it too).
    e5v_engine = "edge"

    def __init__(self, path: str, *, defer_indexing: bool = False):
        self.path = os.path.abspath(path)
        self.defer_indexing = defer_indexing
        if detect_engine(self.path) == "local":
            raise E5VConfigError(
                f"{path!r} is a qdrant-client local-mode store; open it with --embedded local "
                f"(or copy it into an Edge store with `e5v-qdrant migrate`)"
            )
        os.makedirs(os.path.join(self.path, "collections"), exist_ok=True)
        self._lock = FolderLock(self.path)
        self._shards: dict[str, Any] = {}
        self._written: dict[str, int] = {}
        self._unflushed: dict[str, int] = {}
        try:
            self._manifest = read_store_manifest(self.path)
            if not os.path.exists(os.path.join(self.path, MANIFEST)):
                write_store_manifest(self.path, self._manifest)
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
        write_store_manifest(self.path, manifest)
        self._manifest = manifest

    def resolve(self, name: str) -> str | None:
        """The collection behind ``name`` (an alias or a collection name), ``None`` if neither exists — as
        ``QdrantStore.resolve`` answers on every engine."""
        try:
            return self._physical(name)
        except ValueError:
            return None

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
            shard = qdrant_edge_module().EdgeShard.load(os.path.join(self.path, "collections", spec["dir"]))
            self._shards[physical] = shard
        return shard

    def _reload(self, physical: str) -> None:
        """Reopen a collection's shard with the configuration its manifest entry now records."""
        shard = self._shards.pop(physical, None)
        if shard is not None:
            shard.flush()
            shard.close()
        spec = self._manifest["collections"][physical]
        path = os.path.join(self.path, "collections", spec["dir"])
        self._shards[physical] = qdrant_edge_module().EdgeShard.load(path, edge_config(spec))
        self._unflushed[physical] = 0

    def _after_write(self, physical: str, count: int) -> None:
        self._written[physical] = self._written.get(physical, 0) + count
        self._unflushed[physical] = self._unflushed.get(physical, 0) + count
        if self._written[physical] >= INDEX_EVERY_POINTS and not self.defer_indexing:
            self._optimize(physical)  # flushes first; deferred (m = 0): seals segments, builds no graph
        elif self._unflushed[physical] >= FLUSH_EVERY_POINTS:
            self._flush(physical)

    def _flush(self, physical: str) -> None:
        """Persist the shard's segments, which lets Edge truncate its (memory-mapped) write-ahead log."""
        self._shard(physical).flush()
        self._unflushed[physical] = 0

    def _deferred(self, physical: str) -> bool:
        return (self._manifest["collections"][physical].get("hnsw_config") or {}).get("m") == 0

    def _optimize(self, physical: str) -> bool:
        shard = self._shard(physical)
        logger.info("Qdrant Edge: optimizing %s (building indexes over large segments)", physical)
        self._flush(physical)  # truncate the log first: its mapped pages are not held through the index build
        changed = shard.optimize()
        self._written[physical] = 0
        return bool(changed)

    def _unindexed(self, physical: str) -> int:
        """Points of ``physical`` outside any index (plain segments)."""
        info = self._shard(physical).info()
        return max(0, info.points_count - (info.indexed_vectors_count or 0))

    def optimize(self, collection_name: str) -> bool:
        """Build the pending indexes of a collection now (a collection or alias), blocking until done; returns
        whether any segment changed. Runs also when indexing is deferred (``defer_indexing``, or HNSW ``m=0``)."""
        return self._optimize(self._physical(collection_name))

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
        """Create a collection (one shard). Sharding/replication options are ignored (one embedded shard).

        The HNSW parameters not given and the search ef (``hnsw.SEARCH_METADATA_KEY`` in ``metadata``) not given
        are the store's defaults (``store.hnsw``), recorded in the manifest."""
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
            "hnsw_config": {
                **index_defaults(),
                **(hnsw_config.model_dump(mode="json", exclude_none=True) if hnsw_config else {}),
            },
            "quantization_config": quantization_config.model_dump(mode="json", exclude_none=True)
            if quantization_config
            else None,
            "sparse_vectors": {
                name: p.model_dump(mode="json", exclude_none=True) for name, p in (sparse_vectors_config or {}).items()
            },
            # deferred indexing builds one graph over everything: the wider search (store.hnsw)
            "metadata": {**search_record(HNSW_EF_ONE_GRAPH if self.defer_indexing else None), **(metadata or {})},
            "payload_schema": {},
        }
        shard = qdrant_edge_module().EdgeShard.create(
            os.path.join(self.path, "collections", spec["dir"]), edge_config(spec)
        )
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
        hnsw = {**QDRANT_GENERIC_HNSW, **(spec.get("hnsw_config") or {})}
        quantization = None
        if spec.get("quantization_config"):
            q = spec["quantization_config"]
            kinds = {"scalar": models.ScalarQuantization, "turbo": models.TurboQuantization}
            quantization = next((k for key, k in kinds.items() if key in q), models.BinaryQuantization).model_validate(
                q
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
        if was_deferred != self._deferred(physical):
            self._reload(physical)  # the shard's own HNSW config follows (m = 0: no graphs)
        if was_deferred and not self._deferred(physical):
            self._optimize(physical)  # a graph per segment
        return True

    def create_payload_index(self, collection_name: str, field_name: str, field_schema=None, **_: Any):
        qe = qdrant_edge_module()
        physical = self._physical(collection_name)
        kind = enum_name(field_schema or "keyword")
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

        qe = qdrant_edge_module()
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
            vector = edge_vector(p.vector)
            if not isinstance(vector, dict):
                vector = {"": vector}
            edge_points.append(qe.Point(id=edge_id(p.id), vector=vector, payload=p.payload or {}))
        self._shard(physical).update(qe.UpdateOperation.upsert_points(edge_points))
        self._after_write(physical, len(edge_points))
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def delete(self, collection_name: str, points_selector, **_: Any):
        from qdrant_client import models

        qe = qdrant_edge_module()
        shard = self._shard(collection_name)
        if isinstance(points_selector, models.PointIdsList):
            op = qe.UpdateOperation.delete_points(edge_ids(points_selector.points))
        elif isinstance(points_selector, models.FilterSelector):
            op = qe.UpdateOperation.delete_points_by_filter(edge_filter(points_selector.filter))
        elif isinstance(points_selector, models.Filter):
            op = qe.UpdateOperation.delete_points_by_filter(edge_filter(points_selector))
        else:
            op = qe.UpdateOperation.delete_points(edge_ids(points_selector))
        shard.update(op)
        return models.UpdateResult(operation_id=None, status=models.UpdateStatus.COMPLETED)

    def set_payload(self, collection_name: str, payload: dict[str, Any], points, **_: Any):
        from qdrant_client import models

        qe = qdrant_edge_module()
        ids = points.points if isinstance(points, models.PointIdsList) else points
        self._shard(collection_name).update(qe.UpdateOperation.set_payload(edge_ids(ids), payload))
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
        qe = qdrant_edge_module()
        records, next_offset = self._shard(collection_name).scroll(
            qe.ScrollRequest(
                offset=None if offset is None else edge_id(offset),
                limit=limit,
                filter=edge_filter(scroll_filter),
                with_payload=edge_with_payload(with_payload),
                with_vector=edge_with_vector(with_vectors),
            )
        )
        return [client_record(r) for r in records], None if next_offset is None else client_id(next_offset)

    def retrieve(
        self, collection_name: str, ids: Sequence[Any], with_payload: Any = True, with_vectors: Any = False, **_: Any
    ):
        records = self._shard(collection_name).retrieve(
            edge_ids(ids), with_payload=edge_with_payload(with_payload), with_vector=edge_with_vector(with_vectors)
        )
        return [client_record(r) for r in records]

    def count(self, collection_name: str, count_filter=None, exact: bool = True, **_: Any):
        from qdrant_client import models

        qe = qdrant_edge_module()
        n = self._shard(collection_name).count(qe.CountRequest(exact=True, filter=edge_filter(count_filter)))
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
        hnsw_ef=None,
    ):
        qe = qdrant_edge_module()
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=qe.Query.Nearest(edge_query_vector(query), using=using or ""),
            filter=edge_filter(filter),
            params=edge_search_params(params, hnsw_ef),
            score_threshold=score_threshold,
            with_payload=edge_with_payload(with_payload),
            with_vector=edge_with_vector(with_vector),
        )

    def _search_ef(self, collection_name: str) -> int | None:
        """The search ef recorded when the collection was created (used when a query names none)."""
        return recorded_hnsw_ef(self._manifest["collections"][self._physical(collection_name)].get("metadata"))

    def _fusion_request(self, query, prefetch, limit, offset, query_filter, with_payload, with_vector, hnsw_ef=None):
        from qdrant_client import models

        qe = qdrant_edge_module()
        if not isinstance(query, models.FusionQuery):
            raise E5VConfigError("the Edge engine fuses prefetches only with a FusionQuery (rrf or dbsf)")
        fusion = qe.Fusion.Dbsf() if query.fusion == models.Fusion.DBSF else qe.Fusion.Rrf(k=RRF_K)
        prefetches = [
            qe.Prefetch(
                limit=p.limit or 10,
                query=qe.Query.Nearest(edge_query_vector(p.query), using=p.using or ""),
                filter=edge_filter(p.filter),
                params=edge_search_params(p.params, hnsw_ef),
            )
            for p in (prefetch if isinstance(prefetch, list) else [prefetch])
        ]
        return qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=fusion,
            prefetches=prefetches,
            filter=edge_filter(query_filter),
            with_payload=edge_with_payload(with_payload),
            with_vector=edge_with_vector(with_vector),
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

        ef = self._search_ef(collection_name)
        if prefetch is not None:
            request = self._fusion_request(
                query, prefetch, limit, offset, query_filter, with_payload, with_vectors, hnsw_ef=ef
            )
        else:
            request = self._request(
                query,
                using,
                limit,
                offset,
                query_filter,
                search_params,
                score_threshold,
                with_payload,
                with_vectors,
                ef,
            )
        return rest.QueryResponse(points=[client_scored_point(p) for p in self._shard(collection_name).query(request)])

    def query_batch_points(self, collection_name: str, requests: Sequence[Any], **_: Any):
        from qdrant_client.http import models as rest

        qe = qdrant_edge_module()
        ef = self._search_ef(collection_name)
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
                    ef,
                )  # fmt: skip
                for r in requests
            ]
        )
        results = self._shard(collection_name).query_batch(batch)
        return [rest.QueryResponse(points=[client_scored_point(p) for p in points]) for points in results]

    # ------------------------------------------------------------ lifecycle
    def close(self, **_: Any) -> None:
        """Build pending indexes (collections this client wrote to, or that a writer killed before its close left
        with at least ``INDEX_EVERY_POINTS`` unindexed points), unless deferred by HNSW ``m=0``; flush; release the
        folder."""
        if self._lock.fd is None:
            return
        try:
            for physical, shard in list(self._shards.items()):
                pending = self._written.get(physical) or self._unindexed(physical) >= INDEX_EVERY_POINTS
                if pending and not self._deferred(physical):
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
