"""The model options: how E5-V is loaded and run; everything that changes the vectors."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..anyres import DEFAULT_LAYOUT, LAYOUTS
from ..errors import E5VConfigError
from ..media import DEFAULT_MAX_IMAGE_PIXELS
from ..options import Options, option

__all__ = ["DEFAULT_MODEL", "DTYPE_NAMES", "EncoderConfig"]

DEFAULT_MODEL = "royokong/e5-v"
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EncoderConfig(Options):
    """How to load and run E5-V. Everything that changes the vectors lives here."""

    model: str = option(DEFAULT_MODEL, help="hub id or local folder of an E5-V / LLaVA-NeXT checkpoint", vectors=True)
    revision: str | None = option(
        None, help="hub revision (branch, tag or commit) to pin; reaches every from_pretrained call", vectors=True
    )
    adapter: str | None = option(
        None,
        help="folder of a PEFT LoRA adapter from `e5v-qdrant finetune`, applied to the language model",
        vectors=True,
    )
    device: str | None = option(
        None, help="torch device (cpu, cuda, cuda:1, mps); default: cuda if available, else cpu"
    )
    dtype: str = option(
        "auto", help="weights dtype; auto = bfloat16 (or float16) on CUDA, float32 on CPU", choices=DTYPE_NAMES
    )
    batch_size: int = option(8, help="most items per forward pass")
    max_batch_tokens: int | None = option(
        None,
        help="token budget per forward pass (batch rows × longest row); default: 1024 on CPU, batch_size × 512 on GPU",
    )
    prompts: str = option(
        "e5v", help="prompt preset (e5v = the authors' exact strings; e5v-typofix fixes 'desribe')", vectors=True
    )
    query_prompt: str | None = option(
        None,
        help="body for search queries with a {text} placeholder; default: queries use the document text prompt",
        vectors=True,
        query_time=True,
    )
    max_text_tokens: int | None = option(
        None,
        help="truncate user text to this many tokens before prompting (paper training used 32); default: no limit",
        vectors=True,
    )
    max_image_pixels: int | None = option(
        DEFAULT_MAX_IMAGE_PIXELS, help="refuse images with more pixels (decompression bombs)"
    )
    preprocess_workers: int = option(
        2, help="threads decoding and tiling images ahead of the model (0 = in the calling thread)"
    )
    attn_implementation: str = option(
        "sdpa", help="transformers attention implementation", choices=("sdpa", "eager", "flash_attention_2")
    )
    reuse_cpu_memory: bool = option(
        False,
        help="on CPU with glibc, keep memory freed between forward passes in the heap for the length of an embed "
        "call instead of unmapping it and page-faulting it back in (sets glibc's process-wide mmap/trim thresholds "
        "for the call, then returns the memory to the OS); vectors are unchanged. Default: on for the command line, "
        "off for the Python API (it changes allocator settings of the whole host process)",
        cli_default=True,
    )
    image_layout: str = option(
        DEFAULT_LAYOUT,
        help="how images become tokens: paper = the authors' environment (transformers 4.41.2), where every published "
        "E5-V image number was measured; llava-next = today's transformers, the original LLaVA-NeXT code and vLLM. "
        "They differ for images whose best anyres grid is non-square (3:2 photos such as 500x333, small squares, "
        "documents, panoramas); a collection holds one layout",
        choices=LAYOUTS,
        vectors=True,
    )

    def validate(self) -> None:
        if self.batch_size < 1:
            raise E5VConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise E5VConfigError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.max_text_tokens is not None and self.max_text_tokens < 1:
            raise E5VConfigError(f"max_text_tokens must be >= 1, got {self.max_text_tokens}")
        if self.preprocess_workers < 0:
            raise E5VConfigError(f"preprocess_workers must be >= 0, got {self.preprocess_workers}")
        if not self.model:
            raise E5VConfigError("model must be a hub id or a local folder")
        if self.adapter is not None and not os.path.isdir(self.adapter):
            raise E5VConfigError(
                f"adapter folder {self.adapter!r} does not exist (pass the --output folder of `e5v-qdrant finetune`)"
            )
        from ..prompts import get_prompts

        get_prompts(self.prompts, query=self.query_prompt)  # validates preset name and placeholders
