"""Storage options as Qdrant arguments: ``create_collection`` kwargs (vectors, quantization, sharding) and search-time
parameters; the hybrid fusion methods."""

from __future__ import annotations

from typing import Any

from ..config import StoreConfig
from ..points import SPARSE_VECTOR_NAME, VECTOR_NAME
from .hnsw import index_defaults, search_record

__all__ = ["FUSIONS", "collection_create_kwargs", "creation_metadata", "search_params"]

#: Hybrid fusion methods (``QdrantStore.query``), Qdrant's names.
FUSIONS = ("rrf", "dbsf")


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
        in_ram = not config.quantized_on_disk
        if config.quantization == "int8":
            kwargs["quantization_config"] = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=in_ram)
            )
        elif config.quantization == "turbo4":
            kwargs["quantization_config"] = models.TurboQuantization(
                turbo=models.TurboQuantQuantizationConfig(bits=models.TurboQuantBitSize.BITS4, always_ram=in_ram)
            )
        elif config.quantization == "binary":
            kwargs["quantization_config"] = models.BinaryQuantization(
                binary=models.BinaryQuantizationConfig(always_ram=in_ram)
            )
        hnsw = index_defaults(config.hnsw_m, config.hnsw_ef_construct)
        kwargs["hnsw_config"] = models.HnswConfigDiff(m=hnsw["m"], ef_construct=hnsw["ef_construct"])
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


def creation_metadata(config: StoreConfig) -> dict[str, Any]:
    """What a new collection records besides its stamp: the search ef it was built for (``hnsw.search_record``)."""
    return search_record(config.hnsw_ef)


def search_params(config: StoreConfig, *, default_ef: int | None = None):
    """``SearchParams``: the HNSW ef (``config.hnsw_ef``, else ``default_ef``; ``None`` lets the engine decide: Edge
    uses the ef its collection recorded) and, for a quantized collection, rescoring with the originals and
    oversampling. ``None`` when there is nothing to set."""
    from qdrant_client import models

    ef = config.hnsw_ef if config.hnsw_ef is not None else default_ef
    quantization = None
    if config.quantization != "none":
        quantization = models.QuantizationSearchParams(rescore=config.rescore, oversampling=config.oversampling)
    if ef is None and quantization is None:
        return None
    return models.SearchParams(hnsw_ef=ef, quantization=quantization)
