"""Conversions between ``qdrant_client.models`` and the ``qdrant_edge`` module (requests in, results out).

Everything that touches the ``qdrant_edge`` module's types lives here, so a change of its beta API touches this room
(and ``client``, which calls the shard).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Any

from ...errors import E5VConfigError
from ..hnsw import QDRANT_GENERIC_HNSW

__all__ = [
    "EdgeNotInstalledError",
    "INDEXING_THRESHOLD_KB",
    "RRF_K",
    "qdrant_edge_module",
    "enum_name",
    "edge_config",
    "edge_id",
    "edge_ids",
    "edge_vector",
    "edge_filter",
    "edge_with_payload",
    "edge_with_vector",
    "edge_search_params",
    "edge_query_vector",
    "client_id",
    "client_vector",
    "client_record",
    "client_scored_point",
]

#: Segments holding more vector data than this (KB) get an HNSW index when optimized. 20,000 KB (~1,200 float32
#: 4096-d vectors) is the Qdrant server's own default (``indexing_threshold_kb``, qdrant config/config.yaml).
INDEXING_THRESHOLD_KB = 20_000
#: Largest segment (KB of stored vectors) the optimizer builds by merging: ~62,000 float16 (~31,000 float32) 4096-d
#: points. Each segment has its own graph, searched with the full search ef, so both the recall a search ef gives
#: and the search time (segments x ef) depend on segment size: pinned to what ``store.hnsw``'s defaults were measured
#: with, Qdrant Edge's own default on 2 cores (256,000 KB per indexing thread, qdrant ``lib/edge`` optimizers), not
#: left to grow with the CPU count. (400,000 KB made 26 segments of 1M points instead of 18: p50 53 vs 38 ms.)
MAX_SEGMENT_SIZE_KB = 512_000


class EdgeNotInstalledError(E5VConfigError):
    """``qdrant-edge-py`` is not installed but an Edge store was asked for."""


#: Reciprocal rank fusion constant: score = sum of 1 / (k + rank); 2 is the Qdrant server's value, so Edge and a server
#: fuse alike.
RRF_K = 2


#: Qdrant's own switch (``QDRANT_NO_MULTI_MMAP``, qdrant ``lib/common/memory/src/mmap_ops.rs``) to map each chunked
#: vector file once. By default Qdrant maps it twice, read-write and read-only for sequential reads, and the
#: optimizer copies a segment through the second map while the first still holds it: RSS counts the segment's
#: vectors twice for the whole HNSW build (measurements: README, "One map per vector file"). Set before the engine's
#: first map, unless the caller set it (an empty value keeps both maps).
_SINGLE_MMAP_ENV = "QDRANT_NO_MULTI_MMAP"


@functools.cache
def qdrant_edge_module():
    """The ``qdrant_edge`` module (imported once, with Qdrant's single-map switch set first).

    Raises:
        EdgeNotInstalledError: ``qdrant-edge-py`` is missing.
    """
    os.environ.setdefault(_SINGLE_MMAP_ENV, "1")
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EdgeNotInstalledError(
            "the Qdrant Edge engine needs the package qdrant-edge-py: pip install qdrant-edge-py "
            "(or use --embedded local for a qdrant-client local-mode folder)"
        ) from exc
    return qdrant_edge


# ---------------------------------------------------------------- qdrant_client models -> Edge
def enum_name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def _vector_params(params: dict[str, Any]):
    qe = qdrant_edge_module()
    kwargs: dict[str, Any] = {"size": int(params["size"]), "distance": _distance(params["distance"])}
    if params.get("on_disk"):
        kwargs["on_disk"] = True
    datatype = enum_name(params.get("datatype") or "float32")
    if datatype != "float32":
        kwargs["datatype"] = {"float16": qe.VectorStorageDatatype.Float16, "uint8": qe.VectorStorageDatatype.Uint8}[
            datatype
        ]
    return qe.EdgeVectorParams(**kwargs)


def _sparse_params(params: dict[str, Any]):
    """A sparse vector's Edge parameters; ``modifier: idf`` makes the engine weight query terms by their IDF."""
    qe = qdrant_edge_module()
    idf = enum_name(params.get("modifier") or "none") == "idf"
    return qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if idf else None)


def _distance(name: Any):
    qe = qdrant_edge_module()
    return {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}[enum_name(name)]


def _quantization(config: dict[str, Any] | None):
    if not config:
        return None
    qe = qdrant_edge_module()
    if "scalar" in config:
        scalar = config["scalar"]
        return qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=scalar.get("quantile"), always_ram=scalar.get("always_ram")
        )
    if "turbo" in config:
        turbo = config["turbo"]
        bits = turbo.get("bits")  # qdrant-client's "bits4" / "bits1_5" ... are qdrant-edge-py's Bits4 / Bits1_5 ...
        return qe.TurboQuantQuantizationConfig(
            bits=getattr(qe.TurboQuantBitSize, "Bits" + bits[len("bits") :]) if bits else None,
            always_ram=turbo.get("always_ram"),
        )
    if "binary" in config:
        return qe.BinaryQuantizationConfig(always_ram=config["binary"].get("always_ram"))
    raise E5VConfigError(
        f"quantization {config} is not supported by the Edge engine (use scalar int8, turbo 4 bits or binary)"
    )


