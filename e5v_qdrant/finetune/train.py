"""The fine-tuning loop: text-only LoRA on E5-V's language model with InfoNCE (+ GradCache), checkpoints and resume.

Run on one device with ``finetune(config)`` / ``e5v-qdrant finetune``; on several GPUs launch the same command with
``torchrun --nproc-per-node N -m e5v_qdrant.cli finetune ...`` (or ``accelerate launch``): every rank embeds its
share of each global batch and the loss sees every rank's embeddings (see ``loss.py``).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EncoderConfig, FinetuneConfig
from ..errors import E5VConfigError, E5VModelError
from ..triplets import TripletData, load_triplets
from .export import merge_adapter, write_json

__all__ = ["finetune", "FinetuneResult", "recall_at_1"]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "e5v-qdrant-finetune/1"
_STATE_FILE = "training_state.pt"
# Options that must not change between a checkpoint and its resumption (they change what is being trained).
_RESUME_KEYS = (
    "model",
    "revision",
    "prompts",
    "batch_size",
    "lr",
    "warmup_steps",
    "weight_decay",
    "temperature",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "max_length",
    "seed",
    "epochs",
    "max_steps",
)


@dataclass
class FinetuneResult:
    """What a run produced. ``adapter`` is the folder to pass as ``E5VEncoder(adapter=...)``."""

    output: Path
    adapter: Path
    manifest: Path
    metrics: dict[str, Any]
    steps: int
    merged: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------- setup
def _init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group torchrun / accelerate describe in the environment."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # leave the group before interpreter teardown: a gloo group left to process exit can abort a finished rank
        # ("terminate called without an active exception", exit -6), failing a run whose work is done
        atexit.register(_leave_distributed)
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        return dist.get_rank(), dist.get_world_size(), local_rank
    return 0, 1, 0


def _leave_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _load_encoder(config: FinetuneConfig, local_rank: int):
    """The base model through ``E5VEncoder``'s loading path (quirk fixes, revision, processor, left padding)."""
    import torch

    from ..encoder import E5VEncoder

    device = config.device
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    if config.load_in_4bit:
        problems = []
        if not torch.cuda.is_available():
            problems.append("no CUDA device is available")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            problems.append("bitsandbytes is not installed (pip install 'e5v-qdrant[gpu]')")
        if problems:
            raise E5VConfigError(
                "--load-in-4bit (QLoRA) needs CUDA and bitsandbytes: "
                + "; ".join(problems)
                + ". Train without --load-in-4bit (LoRA on bfloat16/float32 weights) instead."
            )
    enc_config = EncoderConfig(
        model=config.model,
        revision=config.revision,
        device=device,
        dtype=config.dtype,
        prompts=config.prompts,
        max_text_tokens=config.max_length,
    )

    weight_options = None
    if config.load_in_4bit:
        from transformers import BitsAndBytesConfig

        from ..checkpoint import resolve_device_and_dtype

        dev, compute_dtype = resolve_device_and_dtype(device, config.dtype)
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
        )
        weight_options = {"quantization_config": quant, "device_map": {"": dev}}
    return E5VEncoder(config=enc_config, weight_options=weight_options)


def _attach_lora(encoder, config: FinetuneConfig):
    """Wrap the language model (only) with LoRA; returns the PeftModel whose ``save_pretrained`` is the adapter."""
    from peft import LoraConfig, get_peft_model

    base = encoder.model
    lm = base.language_model
    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=config.grad_checkpointing)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        bias="none",
    )
    try:
        peft_model = get_peft_model(lm, lora)  # injects LoRA layers into base.language_model in place
    except ValueError as exc:
        raise E5VConfigError(f"cannot put LoRA on modules {config.lora_targets}: {exc}") from exc
    if config.grad_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    return peft_model


