"""``QdrantStore``: the one contract over a server, local mode and Qdrant Edge; every request retried."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..config import StoreConfig, check_collection_name
from ..errors import E5VConfigError, E5VError
from ..identity import differences, stamp_id
from ..points import INDEXED_FIELDS, SOURCE, SPARSE_VECTOR_NAME, VECTOR_NAME
from . import engines
from .hnsw import recorded_hnsw_ef
from .retry import StoreError, describe_error, is_transient, retrying
from .stamp import CollectionMismatchError, CollectionStamp, encoder_record, physical_name
from .storage_options import FUSIONS, collection_create_kwargs, creation_metadata, search_params

__all__ = ["QdrantStore"]

logger = logging.getLogger("e5v_qdrant.store")

#: Seconds a collection's recorded search ef is reused before it is read again (``QdrantStore.recorded_ef``).
RECORDED_EF_TTL_S = 60.0


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
            engines.require_store(self.config)
        self.client = client if client is not None else engines.open_client(self.config)
        self._owns_client = client is None or owns_client
        #: ``"server"``, ``"edge"`` (Qdrant Edge folder) or ``"local"`` (qdrant-client local mode, or ``:memory:``):
        #: decided once, here.
        self.engine = engines.engine_of(self.config, self.client)
        self._recorded_ef: dict[str, tuple[float, int | None]] = {}

    @property
    def is_server(self) -> bool:
        return self.engine == "server"

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
            return retrying(self.config, what)(fn, *args, **kwargs)
        except E5VError:
            raise
        except Exception as exc:
            retried = " (gave up after retries)" if is_transient(exc) else ""
            raise StoreError(f"Qdrant refused {what}{retried}: {describe_error(exc)}") from exc

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

    def recorded_ef(self, name: str) -> int | None:
        """The search ef collection (or alias) ``name`` recorded when it was created (``hnsw.SEARCH_METADATA_KEY``);
        ``None`` for collections made before it was recorded (the engine's default, ``ef_construct``, applies).
        Read from the engine at most every ``RECORDED_EF_TTL_S`` seconds per name: a reingest may swap an alias to a
        collection that recorded another."""
        now = time.monotonic()
        cached = self._recorded_ef.get(name)
        if cached is None or now - cached[0] > RECORDED_EF_TTL_S:
            info = self.call(f"reading collection {name!r}", self.client.get_collection, name)
            cached = self._recorded_ef[name] = (now, recorded_hnsw_ef(getattr(info.config, "metadata", None)))
        return cached[1]

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
            metadata={**stamp.to_metadata(), **(creation_metadata(self.config) if self.honours_options else {})},
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
                f"Make it hybrid without re-embedding: `e5v-qdrant reingest --collection {name} --sparse-encoder "
                f"e5v-bm25` (adds the keyword side only), or drop --hybrid."
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
        physical = physical_name(name, encoder.fingerprint["id"], sparse)
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

        from ..filters import build_filter, combine

        if fusion not in FUSIONS:
            raise E5VConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        query_filter = combine(query_filter, build_filter(modality=modality))
        dense = [float(x) for x in vector]
        # the ef asked for, else the one the collection recorded (Edge applies it itself; a server is sent it)
        params = (
            search_params(
                self.config,
                # read only when it is used: an explicit ef wins, and Edge applies the recorded one itself
                default_ef=self.recorded_ef(collection) if self.is_server and self.config.hnsw_ef is None else None,
            )
            if self.honours_options
            else None
        )
        kwargs: dict[str, Any] = {
            "query": dense,
            "using": VECTOR_NAME,
            "query_filter": query_filter,
            "search_params": params,
        }
        if sparse is not None and len(sparse[0]):
            if score_threshold is not None:
                raise E5VConfigError(
                    "a score threshold needs cosine scores; hybrid results are ranked by a fusion score (rrf or dbsf). "
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
        if storage_options:
            kwargs["metadata"] = creation_metadata(self.config)
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