def edge_config(spec: dict[str, Any]):
    """The shard configuration of a collection's manifest entry (its HNSW parameters are recorded there when it is
    created; entries without them were made with Qdrant's generic defaults)."""
    qe = qdrant_edge_module()
    hnsw = {**QDRANT_GENERIC_HNSW, **{k: v for k, v in (spec.get("hnsw_config") or {}).items() if v is not None}}
    return qe.EdgeConfig(
        vectors={name: _vector_params(p) for name, p in spec["vectors"].items()},
        sparse_vectors={name: _sparse_params(p) for name, p in (spec.get("sparse_vectors") or {}).items()} or None,
        hnsw_config=qe.HnswIndexConfig(
            # m = 0 (a bulk load): the optimizer seals and merges segments without a graph; restoring m (a shard
            # reloaded with this config) builds one graph per segment, as a server does
            m=int(hnsw["m"]),
            ef_construct=int(hnsw["ef_construct"]),
            full_scan_threshold=int(hnsw["full_scan_threshold"]),
            payload_m=hnsw.get("payload_m"),
        ),
        quantization_config=_quantization(spec.get("quantization_config")),
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=INDEXING_THRESHOLD_KB, max_segment_size=MAX_SEGMENT_SIZE_KB
        ),
    )


def edge_id(value: Any) -> int | str:
    if isinstance(value, int):
        return value
    return str(value)


def edge_ids(values: Iterable[Any]) -> list[Any]:
    return [edge_id(v) for v in values]


def edge_vector(value: Any) -> Any:
    from qdrant_client import models

    if isinstance(value, models.SparseVector):
        return qdrant_edge_module().SparseVector(indices=list(value.indices), values=[float(v) for v in value.values])
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {name: edge_vector(v) for name, v in value.items()}
    return value


def _match(match):
    qe = qdrant_edge_module()
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
    qe = qdrant_edge_module()
    from qdrant_client import models

    if isinstance(cond, models.Filter):
        return edge_filter(cond)
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
        return qe.HasIdCondition(set(edge_ids(cond.has_id)))
    if isinstance(cond, models.IsEmptyCondition):
        return qe.IsEmptyCondition(cond.is_empty.key)
    if isinstance(cond, models.IsNullCondition):
        return qe.IsNullCondition(cond.is_null.key)
    if isinstance(cond, models.NestedCondition):
        return qe.NestedCondition(cond.nested.key, edge_filter(cond.nested.filter))
    raise E5VConfigError(f"filter condition {type(cond).__name__} is not supported by the Edge engine")


def edge_filter(flt):
    """A ``qdrant_client.models.Filter`` as an Edge ``Filter`` (``None`` stays ``None``)."""
    if flt is None:
        return None
    qe = qdrant_edge_module()

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


def edge_with_payload(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise E5VConfigError(f"with_payload={value!r} is not supported by the Edge engine (use a bool or field list)")


def edge_with_vector(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return bool(value)
    return list(value)


def edge_search_params(params, hnsw_ef: int | None = None):
    """Edge ``SearchParams`` of a ``qdrant_client`` one; ``hnsw_ef`` applies when ``params`` name none (the
    collection's recorded search ef)."""
    if params is None:
        return None if hnsw_ef is None else qdrant_edge_module().SearchParams(hnsw_ef=hnsw_ef)
    qe = qdrant_edge_module()
    quantization = None
    if params.quantization is not None:
        quantization = qe.QuantizationSearchParams(
            ignore=bool(params.quantization.ignore),
            rescore=params.quantization.rescore,
            oversampling=params.quantization.oversampling,
        )
    return qe.SearchParams(hnsw_ef=params.hnsw_ef or hnsw_ef, exact=bool(params.exact), quantization=quantization)


def edge_query_vector(query: Any):
    """A dense query vector as floats, or a sparse one as Edge's ``SparseVector``."""
    from qdrant_client import models

    if isinstance(query, models.NearestQuery):
        query = query.nearest
    if isinstance(query, models.SparseVector):
        return edge_vector(query)
    if hasattr(query, "tolist"):
        query = query.tolist()
    if not isinstance(query, list):
        raise E5VConfigError(f"query {type(query).__name__} is not supported by the Edge engine (give a dense vector)")
    return [float(x) for x in query]


# ---------------------------------------------------------------- Edge results -> qdrant_client models
def client_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


def client_vector(value: Any) -> Any:
    """Edge's vectors as ``qdrant_client`` ones (a sparse vector becomes ``models.SparseVector``)."""
    from qdrant_client import models

    if isinstance(value, dict):
        return {name: client_vector(v) for name, v in value.items()}
    if isinstance(value, qdrant_edge_module().SparseVector):
        return models.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def client_record(rec):
    from qdrant_client import models

    return models.Record(id=client_id(rec.id), payload=rec.payload, vector=client_vector(rec.vector))


def client_scored_point(point):
    from qdrant_client import models

    return models.ScoredPoint(
        id=client_id(point.id),
        version=point.version,
        score=point.score,
        payload=point.payload,
        vector=client_vector(point.vector),
    )
