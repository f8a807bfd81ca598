"""Outputs of a fine-tuning run: the manifest and the optional merged full checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json", "merge_adapter"]


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (a crash leaves the previous file, never a truncated one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def merge_adapter(
    model: str,
    adapter: str | os.PathLike,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    dtype: str = "auto",
) -> Path:
    """Write a full LLaVA-NeXT checkpoint with the LoRA adapter merged into its language model.

    The result is a ``LlavaNextForConditionalGeneration`` folder (vision tower, projector, language model, lm_head,
    processor files, safetensors) that ``E5VEncoder(model=output)`` and other LLaVA-NeXT loaders (vLLM) read like the
    original. Loading reuses ``checkpoint``'s pieces: its processor fix (trap 2: the saved processor config gains
    ``patch_size`` / ``vision_feature_select_strategy``, and left padding) and its adapter loader. The vocabulary keeps
    the original size (the ``<image>`` id stays outside the table as in the published checkpoint, consistent with
    ``lm_head`` and ``vocab_size``); ``E5VEncoder`` grows the table on load exactly as for the original.

    Args:
        model: the base checkpoint the adapter was trained on (hub id or folder).
        adapter: the PEFT adapter folder.
        output: folder to write.
        revision: hub revision of ``model``.
        dtype: weights dtype to merge and save in (``auto`` = bfloat16/float16 on CUDA, float32 on CPU).

    Returns:
        The output folder.
    """
    from transformers import LlavaNextForConditionalGeneration

    from ..checkpoint import apply_adapter, load_processor, resolve_device_and_dtype
    from ..errors import E5VModelError

    _, torch_dtype = resolve_device_and_dtype(None, dtype)  # merged on CPU, saved in the training dtype
    # the processor as saved (PIL image processor), its config fixed so the merged checkpoint is clean
    processor, _, _ = load_processor(model, revision, fast_images=False)
    try:
        full = LlavaNextForConditionalGeneration.from_pretrained(
            model, revision=revision, dtype=torch_dtype, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise E5VModelError(f"cannot load {model!r} to merge the adapter into: {exc}") from exc
    apply_adapter(full.model, adapter)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    full.save_pretrained(output, safe_serialization=True)
    processor.save_pretrained(output)
    return output
