"""Vector identity: which options change the vectors, and the model fingerprint computed from them.

Every ``EncoderConfig`` field declares ``vectors=True`` or not (``config.option``). Everything that must know "are
these vectors interchangeable?" derives from that one declaration: the fingerprint id below (and with it the
physical collection name), the encoder options recorded in a collection's stamp, the options ``search`` and
``reingest`` reuse from that stamp, and the fields the LlamaIndex adapter mirrors. An option added to
``EncoderConfig`` with ``vectors=True`` is therefore part of all of them at once.

Prompts are split by when they shape a vector. The **stored** prompts (document text and image bodies, the chat
wrapper) made the points of a collection: they are in the ``id``. The **query-time** prompts (the composed body and a
query prompt) only shape query vectors: the fingerprint records them under ``query_prompts`` for provenance, but a
difference there is not a mismatch, so fixing or choosing one never orphans a collection. (Ingest stores no composed
points; ``stored_prompts_digest`` takes the kinds stored should that change.)

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
from .errors import E5VConfigError, E5VModelError
from .hub import hub_options
from .prompts import PromptSet, get_prompts

__all__ = [
    "vector_fields",
    "vector_options",
    "fingerprint",
    "stored_prompts_digest",
    "stamp_id",
    "differences",
    "QUERY_TIME_FIELDS",
    "model_dim",
    "folder_digest",
    "absolute_folders",
]

#: Fields whose identity is not their value: a local folder counts by its files' digest (so path spelling does not
#: matter), an adapter by its ``adapter_*`` files, prompts by the resolved strings of the stored prompts
#: (``stored_prompts_digest``).
_FOLDER_FIELDS = ("model", "adapter")
_PROMPT_FIELDS = ("prompts", "query_prompt")
#: ``EncoderConfig`` fields that shape query vectors only (declared ``query_time=True``): recorded (search reuses
#: them), never a mismatch.
QUERY_TIME_FIELDS = tuple(f.name for f in dataclasses.fields(EncoderConfig) if f.metadata.get("query_time"))
#: The kinds of points ingest stores; their prompt bodies are part of a collection's identity.
_STORED_KINDS = ("text", "image")
#: What the query-time prompt fields held in the digest of every stamp written before the split (issue 27): the
#: ``e5v`` preset's composed body as released then (trailing space) and no query prompt. The stored-prompt digest keeps
#: that layout with these values in their place, so a collection of the default prompts keeps its fingerprint id.
_FROZEN_QUERY_TIME = {
    "composed": '<image>Modify this image with "{text}", desribe modified image in one word: ',
    "query": None,
}


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
    resolved strings of the stored prompts (text and image bodies, chat wrapper: two presets with the same strings
    agree), the dimension and every other vector option by value (``max_text_tokens``, …). Query-time prompts
    (composed body, query prompt) are returned under ``query_prompts`` for provenance, outside the ``id``. Dtype and
    device are left out: they change vectors only within numerical noise. Equal ids mean interchangeable stored
    vectors; collections are named and stamped by it. ``model`` and ``adapter`` are also returned as given, for people
    reading the stamp.

    Args:
        config: the encoder options.
        dim: the embedding size when already known (a loaded model); read from ``config.json`` otherwise.
    """
    local = os.path.isdir(config.model)
    prompts = get_prompts(config.prompts, query=config.query_prompt)
    identity: dict[str, Any] = {
        "model": None if local else config.model,
        "model_digest": folder_digest(config.model) if local else None,
        "adapter_digest": folder_digest(config.adapter, prefix="adapter_") if config.adapter else None,
        "prompts": stored_prompts_digest(prompts),
        "dim": int(dim) if dim is not None else model_dim(config),
    }
    for name, value in vector_options(config).items():
        if name not in _FOLDER_FIELDS and name not in _PROMPT_FIELDS:
            identity[name] = value
    query_time = {"composed": prompts.composed, "query": prompts.query}
    return {
        **identity,
        "model": config.model,
        "adapter": config.adapter,
        "query_prompts": query_time,
        "id": _id(identity),
    }


def _id(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def stored_prompts_digest(prompts: PromptSet, kinds: tuple[str, ...] = _STORED_KINDS) -> str:
    """Hash of the prompts that shape stored vectors: the chat wrapper and the bodies of ``kinds`` (``text``,
    ``image``, and ``composed`` if composed points are stored). The other bodies are hashed as frozen placeholders
    (``_FROZEN_QUERY_TIME``), so the digest of the default prompts is the one stamps have always carried."""
    fields = dataclasses.asdict(prompts) | {k: v for k, v in _FROZEN_QUERY_TIME.items() if k not in kinds}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def stamp_id(record: dict[str, Any], options: dict[str, Any]) -> str | None:
    """The id, by today's formula, of the vectors a collection stamp describes (else the id it records).

    ``record`` is the stamp's fingerprint, ``options`` its encoder options. A stamp written since the split (it has
    ``query_prompts``) carries that id. An older one hashed every prompt body, query-time ones included, and its
    preset bodies as then released (each ending in a space): the recorded preset and query prompt are rebuilt that
    way, checked against the recorded digest, and the id is recomputed from the stored bodies alone; a stamp that
    cannot be rebuilt so keeps its recorded id (only an equal id is compatible). No stamp is rewritten: an old
    collection keeps working as it is.
    """
    if "query_prompts" in record:
        return record.get("id")
    try:
        legacy = _as_released_before_split(
            get_prompts(options.get("prompts") or "e5v", query=options.get("query_prompt"))
        )
    except E5VConfigError:
        return record.get("id")
    if stored_prompts_digest(legacy, kinds=("text", "image", "composed", "query")) != record.get("prompts"):
        return record.get("id")  # not strings we can rebuild
    identity = {k: v for k, v in record.items() if k not in ("adapter", "id")}
    identity["model"] = None if record.get("model_digest") else record.get("model")
    identity["prompts"] = stored_prompts_digest(legacy)
    return _id(identity)


def differences(record: dict[str, Any], options: dict[str, Any], config: EncoderConfig, current: dict[str, Any]) -> str:
    """What differs between a stamp (``record`` fingerprint, recorded ``options``) and ``config`` with its fingerprint
    ``current``, option by option, for mismatch messages. Query-time prompts are never listed: they never mismatch."""
    digests = ("model_digest", "adapter_digest", "dim")
    names = [k for k in vector_fields() if k not in QUERY_TIME_FIELDS]
    recorded = {k: options.get(k) for k in names} | {k: record.get(k) for k in digests}
    now = {k: getattr(config, k) for k in names} | {k: current.get(k) for k in digests}
    lines = [f"{k} {recorded[k]!r} (collection) vs {v!r} (now)" for k, v in now.items() if recorded[k] != v]
    if not lines:  # same options, other stored prompt strings (a preset's bodies changed between releases)
        lines.append(f"stored prompts of preset {config.prompts!r} differ from the collection's")
    return "; ".join([*lines, f"fingerprint {record.get('id')} (collection) vs {current['id']} (now)"])


def _as_released_before_split(prompts: PromptSet) -> PromptSet:
    """``prompts`` as presets were released before issue 27: every image and composed body ended with a space (the
    authors strip it from their composed-retrieval bodies; E5V_REFERENCE.md §1)."""
    return dataclasses.replace(
        prompts,
        **{name: body + " " for name in ("image", "composed") if not (body := getattr(prompts, name)).endswith(" ")},
    )


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
