"""Reaching the Hugging Face hub: one probe per process, so an offline machine fails fast or loads its cached copy.

Every ``from_pretrained`` of a model's files (weights, processor, config, the chunker's tokenizer) passes
``hub_options(model, revision)``: nothing for a local folder or a reachable hub; offline, ``local_files_only`` for a
cached copy, else one ``E5VModelError`` naming ``--model FOLDER`` (instead of ~30 s of retried requests).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from .errors import E5VModelError

__all__ = ["hub_options"]

logger = logging.getLogger(__name__)


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (one request of at most a few seconds per process), or ``None``."""
    from huggingface_hub import constants, get_session, is_offline_mode

    if is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception as exc:  # noqa: BLE001 - DNS, refused, timeout, proxy: all mean "no hub now"
        return f"{constants.ENDPOINT} is unreachable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def hub_options(model: str, revision: str | None = None) -> dict[str, Any]:
    """Extra ``from_pretrained`` options for ``model``: none for a local folder or a reachable hub; offline (no hub,
    probed once) a cached copy loads with ``local_files_only`` instead of after ~30 s of retried requests.

    Raises:
        E5VModelError: offline and ``model`` is not in the local hub cache (the message names ``--model FOLDER``).
    """
    if os.path.isdir(model):
        return {}
    why = _hub_unreachable()
    if why is None:
        return {}
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except ValueError as exc:  # HFValidationError: not a hub id, so a folder that does not exist
        raise E5VModelError(
            f"cannot load {model!r}: no such folder, and not a hub id (owner/name). Pass --model with an existing "
            "folder holding config.json, the processor files and model.safetensors, or a hub id such as royokong/e5-v."
        ) from exc
    if isinstance(cached, str):
        logger.info("%s: loading %s from the local hub cache", why, model)
        return {"local_files_only": True}
    raise E5VModelError(
        f"cannot download {model!r}{f' at revision {revision!r}' if revision else ''}: {why}, and it is not in the "
        "local hub cache. Pass --model /path/to/e5-v (a local copy: config.json, the processor files and "
        "model.safetensors), or run once with network access to cache it."
    )
