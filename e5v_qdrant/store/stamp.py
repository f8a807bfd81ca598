"""What a collection records about its vectors (the stamp in its metadata), its physical name, and the refusal to mix
models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import E5VConfigError
from ..identity import vector_options
from ..points import DEFAULT_SPARSE_ENCODER

__all__ = ["METADATA_KEY", "CollectionMismatchError", "CollectionStamp", "encoder_record", "physical_name"]

#: Key of this package's stamp inside the collection metadata.
METADATA_KEY = "e5v_qdrant"
STAMP_SCHEMA = 1


class CollectionMismatchError(E5VConfigError):
    """The collection holds vectors of another model, prompt set or dimension."""


def physical_name(alias: str, fingerprint_id: str, sparse: dict[str, Any] | None = None) -> str:
    """Name of the physical collection serving ``alias`` for the model with this fingerprint id and, for a hybrid
    collection whose keyword encoder is not the default one, that encoder's name (``-qdrant-bm25``): the two kinds of
    the same model can live side by side while ``reingest --sparse-encoder`` switches the alias."""
    name = (sparse or {}).get("name")
    return f"{alias}-e5v-{fingerprint_id}" + (f"-{name}" if name and name != DEFAULT_SPARSE_ENCODER else "")


@dataclass
class CollectionStamp:
    """What the collection metadata records about the vectors inside (``sparse``: the hybrid sparse encoder's spec)."""

    fingerprint: dict[str, Any]
    encoder: dict[str, Any]
    alias: str | None = None
    sparse: dict[str, Any] | None = None

    def to_metadata(self) -> dict[str, Any]:
        data = {
            "schema": STAMP_SCHEMA,
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
