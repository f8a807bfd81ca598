"""Checkpoint loading: an E5-V / LLaVA-NeXT checkpoint from the hub or a folder, with the published checkpoint's fixes.

One loading path for every user of the model — the encoder, fine-tuning and adapter merging — so the fixes below
are applied the same way everywhere:

1. ``<image>``'s id (128256 in ``royokong/e5-v``) equals the text vocabulary size: current transformers raise
   ``IndexError`` on any image. ``fix_image_token`` grows the input embedding table by the missing, never-read rows.
2. Processor configs saved by old transformers lack ``patch_size``, ``vision_feature_select_strategy`` and
   ``num_additional_image_tokens`` (authors' issue #26): ``fix_processor`` takes them from the model config.
3. ``revision`` reaches every ``from_pretrained`` call (the llava-hf processor files once changed upstream, issue #14).

Each fix is logged once at INFO (``e5v-qdrant -v`` shows it) and returned in ``LoadedCheckpoint.fixes`` (evaluation
reports record them). ``trust_remote_code`` is never enabled and weights load from safetensors only.

Example:
    >>> from e5v_qdrant.checkpoint import load_checkpoint, resolve_device_and_dtype
    >>> device, dtype = resolve_device_and_dtype(None, "auto")                       # doctest: +SKIP
    >>> ckpt = load_checkpoint(EncoderConfig(model="royokong/e5-v"), device=device, dtype=dtype)  # doctest: +SKIP
    >>> ckpt.fixes                                                                   # doctest: +SKIP
    ['processor: patch_size=None→14, ...', '<image> token id 128256 ...']
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .config import EncoderConfig
from .errors import E5VModelError
from .hub import hub_options

__all__ = [
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_processor",
    "resolve_device_and_dtype",
    "fix_processor",
    "fix_image_token",
    "apply_adapter",
    "hub_options",
]

logger = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    """What ``load_checkpoint`` returns.

    Attributes:
        model: the base ``LlavaNextModel`` (vision tower, projector, language model; no vocabulary head), on the
            device, in eval mode, gradients off.
        processor: the ``LlavaNextProcessor`` with its config fixed.
        model_config: the ``LlavaNextConfig``.
        fixes: one line per published-checkpoint fix applied on load (empty for a clean checkpoint).
    """

    model: Any
    processor: Any
    model_config: Any
    fixes: list[str] = field(default_factory=list)


def resolve_device_and_dtype(device: str | None, dtype: str):
    """``(torch.device, torch.dtype)`` for a device name (``None`` = cuda, else mps, else cpu) and a dtype name.

    ``dtype="auto"`` is bfloat16 on CUDA (float16 where bf16 is unsupported), float16 on MPS, float32 on CPU.
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    dev = torch.device(device)
    if dtype == "auto":
        if dev.type == "cuda":
            torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif dev.type == "mps":
            torch_dtype = torch.float16
        else:
            torch_dtype = torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    return dev, torch_dtype


