"""Qdrant storage: collection spec, model-fingerprint stamps, aliases, deterministic ids, retried batched writes.

Users address a collection by the name they pass (``--collection docs``). That name is an **alias** of a physical
collection named after the model fingerprint (``docs-e5v-<fingerprint id>``), so a re-ingest with another model can
build a new physical collection and switch the alias over in one call. A name that is already a plain collection
(made by other tools) is used as it is.

Every physical collection is created explicitly (one named dense vector ``text-dense``, cosine, size from the
encoder) and stamped in its collection metadata with the encoder fingerprint; writing vectors of another model or
dimension into it raises ``CollectionMismatchError``. Writes are batched upserts with ``wait=True``, retried with
exponential back-off (tenacity) on transient errors; permanent errors raise ``StoreError`` at once.

The payload layout is the one stock LlamaIndex ``QdrantVectorStore`` reads (see ``sources.py``), and the vector name
is its default, so ``QdrantVectorStore(client=..., collection_name=NAME)`` works on these collections.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .config import StoreConfig, check_collection_name
from .errors import E5VConfigError, E5VError
from .identity import differences, stamp_id, vector_options
from .points import ID_NAMESPACE, INDEXED_FIELDS, SOURCE, SPARSE_VECTOR_NAME, VECTOR_NAME, document_id, point_id

__all__ = [
    "VECTOR_NAME",
    "METADATA_KEY",
    "ID_NAMESPACE",
    "point_id",
    "document_id",
    "physical_name",
    "CollectionMismatchError",
    "StoreError",
    "QdrantStore",
    "open_client",
    "require_store",
    "embedded_engine",
    "NEW_FOLDER_ENGINE_ENV",
    "is_transient",
    "collection_create_kwargs",
    "search_params",
    "bulk_load",
]

logger = logging.getLogger(__name__)

#: Key of this package's stamp inside the collection metadata.
METADATA_KEY = "e5v_qdrant"
_SCHEMA = 1


class CollectionMismatchError(E5VConfigError):
    """The collection holds vectors of another model, prompt set or dimension."""


class StoreError(E5VError, RuntimeError):
    """Qdrant refused a request for a reason retrying will not fix (bad request, bad config, missing collection)."""


def physical_name(alias: str, fingerprint_id: str) -> str:
    """Name of the physical collection serving ``alias`` for the model with this fingerprint id."""
    return f"{alias}-e5v-{fingerprint_id}"


# ---------------------------------------------------------------- error classification
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry may fix: timeouts, connection resets, 5xx / 429, gRPC UNAVAILABLE, lock contention."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code in _TRANSIENT_STATUS
    if isinstance(exc, (ResponseHandlingException, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if isinstance(exc, RuntimeError) and "already accessed by another instance" in str(exc):
        return True  # embedded store folder held by another process
    try:
        import httpx

        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException)):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import grpc

        if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
            return exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover
        pass
    return False


def _describe(exc: BaseException) -> str:
    from qdrant_client.http.exceptions import UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        body = (exc.content or b"")[:300].decode("utf-8", "replace")
        return f"HTTP {exc.status_code} {exc.reason_phrase}: {body}".strip()
    return f"{type(exc).__name__}: {exc}"


def _retrying(config: StoreConfig, what: str) -> Retrying:
    def log_retry(state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "retrying %s after transient error (attempt %d of %d, next in %.2fs): %s",
            what,
            state.attempt_number,
            config.retries,
            state.next_action.sleep if state.next_action else 0.0,
            _describe(exc) if exc else "?",
        )

    return Retrying(
        stop=stop_after_attempt(config.retries),
        wait=wait_exponential(multiplier=config.retry_wait, max=30),
        retry=retry_if_exception(is_transient),
        before_sleep=log_retry,
        reraise=True,
    )


#: Environment variable naming the engine of NEW embedded store folders when ``StoreConfig.embedded`` is unset.
NEW_FOLDER_ENGINE_ENV = "E5V_QDRANT_EMBEDDED"


def embedded_engine(config: StoreConfig) -> str | None:
    """The engine of ``config``'s embedded store: ``"edge"`` or ``"local"`` (``None`` for a server).

    An existing folder keeps its engine (it is never converted); a new folder gets ``config.embedded``, else
    ``$E5V_QDRANT_EMBEDDED``, else ``"edge"``.

    Raises:
        E5VConfigError: ``config.embedded`` contradicts the engine of the existing folder.
    """
    from .edge import detect_engine

    if config.qdrant_url:
        return None
    found = detect_engine(config.resolved_path)
    if found is None:
        engine = config.embedded or os.environ.get(NEW_FOLDER_ENGINE_ENV) or "edge"
        if engine not in ("edge", "local"):
            raise E5VConfigError(f"${NEW_FOLDER_ENGINE_ENV} must be edge or local, got {engine!r}")
        return engine
    if config.embedded and config.embedded != found:
        raise E5VConfigError(
            f"{config.resolved_path!r} holds an embedded {found!r} store but --embedded {config.embedded} was asked "
            f"for; stores are never converted in place: drop --embedded, or copy it with `e5v-qdrant migrate "
            f"--embedded {found} --to-path NEW_FOLDER --to-embedded {config.embedded}`"
        )
    return found


def require_store(config: StoreConfig) -> None:
    """Refuse an embedded store folder that holds no store (read-only commands must not create one).

    Raises:
        E5VConfigError: naming the folder and the remedy.
    """
    from .edge import detect_engine

    if not config.qdrant_url and detect_engine(config.resolved_path) is None:
        raise E5VConfigError(
            f"no store at {os.path.abspath(config.resolved_path)!r}: ingest into it first, or pass --qdrant-path (or --qdrant-url) "
            "of an existing store; nothing was created"
        )


def open_client(config: StoreConfig):
    """Open a client: embedded store in ``config.resolved_path`` (Qdrant Edge or local mode) or a server by URL.

    The API key is read from the environment variable ``config.api_key_env``; it is never logged. An Edge folder is
    opened through ``edge.EdgeClient``, which answers the same ``QdrantClient`` methods this package calls.

    Raises:
        StoreError: the store cannot be opened (folder locked by another process after retries, bad URL…).
        E5VConfigError: ``config.embedded`` contradicts the existing folder's engine.
    """
    from qdrant_client import QdrantClient

    engine = embedded_engine(config)

    def connect():
        if config.qdrant_url:
            return QdrantClient(
                url=config.qdrant_url,
                api_key=config.api_key,
                prefer_grpc=config.prefer_grpc,
                timeout=int(config.timeout),
            )
        if engine == "edge":
            from .edge import EdgeClient

            return EdgeClient(config.resolved_path)
        return QdrantClient(path=config.resolved_path)

    where = config.qdrant_url or f"embedded {engine} store {config.resolved_path!r}"
    try:
        return _retrying(config, f"opening {where}")(connect)
    except Exception as exc:
        hint = (
            " Another process holds this folder: wait for it, or use a Qdrant server for concurrent access."
            if "already accessed" in str(exc)
            else ""
        )
        raise StoreError(f"cannot open {where}: {_describe(exc)}.{hint}") from exc


def collection_create_kwargs(config: StoreConfig, dim: int, *, server: bool, sparse: bool = False) -> dict[str, Any]:
    """``create_collection`` arguments for a new physical collection.

    Args:
        server: the engine honours storage options (a server, or Qdrant Edge; local mode ignores them).
        sparse: the collection also gets the sparse vector ``text-sparse-new`` with Qdrant's IDF modifier (hybrid
            search; ``sparse.py`` computes the term-frequency part, the engine the IDF).
    """
    from qdrant_client import models

    params: dict[str, Any] = {"size": dim, "distance": models.Distance.COSINE}
    kwargs: dict[str, Any] = {}
    if server:
        if config.on_disk_vectors:
            params["on_disk"] = True
        if config.vector_datatype == "float16":
            params["datatype"] = models.Datatype.FLOAT16
        if config.quantization == "int8":
            kwargs["quantization_config"] = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
        elif config.quantization == "binary":
            kwargs["quantization_config"] = models.BinaryQuantization(
                binary=models.BinaryQuantizationConfig(always_ram=True)
            )
        if config.shard_number:
            kwargs["shard_number"] = config.shard_number
        if config.replication_factor:
            kwargs["replication_factor"] = config.replication_factor
        if config.write_consistency_factor:
            kwargs["write_consistency_factor"] = config.write_consistency_factor
    kwargs["vectors_config"] = {VECTOR_NAME: models.VectorParams(**params)}
    if sparse:
        kwargs["sparse_vectors_config"] = {SPARSE_VECTOR_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)}
    return kwargs


@dataclass
class CollectionStamp:
    """What the collection metadata records about the vectors inside (``sparse``: the hybrid sparse encoder's spec)."""

    fingerprint: dict[str, Any]
    encoder: dict[str, Any]
    alias: str | None = None
    sparse: dict[str, Any] | None = None

    def to_metadata(self) -> dict[str, Any]:
        data = {
            "schema": _SCHEMA,
            "fingerprint": self.fingerprint,
            "encoder": self.encoder,
            "alias": self.alias,
        }
        if self.sparse is not None:
            data["sparse"] = self.sparse
        return {METADATA_KEY: data}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> CollectionStamp | None:
        data = (metadata or {}).get(METADATA_KEY)
        if not isinstance(data, dict) or "fingerprint" not in data:
            return None
        return cls(
            fingerprint=data["fingerprint"],
            encoder=data.get("encoder") or {},
            alias=data.get("alias"),
            sparse=data.get("sparse"),
        )


def encoder_record(encoder) -> dict[str, Any]:
    """The encoder options that must be reproduced to query a collection (recorded in its stamp): every option
    declared to change vectors (``identity.vector_options``)."""
    return vector_options(encoder.config)


class QdrantStore:
    """One Qdrant connection and the operations the pipelines need, every request retried on transient errors.

    Args:
        config: where the store is and how to write.
        client: an already open ``QdrantClient`` (tests, or sharing one embedded store); default: ``open_client``.
        owns_client: ``close`` closes ``client`` too (default: only a client this store opened).
        must_exist: refuse an embedded store folder that holds no store instead of creating it (``require_store``).

    Example:
        >>> store = QdrantStore(StoreConfig(qdrant_path="qdrant_data"))     # doctest: +SKIP
        >>> store.collections()                                              # doctest: +SKIP
    """

    def __init__(
        self, config: StoreConfig | None = None, *, client=None, must_exist: bool = False, owns_client: bool = False
    ):
        self.config = config or StoreConfig()
        if must_exist and client is None:
            require_store(self.config)
        self.client = client if client is not None else open_client(self.config)
        self._owns_client = client is None or owns_client

    @property
    def is_server(self) -> bool:
        return bool(self.config.qdrant_url)

    @property
    def engine(self) -> str:
        """``"server"``, ``"edge"`` (Qdrant Edge folder) or ``"local"`` (qdrant-client local mode, or ``:memory:``)."""
        if self.is_server:
            return "server"
        return "edge" if getattr(self.client, "e5v_engine", None) == "edge" else "local"

    @property
    def honours_options(self) -> bool:
        """Storage options (on-disk, float16, quantization, HNSW, payload indexes) take effect (not local mode)."""
        return self.engine != "local"

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ retried calls
    def call(self, what: str, fn, *args, **kwargs):
        """Run ``fn`` with retries on transient errors; permanent ones become ``StoreError`` naming ``what``."""
        try:
            return _retrying(self.config, what)(fn, *args, **kwargs)
        except E5VError:
            raise
        except Exception as exc:
            retried = " (gave up after retries)" if is_transient(exc) else ""
            raise StoreError(f"Qdrant refused {what}{retried}: {_describe(exc)}") from exc

    # ------------------------------------------------------------ names, aliases, stamps
    def aliases(self) -> dict[str, str]:
        """Alias name → physical collection name."""
        response = self.call("listing aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def exists(self, name: str) -> bool:
        return bool(self.call(f"checking collection {name!r}", self.client.collection_exists, name))

    def resolve(self, name: str) -> str | None:
        """Physical collection behind ``name`` (an alias or a plain collection), or ``None`` if neither exists."""
        target = self.aliases().get(name)
        if target is not None:
            return target
        return name if name in self.collection_names() else None

    def stamp(self, physical: str) -> CollectionStamp | None:
        """The fingerprint stamp of a physical collection (``None`` if not made by this package)."""
        info = self.call(f"reading collection {physical!r}", self.client.get_collection, physical)
        return CollectionStamp.from_metadata(getattr(info.config, "metadata", None))

    def dimension(self, physical: str) -> int | None:
        info = self.call(f"reading collection {physical!r}", self.client.get_collection, physical)
        vectors = info.config.params.vectors
        if isinstance(vectors, dict):
            params = vectors.get(VECTOR_NAME) or next(iter(vectors.values()), None)
            return params.size if params is not None else None
        return vectors.size if vectors is not None else None

    def check_compatible(self, name: str, physical: str, encoder) -> None:
        """Refuse to mix models: the stamp's fingerprint id (``identity.stamp_id``: stored prompts only, old stamps
        included) and the vector size must match ``encoder``.

        Raises:
            CollectionMismatchError: naming both models and the remedies.
        """
        stamp = self.stamp(physical)
        dim = self.dimension(physical)
        fingerprint = encoder.fingerprint
        remedy = (
            f"Ingest into a new collection (--collection OTHER_NAME), or move {name!r} to this model with "
            f"`e5v-qdrant reingest --collection {name} --model/--adapter/--image-layout ...`."
        )
        if dim is not None and dim != encoder.dim:
            raise CollectionMismatchError(
                f"collection {name!r} ({physical}) holds {dim}-d vectors but the model {encoder.config.model!r} "
                f"makes {encoder.dim}-d vectors. {remedy}"
            )
        if stamp is None:
            raise CollectionMismatchError(
                f"collection {name!r} ({physical}) was not created by e5v-qdrant (no model fingerprint stamp); "
                f"its vectors may come from another model. {remedy}"
            )
        if stamp_id(stamp.fingerprint, stamp.encoder) != fingerprint["id"]:  # stamps from before issue 27 too
            raise CollectionMismatchError(
                f"collection {name!r} ({physical}) holds vectors of another model or options: "
                f"{differences(stamp.fingerprint, stamp.encoder, encoder.config, encoder.fingerprint)}. {remedy}"
            )

    def create_physical(
        self, physical: str, encoder, *, alias: str | None, sparse: dict[str, Any] | None = None
    ) -> None:
        """Create a physical collection sized for ``encoder`` and stamped with its fingerprint.

        ``sparse``: the hybrid sparse encoder's spec (``BM25Encoder.spec()``); the collection then has a sparse vector
        too and the stamp records the spec, so later ingests and searches use the same encoder.
        """
        stamp = CollectionStamp(
            fingerprint=encoder.fingerprint, encoder=encoder_record(encoder), alias=alias, sparse=sparse
        )
        self.create_stamped(physical, stamp, encoder.dim)

    def create_stamped(self, physical: str, stamp: CollectionStamp, dim: int) -> None:
        """Create ``physical`` for ``dim``-d vectors as ``stamp`` describes it: the dense vector, the sparse one when
        the stamp records a sparse encoder (hybrid), this store's storage options and the search filters' payload
        indexes. ``create_physical`` and ``migrate`` both create collections here, so a copy is built like the
        original."""
        kwargs = collection_create_kwargs(
            self.config, dim, server=self.honours_options, sparse=stamp.sparse is not None
        )
        self.call(
            f"creating collection {physical!r}",
            self.client.create_collection,
            collection_name=physical,
            metadata=stamp.to_metadata(),
            **kwargs,
        )
        if self.honours_options:  # indexes for the search filters and per-source lookups (local mode has none)
            from qdrant_client import models

            for field_name, schema in INDEXED_FIELDS.items():
                self.call(
                    f"indexing payload field {field_name!r} of {physical!r}",
                    self.client.create_payload_index,
                    collection_name=physical,
                    field_name=field_name,
                    field_schema=models.PayloadSchemaType(schema),
                    wait=True,
                )
        logger.info(
            "created collection %s (%d-d, cosine, model fingerprint %s%s)",
            physical,
            dim,
            stamp.fingerprint.get("id"),
            ", hybrid" if stamp.sparse is not None else "",
        )

    def sparse_spec(self, physical: str) -> dict[str, Any] | None:
        """The sparse encoder spec recorded in ``physical``'s stamp (a hybrid collection), else ``None``."""
        stamp = self.stamp(physical)
        return stamp.sparse if stamp is not None else None

    def check_sparse(self, name: str, physical: str, sparse: dict[str, Any] | None) -> None:
        """Refuse ``sparse`` (a hybrid request) on a collection created without sparse vectors."""
        if sparse is not None and self.sparse_spec(physical) is None:
            raise CollectionMismatchError(
                f"collection {name!r} ({physical}) was created without --hybrid, so it has no sparse vectors. "
                f"Ingest into a new collection with --hybrid (--collection OTHER_NAME), or drop --hybrid."
            )

    def point_alias(self, alias: str, physical: str) -> None:
        """Make ``alias`` point at ``physical`` in one ``update_collection_aliases`` call (atomic switch)."""
        from qdrant_client import models

        operations = []
        if alias in self.aliases():
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=physical, alias_name=alias))
        )
        self.call(
            f"pointing alias {alias!r} at {physical!r}",
            self.client.update_collection_aliases,
            change_aliases_operations=operations,
        )

    def ensure_collection(self, name: str, encoder, *, sparse: dict[str, Any] | None = None) -> str:
        """The physical collection to write ``encoder``'s vectors for ``name`` into, created and aliased if new.

        Args:
            sparse: create a hybrid collection with this sparse encoder spec (``BM25Encoder.spec()``); an existing
                collection must then already be hybrid. ``None`` accepts either kind.

        Returns:
            The physical collection name.

        Raises:
            CollectionMismatchError: ``name`` already serves another model or dimension, or is not hybrid when
                ``sparse`` asks for it.
        """
        check_collection_name(name)
        physical = self.resolve(name)
        if physical is not None:
            self.check_compatible(name, physical, encoder)
            self.check_sparse(name, physical, sparse)
            return physical
        physical = physical_name(name, encoder.fingerprint["id"])
        if self.exists(physical):  # a run killed between creating the collection and its alias
            self.check_compatible(name, physical, encoder)
            self.check_sparse(name, physical, sparse)
        else:
            self.create_physical(physical, encoder, alias=name, sparse=sparse)
        self.point_alias(name, physical)
        return physical

    # ------------------------------------------------------------ points
    def upsert(self, collection: str, points: Sequence[Any]) -> int:
        """Upsert ``points`` in batches of ``write_batch_size`` with ``wait=True``; returns how many were written."""
        size = self.config.write_batch_size
        for start in range(0, len(points), size):
            batch = list(points[start : start + size])
            self.call(
                f"upserting {len(batch)} points into {collection!r}",
                self.client.upsert,
                collection_name=collection,
                points=batch,
                wait=True,
            )
        return len(points)

    def delete(self, collection: str, ids: Iterable[str]) -> int:
        """Delete points by id (batched, ``wait=True``); returns how many ids were sent."""
        from qdrant_client import models

        ids = list(ids)
        size = max(self.config.write_batch_size, 256)
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            self.call(
                f"deleting {len(batch)} points from {collection!r}",
                self.client.delete,
                collection_name=collection,
                points_selector=models.PointIdsList(points=batch),
                wait=True,
            )
        return len(ids)

    def set_payload(self, collection: str, ids: Sequence[str], payload: dict[str, Any], *, what: str = "") -> None:
        """Merge ``payload`` into the payload of the points ``ids`` (``wait=True``)."""
        self.call(
            f"updating {what or 'the payload'} of {len(ids)} points in {collection!r}",
            self.client.set_payload,
            collection_name=collection,
            payload=payload,
            points=list(ids),
            wait=True,
        )

    def scroll(
        self,
        collection: str,
        *,
        with_payload: bool | Sequence[str] = True,
        with_vectors: bool = False,
        scroll_filter=None,
        page_size: int = 256,
    ) -> Iterator[Any]:
        """Every point (``Record``) of ``collection``, page by page."""
        offset = None
        while True:
            records, offset = self.call(
                f"scrolling {collection!r}",
                self.client.scroll,
                collection_name=collection,
                scroll_filter=scroll_filter,
                limit=page_size,
                offset=offset,
                with_payload=list(with_payload) if isinstance(with_payload, (list, tuple)) else with_payload,
                with_vectors=with_vectors,
            )
            yield from records
            if offset is None:
                return

    def source_index(self, collection: str) -> dict[str, set[str]]:
        """Source URI → ids of its stored points (one scroll over payload ``source`` only, no vectors)."""
        index: dict[str, set[str]] = {}
        for record in self.scroll(collection, with_payload=[SOURCE], page_size=1024):
            source = (record.payload or {}).get(SOURCE)
            if source is not None:
                index.setdefault(source, set()).add(str(record.id))
        return index

    def retrieve(self, collection: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Any]:
        return self.call(
            f"retrieving {len(ids)} points from {collection!r}",
            self.client.retrieve,
            collection_name=collection,
            ids=list(ids),
            with_payload=True,
            with_vectors=with_vectors,
        )

    def count(self, collection: str) -> int:
        return int(
            self.call(f"counting {collection!r}", self.client.count, collection_name=collection, exact=True).count
        )

    def query(
        self,
        collection: str,
        vector: Sequence[float],
        *,
        top_k: int = 10,
        modality: str | None = None,
        query_filter=None,
        sparse: tuple[Sequence[int], Sequence[float]] | None = None,
        score_threshold: float | None = None,
        fusion: str = "rrf",
    ) -> list[Any]:
        """Nearest points to ``vector`` (cosine), or dense and ``sparse`` results fused by Qdrant (hybrid).

        Args:
            modality: only ``text`` / ``image`` points (``None`` / ``any``: both).
            query_filter: a Qdrant ``Filter`` every result must satisfy (``filters.build_filter``).
            sparse: (indices, values) of a sparse query vector (``sparse.sparse_query_fn``): one query with two
                prefetches (dense, sparse; both filtered, ``max(10 * top_k, 100)`` candidates each) fused by Qdrant;
                scores are then fusion scores, not cosines. An empty sparse vector (no keyword in the query) gives a
                dense query.
            score_threshold: only results scoring at least this (cosine; not allowed with ``sparse``).
            fusion: ``rrf`` = reciprocal rank fusion (ranks only); ``dbsf`` = distribution-based score fusion (each
                side's scores normalized by their mean and spread, then summed: a keyword hit far above the other
                sparse scores outweighs a dense side that does not know the token).
        """
        from qdrant_client import models

        from .filters import build_filter, combine

        if fusion not in FUSIONS:
            raise E5VConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        query_filter = combine(query_filter, build_filter(modality=modality))
        dense = [float(x) for x in vector]
        params = search_params(self.config) if self.honours_options else None
        kwargs: dict[str, Any] = {
            "query": dense,
            "using": VECTOR_NAME,
            "query_filter": query_filter,
            "search_params": params,
        }
        if sparse is not None and len(sparse[0]):
            if score_threshold is not None:
                raise E5VConfigError(
                    "a score threshold needs cosine scores; hybrid results are ranked by reciprocal rank fusion. "
                    "Drop --score-threshold or --hybrid."
                )
            # candidates per side before fusion: deep enough that a keyword hit the dense side also ranks anywhere
            # in its top 100 beats the dense side's own best (which has only one of the two reciprocal ranks)
            limit = max(10 * top_k, 100)
            kwargs = {
                "prefetch": [
                    models.Prefetch(query=dense, using=VECTOR_NAME, limit=limit, filter=query_filter, params=params),
                    models.Prefetch(
                        query=models.SparseVector(indices=list(sparse[0]), values=[float(v) for v in sparse[1]]),
                        using=SPARSE_VECTOR_NAME,
                        limit=limit,
                        filter=query_filter,
                    ),
                ],
                "query": models.FusionQuery(fusion=models.Fusion(fusion)),
            }
        response = self.call(
            f"querying {collection!r}",
            self.client.query_points,
            collection_name=collection,
            limit=top_k,
            score_threshold=score_threshold,
            with_payload=True,
            **kwargs,
        )
        return list(response.points)

    def query_batch(self, collection: str, requests: Sequence[Any]) -> list[list[Any]]:
        """Run ``QueryRequest`` s in one batched request; the points of each, in order."""
        responses = self.call(
            f"querying {collection!r} ({len(requests)} queries)",
            self.client.query_batch_points,
            collection_name=collection,
            requests=list(requests),
        )
        return [list(r.points) for r in responses]

    def collection_names(self) -> list[str]:
        """Names of the physical collections (aliases not included)."""
        return [c.name for c in self.call("listing collections", self.client.get_collections).collections]

    def delete_collection(self, physical: str) -> None:
        """Delete a physical collection (and, on Edge, the aliases pointing at it)."""
        self.call(f"deleting collection {physical!r}", self.client.delete_collection, collection_name=physical)

    def create_plain(self, name: str, dim: int, *, storage_options: bool) -> None:
        """Create an unstamped scratch collection for ``dim``-d dense vectors (evaluation runs; no alias, no payload
        indexes), with this store's storage options when ``storage_options``."""
        kwargs = collection_create_kwargs(self.config, dim, server=storage_options)
        self.call(f"creating collection {name!r}", self.client.create_collection, collection_name=name, **kwargs)

    def collections(self) -> list[dict[str, Any]]:
        """Every collection: name, aliases pointing at it, model fingerprint id and model, point count."""
        aliases = self.aliases()
        rows = []
        for name in self.collection_names():
            stamp = self.stamp(name)
            rows.append(
                {
                    "collection": name,
                    "aliases": sorted(a for a, c in aliases.items() if c == name),
                    "fingerprint": stamp.fingerprint.get("id") if stamp else None,
                    "model": stamp.encoder.get("model") if stamp else None,
                    "adapter": stamp.encoder.get("adapter") if stamp else None,
                    "dim": self.dimension(name),
                    "points": self.count(name),
                }
            )
        return sorted(rows, key=lambda r: r["collection"])


