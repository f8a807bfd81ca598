"""Which model serves a collection: the encoder options recorded in its stamp, merged with the options given.

Every command that works on an existing collection (``ingest`` into it, ``search``, ``reingest``, the server) and
Python users alike get the same defaults: an option given explicitly wins, then the option recorded in the
collection's stamp when it was created (every option that changes vectors is recorded, see ``identity``), then the
``EncoderConfig`` default. So ``search "query" --collection docs`` loads the model, revision, adapter, prompts and
layout the collection was built with.

Example:
    >>> from e5v_qdrant.collection_model import encoder_config_for
    >>> config = encoder_config_for(store, "docs", dtype="bfloat16")      # recorded model, bf16 weights
    >>> E5VEncoder(config=config)                                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .config import EncoderConfig
from .identity import absolute_folders
from .store import QdrantStore

__all__ = ["recorded_encoder_options", "encoder_config_for"]


def recorded_encoder_options(store: QdrantStore, collection: str) -> dict[str, Any]:
    """Encoder options recorded in ``collection``'s stamp (model, revision, adapter, prompts …), or ``{}`` when the
    collection does not exist or was not made by this package. Options recorded as ``None`` are left out."""
    physical = store.resolve(collection)
    stamp = store.stamp(physical) if physical is not None else None
    if stamp is None:
        return {}
    return {k: v for k, v in stamp.encoder.items() if v is not None}


def encoder_config_for(store: QdrantStore, collection: str, **given: Any) -> EncoderConfig:
    """The ``EncoderConfig`` for working on ``collection``: ``given`` options, else recorded ones, else defaults.

    A recorded adapter belongs to the recorded base model: it is not inherited when ``given`` names a ``model``
    (give ``adapter`` too to keep one). Local model and adapter folders are made absolute, so the collection records
    paths valid from any working directory.

    Raises:
        E5VConfigError: an invalid option (recorded or given), or one this e5v-qdrant does not know (e.g. recorded
            by a newer version: its vectors could not be reproduced, so it is not dropped).
    """
    recorded = recorded_encoder_options(store, collection)
    if "model" in given:
        recorded.pop("adapter", None)
    return EncoderConfig.from_options(absolute_folders({**recorded, **given}))