def _image_processor_options() -> dict[str, str]:
    """Ask for transformers' torchvision image processor when torchvision imports.

    It tiles and normalises with torch ops, several times faster than the PIL path; its bicubic resize differs from
    PIL's by rounding-level noise only. Without torchvision nothing is passed and the PIL processor loads as before.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch (e.g. "operator torchvision::nms does not exist")
        return {}
    return {"backend": "torchvision"}


def _config_error(model: str, revision: str | None, exc: Exception) -> E5VModelError:
    return E5VModelError(
        f"cannot load an E5-V / LLaVA-NeXT checkpoint from {model!r}"
        f"{f' at revision {revision!r}' if revision else ''}: {str(exc).rstrip('.')}. Pass a hub id or a local folder "
        "holding config.json, the processor files and model.safetensors."
    )


def load_processor(model: str, revision: str | None = None, *, fast_images: bool = True):
    """``(processor, model_config, fixes)`` of a checkpoint, the processor config fixed (``fix_processor``).

    Args:
        model: hub id or local folder.
        revision: hub revision to pin.
        fast_images: request transformers' torchvision image processor when torchvision imports.

    Raises:
        E5VModelError: the folder or hub id holds no LLaVA-NeXT config or processor.
    """
    from transformers import LlavaNextConfig, LlavaNextProcessor

    options = _image_processor_options() if fast_images else {}
    hub = hub_options(model, revision)
    try:
        model_config = LlavaNextConfig.from_pretrained(model, revision=revision, **hub)
        processor = LlavaNextProcessor.from_pretrained(model, revision=revision, **options, **hub)
    except (OSError, ValueError) as exc:
        raise _config_error(model, revision, exc) from exc
    return processor, model_config, fix_processor(processor, model_config)


def load_checkpoint(
    config: EncoderConfig,
    *,
    device,
    dtype,
    weight_options: dict[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Load ``config.model`` at ``config.revision`` with every published-checkpoint fix, and ``config.adapter``.

    Args:
        config: model, revision, adapter and attention implementation are used.
        device: torch device to move the model to.
        dtype: torch dtype of the weights.
        weight_options: extra ``from_pretrained`` options for the weights (fine-tuning passes 4-bit quantization).

    Raises:
        E5VModelError: the checkpoint, its weights or the adapter cannot be loaded.
    """
    from transformers import LlavaNextForConditionalGeneration

    processor, model_config, fixes = load_processor(config.model, config.revision)
    try:
        with _quiet_local_load(config.model):
            full = LlavaNextForConditionalGeneration.from_pretrained(
                config.model,
                revision=config.revision,
                dtype=dtype,
                use_safetensors=True,
                attn_implementation=config.attn_implementation,
                **hub_options(config.model, config.revision),
                **(weight_options or {}),
            )
    except (OSError, ValueError) as exc:
        raise E5VModelError(f"cannot load model weights from {config.model!r}: {exc}") from exc
    base = full.model
    fix = fix_image_token(base, model_config)
    if fix:
        fixes.append(fix)
    if config.adapter:
        apply_adapter(base, config.adapter)
    del full  # only the base model is kept: embeddings never use the ~1 GB vocabulary head
    model = base if (weight_options or {}).get("device_map") else base.to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedCheckpoint(model=model, processor=processor, model_config=model_config, fixes=fixes)


@contextlib.contextmanager
def _quiet_local_load(model: str):
    """No "Loading weights" progress bar for a local folder (a download from the hub keeps its bars)."""
    if not os.path.isdir(model):
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def fix_processor(processor, model_config) -> list[str]:
    """Published-checkpoint trap 2: fill processor settings old transformers did not save, from the model config.

    Also gives the tokenizer a pad token (its end-of-sequence token) if it has none, and left padding for callers
    that pool the last position of a padded batch themselves (the encoder pads on its own).

    Returns:
        One line describing the fix, or an empty list when the processor config already agreed.
    """
    vision = model_config.vision_config
    expected = {
        "patch_size": vision.patch_size,
        "vision_feature_select_strategy": model_config.vision_feature_select_strategy,
        # CLIP towers emit a CLS token that the "default" strategy drops; the processor must count it.
        "num_additional_image_tokens": 1 if "clip" in getattr(vision, "model_type", "") else 0,
    }
    changed = []
    for name, value in expected.items():
        current = getattr(processor, name, None)
        if current != value:
            changed.append(f"{name}={current!r}→{value!r}")
            setattr(processor, name, value)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not changed:
        return []
    message = (
        "processor config disagrees with the model config (known trap of the published E5-V checkpoint, saved by an "
        f"old transformers); using the model's values: {', '.join(changed)}"
    )
    logger.info(message)
    return [message]


def fix_image_token(base, model_config) -> str | None:
    """Published-checkpoint trap 1: ``<image>`` id == vocab_size, outside the embedding table.

    Grows the input embedding table by the missing rows. Their values never matter: every ``<image>`` position is
    overwritten with image features before the language model runs.

    Returns:
        A line describing the fix, or ``None`` when the id was already inside the table.
    """
    rows = base.get_input_embeddings().num_embeddings
    image_id = model_config.image_token_id
    if image_id < rows:
        return None
    base.language_model.resize_token_embeddings(image_id + 1, mean_resizing=False)
    message = (
        f"<image> token id {image_id} is outside the embedding table ({rows} rows), as in the published E5-V "
        f"checkpoint; grew the table to {image_id + 1} rows (the extra rows are never read)"
    )
    logger.info(message)
    return message


def apply_adapter(base, adapter: str | os.PathLike) -> None:
    """Apply a PEFT LoRA adapter trained on the language model of ``base``, merged into its weights.

    Raises:
        E5VModelError: peft is missing or the adapter folder cannot be loaded.
    """
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise E5VModelError("adapters need peft: pip install 'e5v-qdrant[train]'") from exc
    try:
        wrapped = PeftModel.from_pretrained(base.language_model, os.fspath(adapter), is_trainable=False)
    except (OSError, ValueError, KeyError) as exc:
        raise E5VModelError(f"cannot load adapter from {os.fspath(adapter)!r}: {exc}") from exc
    base.language_model = wrapped.merge_and_unload()
