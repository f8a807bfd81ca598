"""``E5VEncoder``: E5-V embeddings for texts, images and image + edit text, framework-free.

The recipe (arXiv 2407.12580; github.com/kongds/E5-V): wrap the input in a "summarise in one word" prompt inside the
Llama-3 chat template, run LLaVA-NeXT, take the final-layer hidden state (after the last RMSNorm) at the last token
and L2-normalise it. This module computes exactly that vector, but runs only the base model (no vocabulary logits,
no per-layer hidden states, no KV cache, the final layer only at the pooled position), pads on the right and pools
each row at its own last token (causal attention makes that exact, with no attention mask), and batches inputs
sorted by length under a token budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_MODEL, EncoderConfig
from .errors import E5VInputError, E5VModelError
from .media import ImageInput, describe_source, load_image
from .prompts import PromptSet, get_prompts

__all__ = ["E5VEncoder"]

logger = logging.getLogger(__name__)

# How many items an embed_* call prepares (decodes, tiles, tokenises) before sorting them into batches. Bounds the
# memory of pixel tensors held at once: an anyres image is up to 5 tiles × 3 × 336 × 336 floats (≈ 6.8 MB).
_WINDOW_BATCHES = 8
#: Default token budget per forward pass on accelerators, per row of ``batch_size`` (budget = batch_size × this).
_TOKENS_PER_ROW = 512
#: Default token budget per forward pass on CPU: matrix kernels saturate well below it, and larger batches only add
#: padding and spill caches (measured on the benchmark replica: budgets of 512–2048 tokens beat 4096+).
_CPU_BATCH_TOKENS = 1024
#: Rows longer than this are batched only with rows of equal length (no padding, no attention mask); see ``_batches``.
_PAD_FREE_ABOVE = 1024
# glibc mallopt parameters (<malloc.h>) and the values ``_freed_memory_kept`` uses; see there.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_MMAP_THRESHOLD = 256 << 20  # during an embed call: blocks up to this size come from the heap, not fresh mmaps
_KEEP_TRIM_THRESHOLD = 1 << 30  # during an embed call: free memory at the heap's top is not handed back
_AFTER_MMAP_THRESHOLD = 32 << 20  # after it: glibc's own ceiling for its dynamic mmap threshold (64-bit)
_AFTER_TRIM_THRESHOLD = 64 << 20  # after it: twice that, as glibc's dynamic scheme sets it


class _LastLayerInputs(Exception):
    """Raised by the final layer's pre-hook inside ``_forward``: carries that layer's inputs (see ``_forward``)."""

    def __init__(self, hidden, kwargs):
        super().__init__("final decoder layer reached")
        self.hidden, self.kwargs = hidden, kwargs


@dataclass
class _Prepared:
    """One input ready for the model: prompt token ids and, for images, its pixel tiles and original size."""

    input_ids: list[int]
    pixel_values: Any = None  # torch.Tensor (tiles, 3, H, W) or None
    image_size: Any = None  # torch.Tensor (2,) = (height, width) or None


def _resolve_device_and_dtype(device: str | None, dtype: str):
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


class E5VEncoder:
    """Embed texts, images and composed (image + modification text) queries with E5-V.

    Vectors are ``float32``, L2-normalised, shape ``(n, dim)`` (4096 for ``royokong/e5-v``); similarity is the dot
    product. With default options they equal the authors' recipe.

    Args:
        model: hub id or local folder (default ``royokong/e5-v``).
        config: a full ``EncoderConfig``; alternatively pass its fields as keyword arguments
            (``revision``, ``adapter``, ``device``, ``dtype``, ``batch_size``, ``prompts``, ``query_prompt`` …).

    Example:
        >>> enc = E5VEncoder("royokong/e5-v", revision="main")            # doctest: +SKIP
        >>> enc.embed_texts(["a dog on a beach"]) @ enc.embed_images(["dog.jpg"]).T  # doctest: +SKIP
    """

    def __init__(
        self, model: str | os.PathLike = DEFAULT_MODEL, *, config: EncoderConfig | None = None, **options: Any
    ):
        if config is None:
            if "dtype" in options and options["dtype"] is not None and not isinstance(options["dtype"], str):
                options["dtype"] = str(options["dtype"]).removeprefix("torch.")
            if options.get("dtype") is None:
                options.pop("dtype", None)
            config = EncoderConfig(model=os.fspath(model), **options)
        elif options:
            raise TypeError("pass either config= or keyword options, not both")
        self.config = config
        self.prompts: PromptSet = get_prompts(config.prompts, query=config.query_prompt)
        self.device, self.torch_dtype = _resolve_device_and_dtype(config.device, config.dtype)
        self._load()

    @classmethod
    def from_config(cls, config: EncoderConfig) -> E5VEncoder:
        """Build an encoder from a validated ``EncoderConfig``."""
        return cls(config=config)

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        import torch
        from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

        cfg = self.config
        common = {"revision": cfg.revision}
        try:
            model_config = LlavaNextConfig.from_pretrained(cfg.model, **common)
            processor = LlavaNextProcessor.from_pretrained(cfg.model, **common, **_image_processor_options())
        except (OSError, ValueError) as exc:
            raise E5VModelError(
                f"cannot load an E5-V / LLaVA-NeXT checkpoint from {cfg.model!r}"
                f"{f' at revision {cfg.revision!r}' if cfg.revision else ''}: {str(exc).rstrip('.')}. Pass a hub id or a local folder "
                "holding config.json, the processor files and model.safetensors."
            ) from exc
        self._fix_processor(processor, model_config)
        try:
            full = LlavaNextForConditionalGeneration.from_pretrained(
                cfg.model,
                **common,
                dtype=self.torch_dtype,
                use_safetensors=True,
                attn_implementation=cfg.attn_implementation,
                **self._weight_load_options(),
            )
        except (OSError, ValueError) as exc:
            raise E5VModelError(f"cannot load model weights from {cfg.model!r}: {exc}") from exc
        # Keep only the base model: the vocabulary head (~1 GB in fp16 for E5-V) is never used for embeddings.
        base = full.model
        del full
        self._fix_image_token(base, model_config)
        if cfg.adapter:
            self._apply_adapter(base, cfg.adapter)
        self.model = base.to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = model_config.image_token_id
        self.max_positions = getattr(model_config.text_config, "max_position_embeddings", None)
        self._torch = torch
        self._last_token_only = self._install_last_token_shortcut()

    def _weight_load_options(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` options for the weights; a hook for subclasses (fine-tuning adds 4-bit QLoRA)."""
        return {}

    @staticmethod
    def _fix_processor(processor, model_config) -> None:
        """Published-checkpoint trap 2 (and 4): fill processor settings old transformers did not save; pad left."""
        vision = model_config.vision_config
        expected = {
            "patch_size": vision.patch_size,
            "vision_feature_select_strategy": model_config.vision_feature_select_strategy,
            # CLIP towers emit a CLS token that the "default" strategy drops; the processor must count it.
            "num_additional_image_tokens": 1 if "clip" in getattr(vision, "model_type", "") else 0,
        }
        fixed = []
        for name, value in expected.items():
            current = getattr(processor, name, None)
            if current != value:
                fixed.append(f"{name}={current!r}→{value!r}")
                setattr(processor, name, value)
        if fixed:
            warnings.warn(
                "processor config disagrees with the model config (known trap of the published E5-V checkpoint, "
                f"saved by an old transformers); using the model's values: {', '.join(fixed)}",
                stacklevel=4,
            )
        tokenizer = processor.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # _forward pads and pools by itself; a tokenizer used elsewhere for last-token pooling must pad on the left.
        tokenizer.padding_side = "left"

    @staticmethod
    def _fix_image_token(base, model_config) -> None:
        """Published-checkpoint trap 1: ``<image>`` id == vocab_size, outside the embedding table.

        Grows the input embedding table by the missing rows. Their values never matter: every ``<image>`` position
        is overwritten with image features before the language model runs.
        """
        rows = base.get_input_embeddings().num_embeddings
        image_id = model_config.image_token_id
        if image_id >= rows:
            warnings.warn(
                f"<image> token id {image_id} is outside the embedding table ({rows} rows), as in the published "
                f"E5-V checkpoint; growing the table to {image_id + 1} rows (the extra rows are never read)",
                stacklevel=4,
            )
            base.language_model.resize_token_embeddings(image_id + 1, mean_resizing=False)

    @staticmethod
    def _apply_adapter(base, adapter: str) -> None:
        """Apply a PEFT LoRA adapter trained on the language model, merged into its weights."""
        try:
            from peft import PeftModel
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise E5VModelError("adapters need peft: pip install 'e5v-qdrant[train]'") from exc
        try:
            wrapped = PeftModel.from_pretrained(base.language_model, adapter, is_trainable=False)
        except (OSError, ValueError, KeyError) as exc:
            raise E5VModelError(f"cannot load adapter from {adapter!r}: {exc}") from exc
        base.language_model = wrapped.merge_and_unload()

    # ------------------------------------------------------------------ facts
    @property
    def dim(self) -> int:
        """Embedding size (the language model's hidden size)."""
        return int(self.model.config.text_config.hidden_size)

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """What determines the vectors plus a short ``id`` hash of it.

        The ``id`` covers the weights (hub id + revision, or a digest of a local folder's files — so a relative and an
        absolute path to one folder agree), the adapter's files (``adapter_*`` only: checkpoints or a merged copy
        saved beside them do not count), the prompts and the dimension. Dtype and device are left out: they change
        vectors only within numerical noise. Stores stamp collections with it; equal ids mean interchangeable vectors.
        ``model`` and ``adapter`` are also returned as given, for people reading the stamp.
        """
        local = os.path.isdir(self.config.model)
        identity = {
            "model": None if local else self.config.model,
            "model_digest": _folder_digest(self.config.model) if local else None,
            "revision": self.config.revision,
            "adapter_digest": _folder_digest(self.config.adapter, prefix="adapter_") if self.config.adapter else None,
            "prompts": self.prompts.digest(),
            "dim": self.dim,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return {**identity, "model": self.config.model, "adapter": self.config.adapter, "id": digest}

    def describe(self) -> dict[str, Any]:
        """Everything that changes the numbers, for reports and ``e5v-qdrant info``."""
        import torch
        import transformers

        return {
            "model": self.config.model,
            "revision": self.config.revision,
            "adapter": self.config.adapter,
            "dim": self.dim,
            "dtype": str(self.torch_dtype).removeprefix("torch."),
            "device": str(self.device),
            "prompts": asdict(self.prompts),
            "prompt_preset": self.config.prompts,
            "pooling": "final-layer hidden state at each row's last real token, L2-normalised (rows right-padded; "
            "attention is causal, so padding is never seen and no mask is used)",
            "image_processor": type(self.processor.image_processor).__name__,
            "fingerprint": self.fingerprint["id"],
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    def count_image_tokens(self, image: ImageInput) -> int:
        """How many ``<image>`` placeholder tokens (anyres tiles + newlines) this image becomes."""
        prepared = self._prepare_image(image, self.prompts.for_image(), "image")
        return sum(1 for t in prepared.input_ids if t == self.image_token_id)

    # ------------------------------------------------------------------ public embedding API
    def embed_texts(self, texts: Sequence[str], *, show_progress: bool = False, normalize: bool = True) -> np.ndarray:
        """Embed documents / passages with the text prompt. Empty strings are embedded (the prompt alone).

        ``normalize=False`` on any ``embed_*`` method returns the raw pooled hidden states (not L2-normalised).
        """
        texts = _check_texts(texts, "texts")
        return self._embed(
            len(texts),
            lambda i: self._prepare_text(self.prompts.for_text, texts[i]),
            show_progress,
            normalize=normalize,
        )

    def embed_queries(self, texts: Sequence[str], *, show_progress: bool = False, normalize: bool = True) -> np.ndarray:
        """Embed search queries: the ``query_prompt`` if configured, else exactly as ``embed_texts``."""
        texts = _check_texts(texts, "texts")
        return self._embed(
            len(texts),
            lambda i: self._prepare_text(self.prompts.for_query, texts[i]),
            show_progress,
            normalize=normalize,
        )

    def embed_images(
        self, images: Sequence[ImageInput], *, show_progress: bool = False, normalize: bool = True
    ) -> np.ndarray:
        """Embed images (paths, bytes, BytesIO or PIL images).

        Raises:
            E5VImageError: an image is unreadable; the message names it and its position.
        """
        images = _as_list(images, "images")
        prompt = self.prompts.for_image()
        return self._embed(
            len(images),
            lambda i: self._prepare_image(images[i], prompt, f"image {i}"),
            show_progress,
            window=self.config.batch_size,
            normalize=normalize,
        )

    def embed_composed(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str],
        *,
        show_progress: bool = False,
        normalize: bool = True,
    ) -> np.ndarray:
        """Embed composed queries: each image with its modification text (CIRR-style prompt by default)."""
        images = _as_list(images, "images")
        texts = _check_texts(texts, "texts")
        if len(images) != len(texts):
            raise E5VInputError(
                "embed_composed", f"got {len(images)} images but {len(texts)} texts; pass one text per image"
            )
        return self._embed(
            len(images),
            lambda i: self._prepare_image(images[i], self.prompts.for_composed(texts[i]), f"image {i}"),
            show_progress,
            window=self.config.batch_size,
            normalize=normalize,
        )

    def embed_composed_pairs(
        self, images: Sequence[ImageInput], captions: Sequence[tuple[str, str]], *, show_progress: bool = False
    ) -> np.ndarray:
        """Embed composed queries that each carry two modification captions, as the authors do for FashionIQ.

        Each caption is stripped of ``.``, ``?``, ``,`` and spaces at both ends; the query is embedded with the
        composed prompt for ``"a, b"`` and for ``"b, a"``, and the two un-normalised vectors are summed, then
        L2-normalised.

        Example:
            >>> enc = E5VEncoder(prompts="fashioniq-dress")                              # doctest: +SKIP
            >>> enc.embed_composed_pairs(["ref.jpg"], [("is red", "has shorter sleeves.")])  # doctest: +SKIP
        """
        images = _as_list(images, "images")
        pairs = [
            tuple(_check_texts(list(pair), f"captions[{i}]")) for i, pair in enumerate(_as_list(captions, "captions"))
        ]
        if len(images) != len(pairs) or any(len(pair) != 2 for pair in pairs):
            raise E5VInputError(
                "embed_composed_pairs", f"got {len(images)} images and {len(pairs)} captions; pass one (a, b) per image"
            )
        clean = [[c.strip(".?, ") for c in pair] for pair in pairs]
        texts = [f"{a}, {b}" for a, b in clean] + [f"{b}, {a}" for a, b in clean]
        raw = self.embed_composed(images + images, texts, show_progress=show_progress, normalize=False)
        summed = raw[: len(images)] + raw[len(images) :]
        return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)

    # ------------------------------------------------------------------ preparation
    def _prepare_text(self, template: Callable[[str], str], text: str) -> _Prepared:
        limit = self.config.max_text_tokens
        if limit is not None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > limit:
                text = self.tokenizer.decode(ids[:limit])
        ids = self.tokenizer(template(text))["input_ids"]
        if self.max_positions and len(ids) > self.max_positions:
            raise E5VInputError(
                f"text of {len(ids)} tokens",
                f"longer than the model's {self.max_positions} positions; chunk it or set max_text_tokens",
            )
        return _Prepared(ids)

    def _prepare_image(self, image: ImageInput, prompt: str, position: str) -> _Prepared:
        label = f"{position} ({describe_source(image)})"
        pil = load_image(image, max_pixels=self.config.max_image_pixels, name=label)
        batch = self.processor(text=[prompt], images=[pil], return_tensors="pt")
        return _Prepared(batch["input_ids"][0].tolist(), batch["pixel_values"][0], batch["image_sizes"][0])

    # ------------------------------------------------------------------ batching and the forward pass
    def _batches(self, prepared: list[_Prepared]) -> list[list[int]]:
        """Group indices into batches that waste as little compute as possible on padding.

        Longest first; a batch holds at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens (default: see
        ``_default_batch_tokens``). Rows longer than ``_PAD_FREE_ABOVE`` tokens (every image: 1.2k–2.9k tokens) share a
        batch only with rows of exactly their length: a row that long already fills the matrix units, so batching it
        gains nothing, while padding it to a longer neighbour costs whole extra tokens of compute.
        """
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i].input_ids))
        budget = self.config.max_batch_tokens or self._default_batch_tokens()
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            length = len(prepared[i].input_ids)
            if current:
                longest = len(prepared[current[0]].input_ids)
                fits = (
                    len(current) < self.config.batch_size
                    and longest * (len(current) + 1) <= budget
                    and (length == longest or longest <= _PAD_FREE_ABOVE)
                )
                if not fits:
                    batches.append(current)
                    current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _default_batch_tokens(self) -> int:
        """Token budget when ``max_batch_tokens`` is unset: 1024 on CPU, ``batch_size × 512`` on accelerators."""
        if self.device.type == "cpu":
            return _CPU_BATCH_TOKENS
        return self.config.batch_size * _TOKENS_PER_ROW

    def _preprocess_workers(self) -> int:
        """Threads for preprocessing: ``preprocess_workers``, but on a CPU device only cores torch leaves idle.

        On CPU the forward pass already runs ``torch.get_num_threads()`` threads (all cores by default); preprocessing
        threads would only preempt them (measured on 2 cores: no faster than the calling thread, more memory).
        """
        workers = self.config.preprocess_workers
        if self.device.type == "cpu":
            workers = min(workers, max(0, (os.cpu_count() or 1) - self._torch.get_num_threads()))
        return workers

    def _embed(
        self,
        n: int,
        prepare: Callable[[int], _Prepared],
        show_progress: bool,
        *,
        window: int | None = None,
        normalize: bool = True,
    ) -> np.ndarray:
        """Prepare items in windows (in worker threads, one window ahead of the model) and embed them batch by batch."""
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        window = max(window or self.config.batch_size * _WINDOW_BATCHES, 1)
        windows = [range(start, min(start + window, n)) for start in range(0, n, window)]
        progress = _progress(n, show_progress)
        workers = self._preprocess_workers()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="e5v-prep") if workers > 0 and n > 1 else None
        # On CPU, activation buffers freed by one forward pass are reused by the next instead of being unmapped
        # and page-faulted back in (see _freed_memory_kept).
        keep_freed = self.config.reuse_cpu_memory and self.device.type == "cpu"
        try:
            with _freed_memory_kept(keep_freed):
                pending = [pool.submit(prepare, i) for i in windows[0]] if pool else None
                for k, idx in enumerate(windows):
                    if pool:
                        prepared = [future.result() for future in pending]
                        # Start preparing the next window now: decoding and tiling overlap this window's forwards.
                        pending = [pool.submit(prepare, i) for i in windows[k + 1]] if k + 1 < len(windows) else []
                    else:
                        prepared = [prepare(i) for i in idx]
                    for batch in self._batches(prepared):
                        vectors = self._forward([prepared[i] for i in batch])
                        if normalize:  # on the CPU copy: the same float32 op the model device would run
                            vectors = self._torch.nn.functional.normalize(
                                self._torch.from_numpy(vectors), dim=-1
                            ).numpy()
                        out[[idx.start + i for i in batch]] = vectors
                        if progress is not None:
                            progress.update(len(batch))
                    del prepared
        finally:
            if pool:
                pool.shutdown(wait=False, cancel_futures=True)
            if progress is not None:
                progress.close()
        return out

    # ------------------------------------------------------------------ last layer for the last token only
    def _install_last_token_shortcut(self) -> bool:
        """Arrange for the final decoder layer to run for the pooled (last) position only, when inside ``_forward``.

        Only the last position's output is read, so in the final layer every other position needs just its keys and
        values; its queries, attention output, ``o_proj`` and MLP are dead work (about one layer in
        ``num_hidden_layers``: ~3% for E5-V's 32 layers). A pre-hook on the final layer hands its inputs to
        ``_last_layer_last_token``; outside ``_forward`` (training, other callers) the model is untouched. Only for
        Llama decoder layers, whose computation the shortcut reproduces; other architectures run in full.
        """
        lm = getattr(self.model, "language_model", None)
        layers = getattr(lm, "layers", None)
        if (
            type(lm).__name__ != "LlamaModel"
            or not layers
            or len(layers) != lm.config.num_hidden_layers
            or type(layers[-1]).__name__ != "LlamaDecoderLayer"
        ):
            return False
        self._shortcut_state = threading.local()
        state = self._shortcut_state

        def stop_before_last_layer(module, args, kwargs):
            if getattr(state, "active", False):
                raise _LastLayerInputs(args[0] if args else kwargs["hidden_states"], kwargs)

        layers[-1].register_forward_pre_hook(stop_before_last_layer, with_kwargs=True)
        return True

    def _last_layer_last_token(self, hidden, kwargs: dict[str, Any], last):
        """The final Llama layer + final norm for each row's pooled position ``last[row]`` only (keys/values for all)."""
        torch = self._torch
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        lm = self.model.language_model
        layer = lm.layers[-1]
        batch, length, _ = hidden.shape
        rows = torch.arange(batch, device=hidden.device)
        if kwargs.get("attention_mask") is not None:  # not produced by _forward; run the layer in full to be safe
            return lm.norm(layer(hidden, **kwargs))[rows, last]
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x[rows, last][:, None]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        cos_q = cos.expand(batch, -1, -1)[rows, last][:, None]
        sin_q = sin.expand(batch, -1, -1)[rows, last][:, None]
        q, _ = apply_rotary_pos_emb(q, q, cos_q, sin_q)
        k, _ = apply_rotary_pos_emb(k, k, cos, sin)
        groups = attn.num_key_value_groups
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask = None
        if bool((last != length - 1).any()):  # shorter rows: their query must not see the right padding
            mask = (torch.arange(length, device=hidden.device)[None, :] <= last[:, None])[:, None, None, :]
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
        h = hidden[rows, last][:, None] + attn.o_proj(out.transpose(1, 2).reshape(batch, 1, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        return lm.norm(h)[:, -1]

    def _forward(self, items: list[_Prepared]) -> np.ndarray:
        """Embed one batch: pooled final hidden states (float32, not yet normalised; ``_embed`` normalises).

        Rows are padded on the right and pooled at their own last token, with no attention mask.

        Attention is causal, so a real token never sees the padding after it: every row computes exactly what it
        would alone (positions 0..n-1), SDPA runs its causal kernel (no materialised L × L mask, upper triangle
        skipped), and the padding's own outputs are simply never read.
        """
        torch = self._torch
        lengths = [len(it.input_ids) for it in items]
        length = max(lengths)
        ids = torch.full((len(items), length), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, it in enumerate(items):
            ids[row, : lengths[row]] = torch.tensor(it.input_ids, dtype=torch.long)
        tensors: dict[str, Any] = {
            "input_ids": ids,
            "position_ids": torch.arange(length, dtype=torch.long).expand(len(items), -1).contiguous(),
            "last": torch.tensor(lengths, dtype=torch.long) - 1,
        }
        with_images = [it for it in items if it.pixel_values is not None]
        if with_images:
            tensors["pixel_values"] = torch.cat([it.pixel_values for it in with_images]).to(dtype=self.torch_dtype)
            tensors["image_sizes"] = torch.stack([it.image_size for it in with_images])
        non_blocking = self.device.type == "cuda"
        if non_blocking:  # page-locked host memory makes the copies asynchronous
            tensors = {name: value.pin_memory() for name, value in tensors.items()}
        kwargs = {name: value.to(self.device, non_blocking=non_blocking) for name, value in tensors.items()}
        last = kwargs.pop("last")
        rows = torch.arange(len(items), device=self.device)
        with torch.inference_mode():
            if self._last_token_only:
                self._shortcut_state.active = True
                try:
                    hidden = self.model(**kwargs, use_cache=False).last_hidden_state[rows, last]
                except _LastLayerInputs as stop:
                    self._shortcut_state.active = False
                    hidden = self._last_layer_last_token(stop.hidden, stop.kwargs, last)
                finally:
                    self._shortcut_state.active = False
            else:
                hidden = self.model(**kwargs, use_cache=False).last_hidden_state[rows, last]
        return hidden.float().cpu().numpy()


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


_HEAP_LOCK = threading.Lock()
_heap_users = 0


@functools.cache
def _glibc():
    """The process's C library if it is glibc (the only one with these ``mallopt`` parameters), else ``None``."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError, TypeError):  # not Linux/glibc (musl, macOS, Windows)
        return None
    return libc


@contextlib.contextmanager
def _freed_memory_kept(enabled: bool = True):
    """Keep memory freed inside the block in glibc's heap, so the next forward pass reuses it without page faults.

    glibc hands a freed block back to the kernel when it was mmapped (blocks above the mmap threshold) or when the
    free space at the top of the heap passes the trim threshold; the next forward pass's activations of the same size
    then fault every page in again, freshly zeroed. That cost is large on virtual machines: on the benchmark replica
    (2 vCPUs, KVM) 48 texts made ~195k minor faults per run with glibc's defaults and ~10k inside this block, and ran
    ~10% faster in a process that only embeds (less where earlier work left free chunks in the heap to reuse).
    Inside the block both thresholds are raised; when the last concurrent user leaves, they are set to the values
    glibc's dynamic scheme settles at in a torch process (32 MiB / 64 MiB) and ``malloc_trim`` returns what is free,
    so the process holds no more memory between calls than before. No-op off glibc or when ``enabled`` is false.
    Setting a threshold ends glibc's dynamic adjustment for the process (a documented ``mallopt`` effect).
    """
    global _heap_users
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _HEAP_LOCK:
        _heap_users += 1
        if _heap_users == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _HEAP_LOCK:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
                libc.malloc_trim(0)


def _as_list(values: Iterable, name: str) -> list:
    if isinstance(values, (str, bytes)):
        raise E5VInputError(name, f"expected a list of inputs, got a single {type(values).__name__}; wrap it in a list")
    return list(values)


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    texts = _as_list(texts, name)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise E5VInputError(f"{name}[{i}]", f"expected str, got {type(text).__name__}")
    return texts


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="item", desc="embedding", dynamic_ncols=True)


def _folder_digest(folder: str | os.PathLike, prefix: str = "") -> str:
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
