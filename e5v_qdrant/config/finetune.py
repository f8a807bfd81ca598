"""The fine-tuning options (the paper's text-only LoRA recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import E5VConfigError
from ..options import Options, option
from .encoder import DEFAULT_MODEL, DTYPE_NAMES

__all__ = ["LORA_TARGETS", "FinetuneConfig"]

#: LoRA targets of the paper: every attention and MLP projection of the Llama text model.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FinetuneConfig(Options):
    """Text-only LoRA fine-tuning of E5-V's language model. Defaults are the paper's recipe (arXiv 2407.12580 §4).

    Feeds both ``e5v-qdrant finetune`` and ``e5v_qdrant.finetune.finetune(config)``.
    """

    train: str | None = option(
        None,
        help="training file: JSONL with anchor, positive and optional negative keys, or CSV with header sent0,sent1[,hard_neg]",
        required=True,
        metavar="FILE",
    )
    output: str | None = option(
        None,
        help="output folder: PEFT adapter, manifest.json, metrics.json, checkpoints/ (and merged/)",
        required=True,
        metavar="DIR",
    )
    model: str = option(DEFAULT_MODEL, help="hub id or local folder of the E5-V / LLaVA-NeXT checkpoint to adapt")
    revision: str | None = option(None, help="hub revision of --model to pin (recorded in the manifest)")
    eval: str | None = option(
        None, help="held-out triplet file (same formats); recall@1 of anchor→positive is measured before and after"
    )
    prompts: str = option("e5v", help="prompt preset to train with; use the same preset at inference")
    epochs: int = option(2, help="passes over the training file (ignored when --max-steps is given)")
    max_steps: int | None = option(
        None, help="stop after this many optimizer steps (overrides --epochs; the paper quotes 1000)"
    )
    batch_size: int = option(
        768,
        help="global contrastive batch (rows per step, summed over all GPUs); every row sees all others as negatives",
    )
    gradcache_chunk_size: int | None = option(
        24,
        help="GradCache: inputs per forward pass, so a large batch fits in small memory (0 = whole local batch in one pass)",
    )
    lr: float = option(4e-4, help="peak AdamW learning rate")
    warmup_steps: int = option(100, help="linear warmup steps, then linear decay to 0")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    max_grad_norm: float | None = option(
        1.0, help="clip the LoRA gradient norm (transformers Trainer default; 0 = off)"
    )
    temperature: float = option(0.05, help="InfoNCE temperature τ (logits = cosine / τ)")
    lora_r: int = option(64, help="LoRA rank")
    lora_alpha: int = option(16, help="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, help="dropout on the LoRA input")
    lora_targets: list[str] = option(
        help="language-model modules that get LoRA (the paper: all attention and MLP projections)",
        default_factory=lambda: list(LORA_TARGETS),
    )
    max_length: int = option(
        32, help="truncate each sentence to this many tokens before the prompt is added (paper: 32)"
    )
    seed: int = option(42, help="seed for LoRA init, data order and dropout")
    dtype: str = option(
        "auto", help="base weights dtype; auto = bfloat16 (or float16) on CUDA, float32 on CPU", choices=DTYPE_NAMES
    )
    device: str | None = option(
        None, help="torch device; default cuda (cuda:LOCAL_RANK under torchrun) if available, else cpu"
    )
    load_in_4bit: bool = option(
        False, help="QLoRA: 4-bit NF4 base weights (needs CUDA and bitsandbytes), as the paper trained"
    )
    grad_checkpointing: bool = option(
        False, help="recompute activations in the backward pass (less memory, slower steps)"
    )
    checkpoint_every: int = option(
        200, help="save adapter + optimizer + scheduler + RNG state every N steps (0 = only at the end)"
    )
    keep_checkpoints: int = option(
        2, help="how many most recent checkpoints to keep under OUTPUT/checkpoints (0 = all)"
    )
    resume: str | None = option(
        None, help="continue from a checkpoint folder, or 'latest' for the newest under OUTPUT/checkpoints"
    )
    merge: bool = option(
        False, help="also write a full merged LLaVA-NeXT checkpoint (vision tower included) to OUTPUT/merged"
    )
    eval_batch_size: int = option(32, help="texts per forward pass when measuring recall@1")
    show_progress: bool = option(True, help="tqdm progress bar", cli=False)

    def validate(self) -> None:
        if not self.train:
            raise E5VConfigError("a training file is required (--train FILE, JSONL or CSV)")
        if not self.output:
            raise E5VConfigError("an output folder is required (--output DIR)")
        positive = {
            "epochs": self.epochs,
            "lr": self.lr,
            "temperature": self.temperature,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "max_length": self.max_length,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise E5VConfigError(f"{name} must be > 0, got {value}")
        if self.batch_size < 2:
            raise E5VConfigError(
                f"batch_size must be >= 2 (a contrastive batch needs negatives), got {self.batch_size}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise E5VConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "weight_decay"):
            if getattr(self, name) < 0:
                raise E5VConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gradcache_chunk_size is not None and self.gradcache_chunk_size < 0:
            raise E5VConfigError(f"gradcache_chunk_size must be >= 1 (or 0 = off), got {self.gradcache_chunk_size}")
        if not 0 <= self.lora_dropout < 1:
            raise E5VConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise E5VConfigError("lora_targets must name at least one module (e.g. q_proj v_proj)")
        self.lora_targets = list(self.lora_targets)
        from ..prompts import get_prompts

        get_prompts(self.prompts)