# ---------------------------------------------------------------------------------------------------------- embedding
def embed_token_ids(model, id_lists: Sequence[Sequence[int]], pad_id: int, device) -> Any:
    """Embed prompt token ids with autograd: the same vectors as ``E5VEncoder._forward``, computed the plain way.

    Left padding, a mask over real tokens, position ids from the mask, the base model's ``last_hidden_state`` at the
    last position, L2-normalised in float32. (The encoder pads on the right without a mask and runs the final layer
    for the last token only; for a causal model both give the same vector, and training needs the full graph.)
    """
    import torch

    length = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), length), dtype=torch.long)
    for row, seq in enumerate(id_lists):
        ids[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, length - len(seq) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device), use_cache=False
    ).last_hidden_state[:, -1, :]
    return torch.nn.functional.normalize(hidden.float(), dim=-1)


class _Tokens:
    """Prompt token ids of texts, through the encoder's own text preparation (truncation, then the prompt)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.encoder.text_input_ids(text)
            if len(self._cache) < 200_000:
                self._cache[text] = ids
        return ids


def recall_at_1(embed: Callable[[list[str]], Any], data: TripletData, batch_size: int) -> dict[str, Any]:
    """Recall@1 (a fraction) of each anchor retrieving its positive among every distinct positive and negative text.

    Scored by ``evaluate.metrics.retrieval_ranks`` — the same counting as ``e5v-qdrant eval triplets`` (a repeated text is
    one pool entry; ties count against the anchor), which reports the same number in percent.
    """
    import torch

    from ..evaluate.metrics import retrieval_ranks

    def run(texts: list[str]):
        return torch.cat([embed(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]).cpu().numpy()

    pool = list(
        dict.fromkeys([r.positive for r in data.rows] + [r.negative for r in data.rows if r.negative is not None])
    )
    index = {text: i for i, text in enumerate(pool)}
    ranks = retrieval_ranks(run([r.anchor for r in data.rows]), run(pool), [[index[r.positive]] for r in data.rows])
    return {"recall@1": float((ranks < 1).mean()), "queries": len(data.rows), "corpus": len(pool)}


# ---------------------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_dirs(output: Path) -> list[Path]:
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _rng_state() -> dict[str, Any]:
    import torch

    state = {
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    version, keys, gauss = state["python"][0], state["python"][1], state["python"][2]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(
    output: Path, step: int, peft_model, optimizer, scheduler, extra: dict[str, Any], rank: int, keep: int
) -> Path:
    """Write ``checkpoints/step-N`` atomically: adapter, optimizer, scheduler, RNG states (per rank), step, history."""
    import torch

    root = output / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        peft_model.save_pretrained(tmp)
        torch.save(
            {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **extra},
            tmp / _STATE_FILE,
        )
    _barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in _checkpoint_dirs(output)[:-keep] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _find_resume(config: FinetuneConfig, output: Path) -> Path | None:
    if not config.resume:
        return None
    if config.resume == "latest":
        found = _checkpoint_dirs(output)
        if not found:
            logger.warning("--resume latest: no checkpoint under %s; starting from step 0", output / "checkpoints")
            return None
        return found[-1]
    path = Path(config.resume)
    if not (path / _STATE_FILE).is_file():
        raise E5VConfigError(
            f"--resume {config.resume!r} is not a checkpoint folder (no {_STATE_FILE}); pass "
            f"{output / 'checkpoints'}/step-N or 'latest'"
        )
    return path


# ---------------------------------------------------------------------------------------------------------- the run
def finetune(config: FinetuneConfig, *, on_step: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune E5-V's language model with LoRA on text triplets.

    Args:
        config: the run's options (the same object the CLI builds).
        on_step: called after every optimizer step (and its checkpoint) with ``(step, loss)``; may raise to stop
            the run (the last checkpoint stays resumable).

    Returns:
        Paths of the adapter (``config.output``), manifest and merged checkpoint, plus the metrics.

    Raises:
        FinetuneDataError: the training or evaluation file has bad rows (all listed with line numbers).
        E5VConfigError: inconsistent options (batch larger than the data, 4-bit without CUDA, mismatched resume…).
        E5VModelError: the model cannot be loaded.

    Example:
        >>> from e5v_qdrant.config import FinetuneConfig
        >>> from e5v_qdrant.finetune import finetune
        >>> finetune(FinetuneConfig(train="nli.csv", output="e5v-nli", max_steps=1000))  # doctest: +SKIP
    """
    import peft
    import torch
    import transformers
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    from .. import __version__
    from .loss import all_reduce_gradients, contrastive_backward

    started = time.time()
    rank, world, local_rank = _init_distributed()
    output = Path(config.output)
    train = load_triplets(config.train, min_rows=2)
    evaluation = load_triplets(config.eval) if config.eval else None
    if config.batch_size % world:
        raise E5VConfigError(f"batch_size {config.batch_size} must be divisible by the number of processes ({world})")
    if len(train) < config.batch_size:
        raise E5VConfigError(
            f"{config.train} has {len(train)} rows, fewer than one batch of {config.batch_size}; lower --batch-size"
        )
    local_batch = config.batch_size // world
    steps_per_epoch = len(train) // config.batch_size  # the last incomplete batch of an epoch is dropped
    total_steps = config.max_steps or config.epochs * steps_per_epoch

    _seed_everything(config.seed)
    encoder = _load_encoder(config, local_rank)
    base, device = encoder.model, encoder.device
    peft_model = _attach_lora(encoder, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    if not params:
        raise E5VModelError(
            f"no trainable LoRA parameters: modules {config.lora_targets} not found in the language model"
        )
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    tokens = _Tokens(encoder)
    pad_id = encoder.tokenizer.pad_token_id
    config_key = {k: getattr(config, k) for k in _RESUME_KEYS}

    def embed_ids(id_lists):
        return embed_token_ids(base, id_lists, pad_id, device)

    def embed_texts_eval(texts: list[str]):
        with torch.no_grad():
            return embed_ids([tokens(t) for t in texts])

    def evaluate() -> dict[str, Any] | None:
        if evaluation is None:
            return None
        base.language_model.eval()
        try:
            return recall_at_1(embed_texts_eval, evaluation, config.eval_batch_size)
        finally:
            base.language_model.train()

    start_step, history, eval_before = 0, [], None
    resume_from = _find_resume(config, output)
    if resume_from is not None:
        state = torch.load(resume_from / _STATE_FILE, map_location="cpu", weights_only=True)
        if state["data_sha256"] != train.sha256:
            raise E5VConfigError(
                f"--resume {resume_from}: the checkpoint was trained on different data than {config.train}"
            )
        changed = {k: (state["config"].get(k), v) for k, v in config_key.items() if state["config"].get(k) != v}
        if changed:
            raise E5VConfigError(f"--resume {resume_from}: options differ from the checkpoint's (old, new): {changed}")
        loaded = set_peft_model_state_dict(
            peft_model, load_file(resume_from / "adapter_model.safetensors", device=str(device))
        )
        if getattr(loaded, "unexpected_keys", None):
            raise E5VConfigError(
                f"--resume {resume_from}: adapter weights do not fit this model: {loaded.unexpected_keys[:5]}"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, history, eval_before = state["step"], list(state["history"]), state.get("eval_before")
        rng_file = resume_from / f"rng-rank{rank}.pt"
        if not rng_file.is_file():
            raise E5VConfigError(
                f"--resume {resume_from}: no RNG state for rank {rank} (was it saved with fewer processes?)"
            )
        _set_rng_state(torch.load(rng_file, weights_only=True))
        logger.info("resumed from %s at step %d", resume_from, start_step)
    elif rank == 0:
        eval_before = evaluate()
    _barrier()

    output.mkdir(parents=True, exist_ok=True)
    rows = train.rows
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        desc="finetune",
        unit="step",
        dynamic_ncols=True,
        disable=not config.show_progress or rank != 0,
    )
    chunk = config.gradcache_chunk_size or None
    checkpoints: list[Path] = []
    order_epoch, order = -1, None
    try:
        for step in range(start_step, total_steps):
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:  # data order depends only on (seed, epoch): a resumed run sees the same batches
                order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
                order_epoch = epoch
            batch = order[position * config.batch_size : (position + 1) * config.batch_size]
            local = [rows[i] for i in batch[rank * local_batch : (rank + 1) * local_batch]]
            items = [tokens(r.anchor) for r in local] + [tokens(r.positive) for r in local]
            if train.has_negatives:
                items += [tokens(r.negative) for r in local]
            optimizer.zero_grad(set_to_none=True)
            loss = contrastive_backward(
                embed_ids,
                items,
                batch=len(local),
                has_negatives=train.has_negatives,
                temperature=config.temperature,
                chunk_size=chunk,
                device=device,
            )
            all_reduce_gradients(params)
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            done = step + 1
            history.append({"step": done, "epoch": epoch, "loss": float(loss), "lr": lr})
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.2e}")
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total_steps:
                extra = {
                    "history": history,
                    "eval_before": eval_before,
                    "data_sha256": train.sha256,
                    "config": config_key,
                }
                checkpoints.append(
                    _save_checkpoint(
                        output, done, peft_model, optimizer, scheduler, extra, rank, config.keep_checkpoints
                    )
                )
            if on_step is not None:
                on_step(done, float(loss))
    finally:
        progress.close()

    eval_after = evaluate() if rank == 0 else None
    merged = None
    if rank == 0:
        peft_model.save_pretrained(output)
        losses = [h["loss"] for h in history]
        metrics = {
            "steps": history,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "eval_before": eval_before,
            "eval_after": eval_after,
        }
        write_json(output / "metrics.json", metrics)
        if config.merge:
            del encoder, base, peft_model, optimizer, tokens  # free the training copy before loading the full model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            merged = merge_adapter(
                config.model, output, output / "merged", revision=config.revision, dtype=config.dtype
            )
        prompts = _prompts_of(config)
        manifest = {
            "format": MANIFEST_FORMAT,
            "base_model": config.model,
            "revision": config.revision,
            "adapter": ".",
            "merged": "merged" if merged else None,
            "trained_module": "language_model (LoRA); vision tower and projector unchanged",
            # training sees texts only; images are laid out at inference by E5VEncoder's image_layout (this default)
            "image_layout": EncoderConfig().image_layout,
            "prompt": {
                "preset": config.prompts,
                "text": prompts.for_text("{text}"),
                "digest": prompts.digest(),
                "max_sentence_tokens": config.max_length,
                "padding": "left; attention mask over real tokens; position ids from the mask",
            },
            "pooling": "last token of last_hidden_state, L2-normalised",
            "data": {"train": _data_facts(train), "eval": _data_facts(evaluation) if evaluation else None},
            "metrics": {k: v for k, v in metrics.items() if k != "steps"},
            "steps": len(history),
            "world_size": world,
            "seconds": round(time.time() - started, 1),
            "config": dataclasses.asdict(config),
            "versions": {
                "e5v_qdrant": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }
        write_json(output / "manifest.json", manifest)
    else:
        metrics = {}
    _barrier()
    return FinetuneResult(
        output=output,
        adapter=output,
        manifest=output / "manifest.json",
        metrics=metrics,
        steps=total_steps,
        merged=merged,
        checkpoints=checkpoints,
    )


def _prompts_of(config: FinetuneConfig):
    from ..prompts import get_prompts

    return get_prompts(config.prompts)


def _data_facts(data: TripletData) -> dict[str, Any]:
    return {
        "path": data.path,
        "sha256": data.sha256,
        "rows": len(data),
        "format": data.format,
        "negatives": data.has_negatives,
    }


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` of a fine-tuning output folder."""
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
