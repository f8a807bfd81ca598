"""Vector identity: which options change the vectors, and the model fingerprint computed from them.

Every ``EncoderConfig`` field declares ``vectors=True`` or not (``config.option``). Everything that must know "are
these vectors interchangeable?" derives from that one declaration: the fingerprint id below (and with it the
physical collection name), the encoder options recorded in a collection's stamp, the options ``search`` and
``reingest`` reuse from that stamp, and the fields the LlamaIndex adapter mirrors. An option added to
``EncoderConfig`` with ``vectors=True`` is therefore part of all of them at once.

The fingerprint needs no model weights: the dimension comes from the checkpoint's ``config.json`` (one small file
for a hub id), so a command can decide which collection it writes to — and whether anything needs embedding at all —
before paying for a model load.

Example:
    >>> from e5v_qdrant.config import EncoderConfig
    >>> from e5v_qdrant.identity import fingerprint
    >>> fingerprint(EncoderConfig(model="royokong/e5-v", revision="main"))["id"]   # doctest: +SKIP
    '3f1c0d2a9b8e7f60'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .config import EncoderConfig
from .errors import E5VModelError
from .prompts import get_prompts

__all__ = ["vector_fields", "vector_options", "fingerprint", "model_dim", "folder_digest", "absolute_folders"]

#: Fields whose identity is not their value: a local folder counts by its files' digest (so path spelling does not
#: matter), an adapter by its ``adapter_*`` files, prompts and query prompt by the resolved prompt strings.
_FOLDER_FIELDS = ("model", "adapter")
_PROMPT_FIELDS = ("prompts", "query_prompt")


@functools.cache
def vector_fields() -> tuple[str, ...]:
    """Names of the ``EncoderConfig`` fields declared with ``vectors=True``, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(EncoderConfig) if f.metadata.get("vectors"))


def vector_options(config: EncoderConfig) -> dict[str, Any]:
    """The options of ``config`` that change vectors, as given (recorded in collection stamps)."""
    return {name: getattr(config, name) for name in vector_fields()}


def absolute_folders(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with local ``model`` / ``adapter`` folders made absolute, so a recorded path works from anywhere."""
    options = dict(options)
    for name in _FOLDER_FIELDS:
        value = options.get(name)
        if isinstance(value, str) and os.path.isdir(value):
            options[name] = os.path.abspath(value)
    return options


def model_dim(config: EncoderConfig) -> int:
    """Embedding size of ``config.model`` (its text model's hidden size) read from ``config.json`` alone.

    Raises:
        E5VModelError: no LLaVA-NeXT config can be read from ``config.model`` at ``config.revision``.
    """
    from transformers import LlavaNextConfig

    from .checkpoint import hub_options

    try:
        hub = hub_options(config.model, config.revision)  # offline: fast, one clear error or the cached copy
        model_config = LlavaNextConfig.from_pretrained(config.model, revision=config.revision, **hub)
    except (OSError, ValueError) as exc:
        raise E5VModelError(
            f"cannot read an E5-V / LLaVA-NeXT config from {config.model!r}"
            f"{f' at revision {config.revision!r}' if config.revision else ''}: {str(exc).rstrip('.')}. Pass a hub id "
            "or a local folder holding config.json, the processor files and model.safetensors."
        ) from exc
    return int(model_config.text_config.hidden_size)


def fingerprint(config: EncoderConfig, *, dim: int | None = None) -> dict[str, Any]:
    """What determines the vectors of ``config`` plus a short ``id`` hash of it; no weights are loaded.

    The ``id`` covers every ``vectors=True`` option: the weights (hub id + revision, or a digest of a local folder's
    files), the adapter's ``adapter_*`` files (checkpoints or a merged copy saved beside them do not count), the
    resolved prompt strings (so a preset and the same strings given as a query prompt agree), the dimension and every
    other vector option by value (``max_text_tokens``, …). Dtype and device are left out: they change vectors only
    within numerical noise. Equal ids mean interchangeable vectors; collections are named and stamped by it.
    ``model`` and ``adapter`` are also returned as given, for people reading the stamp.

    Args:
        config: the encoder options.
        dim: the embedding size when already known (a loaded model); read from ``config.json`` otherwise.
    """
    local = os.path.isdir(config.model)
    identity: dict[str, Any] = {
        "model": None if local else config.model,
        "model_digest": folder_digest(config.model) if local else None,
        "adapter_digest": folder_digest(config.adapter, prefix="adapter_") if config.adapter else None,
        "prompts": get_prompts(config.prompts, query=config.query_prompt).digest(),
        "dim": int(dim) if dim is not None else model_dim(config),
    }
    for name, value in vector_options(config).items():
        if name not in _FOLDER_FIELDS and name not in _PROMPT_FIELDS:
            identity[name] = value
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return {**identity, "model": config.model, "adapter": config.adapter, "id": digest}


def folder_digest(folder: str | os.PathLike, prefix: str = "") -> str:
    """Hash of the config and weight files directly in ``folder`` whose names start with ``prefix``.

    Each file contributes its name, size and first and last MiB: cheap on multi-GB shards, and still different for
    a retrained adapter or another checkpoint.
    """
    h = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or not path.name.startswith(prefix):
            continue
        if path.suffix not in (".json", ".safetensors", ".bin", ".model", ".txt"):
            continue
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]
