"""One loaded ``E5VEncoder`` per ``EncoderConfig`` for framework adapters, and one lock per encoder.

LangChain and Haystack build embedders from plain options, often several per process (a Haystack pipeline has a
query embedder and a document embedder over the same model). ``shared_encoder`` gives them one encoder per distinct
config, loaded on first use and released when no embedder holds it any more; ``encoder_lock`` makes concurrent calls
(async methods run in worker threads) take turns on the model.

Example:
    >>> config = encoder_config("royokong/e5-v", {"dtype": None, "batch_size": 4})  # doctest: +SKIP
    >>> encoder = shared_encoder(config)                                             # doctest: +SKIP
    >>> with encoder_lock(encoder):                                                  # doctest: +SKIP
    ...     vectors = encoder.embed_texts(["a dog on a beach"])
"""

from __future__ import annotations

import dataclasses
import json
import threading
import typing
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .config import EncoderConfig
from .errors import E5VConfigError

if TYPE_CHECKING:
    from .encoder import E5VEncoder

__all__ = ["adapter_options", "pydantic_fields", "encoder_config", "shared_encoder", "encoder_lock"]

#: Options every adapter offers besides those that change vectors: where and how the model runs.
_RUNTIME_OPTIONS = ("device", "dtype", "batch_size")

_ENCODERS: weakref.WeakValueDictionary[str, E5VEncoder] = weakref.WeakValueDictionary()
_LOAD_GUARD = threading.Lock()
_LOCKS: weakref.WeakKeyDictionary[E5VEncoder, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def adapter_options() -> tuple[str, ...]:
    """The ``EncoderConfig`` options every framework adapter offers as its own fields, in declaration order: each one
    declared ``vectors=True`` (so an adapter's serialised form, and LlamaIndex's cache keys, change whenever its
    vectors would) plus device, dtype and batch size. Adapters pass the others through their ``encoder_kwargs``."""
    return tuple(
        f.name for f in dataclasses.fields(EncoderConfig) if f.metadata["vectors"] or f.name in _RUNTIME_OPTIONS
    )


def pydantic_fields(renames: Mapping[str, str] | None = None, *, unset_default: bool = False) -> dict[str, Any]:
    """``adapter_options`` as pydantic field definitions (``pydantic.create_model`` keywords): each option's type,
    default and help text, from its declaration.

    Args:
        renames: option name -> the adapter's field name (e.g. ``model`` -> ``model_name`` for LlamaIndex).
        unset_default: every option but ``model`` is optional and defaults to ``None``, meaning "``EncoderConfig``'s
            default" (``encoder_config`` leaves it out).
    """
    from pydantic import Field

    hints = typing.get_type_hints(EncoderConfig)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(EncoderConfig):
        if f.name not in adapter_options():
            continue
        kind, default = hints[f.name], f.default
        if unset_default and f.name != "model":
            kind, default = kind | None, None
        fields[(renames or {}).get(f.name, f.name)] = (kind, Field(default=default, description=f.metadata["help"]))
    return fields


def encoder_config(
    model: str, options: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
) -> EncoderConfig:
    """A validated ``EncoderConfig`` from an adapter's options.

    Args:
        model: hub id or local folder.
        options: ``EncoderConfig`` fields; a ``None`` value means "``EncoderConfig``'s default" and is left out (so
            an adapter can expose e.g. ``dtype=None`` or an option a newer e5v-qdrant adds).
        extra: more ``EncoderConfig`` fields passed as given (``None`` included, e.g. ``max_image_pixels=None``).

    Raises:
        E5VConfigError: an option ``EncoderConfig`` does not have, or an invalid value.
    """
    values = {name: value for name, value in (options or {}).items() if value is not None}
    values.update(extra or {})
    if "model" in values:
        raise E5VConfigError(f"model is the first argument ({model!r}), not an option; drop model={values['model']!r}")
    return EncoderConfig.from_options(values, model=str(model))


def shared_encoder(config: EncoderConfig) -> E5VEncoder:
    """The loaded encoder for ``config``: the one already held by someone in this process, else a new one.

    Equal configs share one encoder (equal configs give equal vectors). The cache holds encoders weakly: an encoder
    is freed once no caller keeps it.
    """
    from .encoder import E5VEncoder

    key = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    with _LOAD_GUARD:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = E5VEncoder(config=config)
            _ENCODERS[key] = encoder
        return encoder


def encoder_lock(encoder: E5VEncoder) -> threading.Lock:
    """The lock every adapter takes around calls into ``encoder`` (one per encoder, created on first request)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(encoder)
        if lock is None:
            lock = _LOCKS[encoder] = threading.Lock()
        return lock