#: Hybrid fusion methods (``QdrantStore.query``), Qdrant's names.
FUSIONS = ("rrf", "dbsf")


# ---------------------------------------------------------------- cluster settings (search time, bulk load)
def search_params(config: StoreConfig):
    """``SearchParams`` for a quantized collection (rescoring with the originals, oversampling), else ``None``."""
    if config.quantization == "none":
        return None
    from qdrant_client import models

    return models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=config.rescore, oversampling=config.oversampling)
    )


@contextmanager
def bulk_load(store: QdrantStore, collection: str, *, enabled: bool = True) -> Iterator[None]:
    """Defer HNSW index building on ``collection`` while the block runs; restore its HNSW settings after, even on error.

    Sets ``hnsw_config.m = 0`` (Qdrant then keeps incoming segments unindexed) and, on exit, sets ``m`` and
    ``payload_m`` back to the values read before, which makes the server build the index once over all the points.
    On Qdrant Edge, ``m = 0`` defers the optimizer and restoring ``m`` builds the index once, in the process.
    A no-op for local mode (it has no HNSW index) or when ``enabled`` is false. If the restore itself fails
    the error is raised (after the block's own error, if any, is logged) with the exact setting to re-apply.

    Example:
        >>> with bulk_load(store, "docs"):                      # doctest: +SKIP
        ...     ingest(config, encoder, store)
    """
    if not enabled or not store.honours_options:
        yield
        return
    from qdrant_client import models

    physical = store.resolve(collection) or collection
    info = store.call(f"reading collection {physical!r}", store.client.get_collection, physical)
    hnsw = info.config.hnsw_config
    original = models.HnswConfigDiff(m=hnsw.m, payload_m=hnsw.payload_m)
    if hnsw.m == 0:  # already deferred (a killed bulk run): restore to Qdrant's default when done
        original = models.HnswConfigDiff(m=16, payload_m=hnsw.payload_m)
        logger.warning(
            "collection %s already had hnsw m=0 (an earlier bulk load did not finish); restoring m=16 after", physical
        )
    store.call(
        f"deferring HNSW indexing on {physical!r}",
        store.client.update_collection,
        collection_name=physical,
        hnsw_config=models.HnswConfigDiff(m=0),
    )
    logger.info("bulk load: HNSW indexing deferred on %s (m=0); will restore m=%s", physical, original.m)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        try:
            store.call(
                f"restoring HNSW settings on {physical!r}",
                store.client.update_collection,
                collection_name=physical,
                hnsw_config=original,
            )
            logger.info("bulk load: HNSW settings restored on %s (m=%s)", physical, original.m)
        except Exception as exc:
            message = (
                f"bulk load: could not restore HNSW settings on {physical!r} ({exc}); the collection is left unindexed. "
                f"Re-apply them with client.update_collection({physical!r}, hnsw_config=HnswConfigDiff(m={original.m}))"
            )
            if failed:
                logger.error(message)
            else:
                raise StoreError(message) from exc
