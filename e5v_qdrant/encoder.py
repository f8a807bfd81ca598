"""``E5VEncoder``: E5-V embeddings for texts, images and image + edit text, framework-free.

The recipe (arXiv 2407.12580; github.com/kongds/E5-V): wrap the input in a "summarise in one word" prompt inside the
Llama-3 chat template, run LLaVA-NeXT, take the final-layer hidden state (after the last RMSNorm) at the last token
and L2-normalise it. This module computes exactly that vector, but runs only the base model (no vocabulary logits,
no per-layer hidden states, no KV cache, the final layer only at the pooled position), pads on the right and pools
each row at its own last token (causal attention makes that exact, with no attention mask), and batches inputs
sorted by length under a token budget.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import cpu_memory, identity
from .anyres import AnyresGeometry, image_token_count, paper_pixel_values, use_paper_layout
from .checkpoint import load_checkpoint, resolve_device_and_dtype
from .config import DEFAULT_MODEL, EncoderConfig
from .errors import E5VInputError
from .last_token import LastTokenShortcut
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


@dataclass
class _Prepared:
    """One input ready for the model: prompt token ids and, for images, its pixel tiles and original size."""

    input_ids: list[int]
    pixel_values: Any = None  # torch.Tensor (tiles, 3, H, W) or None
    image_size: Any = None  # torch.Tensor (2,) = (height, width) or None


class E5VEncoder:
    """Embed texts, images and composed (image + modification text) queries with E5-V.

    Vectors are ``float32``, L2-normalised, shape ``(n, dim)`` (4096 for ``royokong/e5-v``); similarity is the dot
    product. With default options they equal the authors' recipe run in the authors' environment (transformers
    4.41.2), images included (``image_layout="paper"``; ``"llava-next"`` gives today's transformers' image layout).

    Args:
        model: hub id or local folder (default ``royokong/e5-v``).
        config: a full ``EncoderConfig``; alternatively pass its fields as keyword arguments
            (``revision``, ``adapter``, ``device``, ``dtype``, ``batch_size``, ``prompts``, ``query_prompt``,
            ``image_layout`` …).
        weight_options: extra ``from_pretrained`` options for the weights (fine-tuning passes 4-bit quantization).

    Example:
        >>> enc = E5VEncoder("royokong/e5-v", revision="main")            # doctest: +SKIP
        >>> enc.embed_texts(["a dog on a beach"]) @ enc.embed_images(["dog.jpg"]).T  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        config: EncoderConfig | None = None,
        weight_options: dict[str, Any] | None = None,
        **options: Any,
    ):
        if config is None:
            if "dtype" in options and options["dtype"] is not None and not isinstance(options["dtype"], str):
                options["dtype"] = str(options["dtype"]).removeprefix("torch.")
            if options.get("dtype") is None:
                options.pop("dtype", None)
            config = EncoderConfig.from_options(options, model=os.fspath(model))
        elif options:
            raise TypeError("pass either config= or keyword options, not both")
        self.config = config
        self.prompts: PromptSet = get_prompts(config.prompts, query=config.query_prompt)
        self.device, self.torch_dtype = resolve_device_and_dtype(config.device, config.dtype)
        self._load(weight_options)

    @classmethod
    def from_config(cls, config: EncoderConfig) -> E5VEncoder:
        """Build an encoder from a validated ``EncoderConfig``."""
        return cls(config=config)

    # ------------------------------------------------------------------ loading
    def _load(self, weight_options: dict[str, Any] | None = None) -> None:
        """Load the checkpoint through ``checkpoint.load_checkpoint`` (fixes, revision, adapter) and set up pooling."""
        import torch

        loaded = load_checkpoint(self.config, device=self.device, dtype=self.torch_dtype, weight_options=weight_options)
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self.image_token_id = loaded.model_config.image_token_id
        self.max_positions = getattr(loaded.model_config.text_config, "max_position_embeddings", None)
        #: one line per published-checkpoint fix applied on load (reports record them)
        self.load_fixes: list[str] = loaded.fixes
        self._torch = torch
        #: anyres geometry of the checkpoint; with image_layout="paper" the model packs image features as 4.41.2 did
        self.geometry = AnyresGeometry.from_configs(loaded.model_config, loaded.processor.image_processor)
        if self.config.image_layout == "paper":
            use_paper_layout(self.model, self.geometry, loaded.model_config.vision_feature_select_strategy)
        self._shortcut = LastTokenShortcut.install(self.model)

    # ------------------------------------------------------------------ facts
    @property
    def dim(self) -> int:
        """Embedding size (the language model's hidden size)."""
        return int(self.model.config.text_config.hidden_size)

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """What determines the vectors plus a short ``id`` hash of it (``identity.fingerprint`` of this config).

        Equal ids mean interchangeable vectors; stores name and stamp collections by it.
        """
        return identity.fingerprint(self.config, dim=self.dim)

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
            "image_processor": "e5v_qdrant.anyres.paper_pixel_values"
            if self.config.image_layout == "paper"
            else type(self.processor.image_processor).__name__,
            "image_layout": self.config.image_layout,
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

    def text_input_ids(self, text: str, *, query: bool = False) -> list[int]:
        """Token ids of ``text`` inside its prompt, exactly as ``embed_texts`` (``query=True``: ``embed_queries``)
        feeds them to the model: truncated to ``max_text_tokens`` first, then prompted."""
        return self._prepare_text(self.prompts.for_query if query else self.prompts.for_text, text).input_ids

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
        if self.config.image_layout == "paper":
            size = (pil.height, pil.width)
            count = image_token_count(size, self.geometry, "paper")
            ids = []
            for token in self.tokenizer(prompt)["input_ids"]:
                ids.extend([token] * count if token == self.image_token_id else [token])
            pixels = self._torch.from_numpy(paper_pixel_values(pil, self.geometry))
            return _Prepared(ids, pixels, self._torch.tensor(size))
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
        # and page-faulted back in (opt-in: see cpu_memory).
        keep_freed = self.config.reuse_cpu_memory and self.device.type == "cpu"
        try:
            with cpu_memory.freed_memory_kept(keep_freed):
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
        with torch.inference_mode():
            if self._shortcut is not None:
                hidden = self._shortcut.pooled(self.model, kwargs, last)
            else:
                rows = torch.arange(len(items), device=self.device)
                hidden = self.model(**kwargs, use_cache=False).last_hidden_state[rows, last]
        return hidden.float().cpu().numpy()


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
