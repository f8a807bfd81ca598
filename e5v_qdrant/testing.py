"""Tiny LLaVA-NeXT replicas of the E5-V checkpoint for tests, examples and users' own CI.

A replica has the published checkpoint's architecture and file layout — Llama text model, CLIP vision tower at
336 px, the real anyres grid pinpoints, a byte-level BPE tokenizer carrying the Llama-3 chat special tokens and
``<image>`` — at a size that builds in about a second on a CPU. By default it also reproduces the published
checkpoint's traps (see ``ReplicaSpec``), so the encoder's workarounds are exercised through the real loading path.

Example:
    >>> from e5v_qdrant.testing import build_replica
    >>> path = build_replica("/tmp/tiny-e5v")          # doctest: +SKIP
    >>> from e5v_qdrant import E5VEncoder
    >>> E5VEncoder(path).embed_texts(["a cat"]).shape  # doctest: +SKIP
    (1, 64)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ReplicaSpec", "build_replica", "draw_image", "LLAMA3_SPECIAL_TOKENS"]

#: The Llama-3 chat special tokens E5-V's prompts use, in the order they are added after the BPE vocabulary.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
IMAGE_TOKEN = "<image>"
GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_CORPUS = """\
A cat sits on the warm windowsill and watches the birds outside.
Two dogs are running across a green field chasing a red ball.
The quick brown fox jumps over the lazy dog near the river bank.
A man in a blue jacket rides a bicycle down a busy city street.
Fresh bread, cheese and olives are laid out on a wooden table.
The support ticket says the invoice total was charged twice this month.
Summary above sentence in one word: Summary above image in one word:
Modify this image with "make it red", desribe modified image in one word:
Describe this image in one word based on its style: change the style of this dress shirt to
Children play football in the park while their parents watch from a bench.
Snow covers the mountains and a small wooden cabin stands by the frozen lake.
The recipe needs two cups of flour, one egg, sugar, butter and a pinch of salt.
user assistant system photo picture image sentence word document query passage
0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 % $ # @ ! ? ( ) [ ] { } < > / \\ | - _ = + * & ^ ~ ` ' " , . ; :
"""


@dataclass(frozen=True)
class ReplicaSpec:
    """Sizes and trap switches of a tiny replica. Defaults mirror the published ``royokong/e5-v`` quirks.

    Attributes:
        image_token_outside_vocab: ``<image>``'s id equals the text model's ``vocab_size`` (trap 1 of the
            reference: any image forward raises ``IndexError`` unless the loader fixes it).
        legacy_processor_config: the saved processor config lacks ``patch_size``,
            ``vision_feature_select_strategy`` and ``num_additional_image_tokens`` (trap 2).
        legacy_weight_names: weights are stored under the names of the published checkpoint (transformers 4.41:
            ``language_model.model.*``, ``vision_tower.vision_model.*``), the only names vLLM loads.
        tokenizer_padding_side: padding side saved in the tokenizer config; ``"right"`` makes naive batching pool
            pad tokens (trap 4), so the encoder must set left padding itself.
        e5v_chat_template: save E5-V's chat template (``e5v_qdrant/vllm/e5v_chat_template.jinja``) with the
            tokenizer, so chat-style embedding requests to a server of this folder render E5-V's exact prompts.

    ``ReplicaSpec.vllm_compatible()`` gives a replica vLLM (CPU) serves: head sizes of 32 (its CPU attention needs
    >= 32), the published weight names and the chat template.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 336
    patch_size: int = 42
    bpe_vocab_size: int = 400
    seed: int = 0
    image_token_outside_vocab: bool = True
    legacy_processor_config: bool = True
    legacy_weight_names: bool = False
    tokenizer_padding_side: str = "right"
    e5v_chat_template: bool = False
    grid_pinpoints: list = field(default_factory=lambda: [list(p) for p in GRID_PINPOINTS])

    @classmethod
    def vllm_compatible(cls, **changes) -> ReplicaSpec:
        """A replica vLLM can serve: attention head size 32 (text and vision), hub weight names, E5-V chat template."""
        sizes = dict(hidden_size=128, intermediate_size=256, vision_hidden_size=64, vision_intermediate_size=128)
        return cls(**{**sizes, "legacy_weight_names": True, "e5v_chat_template": True, **changes})


def _build_tokenizer(spec: ReplicaSpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.bpe_vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    # Special tokens come after the BPE vocabulary and <image> last, as in the published checkpoint (id 128256 there).
    tok.add_special_tokens(list(LLAMA3_SPECIAL_TOKENS) + [IMAGE_TOKEN])
    bos = LLAMA3_SPECIAL_TOKENS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        padding_side=spec.tokenizer_padding_side,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=8192,
    )


def build_replica(path: str | Path, spec: ReplicaSpec | None = None) -> Path:
    """Build a tiny randomly initialised E5-V replica and save it like the hub checkpoint.

    Args:
        path: folder to write (created; existing files are overwritten).
        spec: sizes and trap switches; the default reproduces every trap of the published checkpoint.

    Returns:
        The folder, loadable by ``E5VEncoder(path)`` and by ``LlavaNextForConditionalGeneration.from_pretrained``.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    spec = spec or ReplicaSpec()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(spec)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_token_id == len(tokenizer) - 1
    text_vocab = image_token_id if spec.image_token_outside_vocab else image_token_id + 1

    text_config = LlamaConfig(
        vocab_size=text_vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden_size,
        hidden_act="quick_gelu",
    )
    config = LlavaNextConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=image_token_id,
        image_grid_pinpoints=spec.grid_pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    # Random init gives near-identical tiny norms; widen the spread so embeddings of different inputs differ clearly.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
                continue
            if param.dim() >= 2:
                param.normal_(0.0, 0.08)
    model.save_pretrained(path, safe_serialization=True)

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_grid_pinpoints=spec.grid_pinpoints,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    if spec.e5v_chat_template:
        from .vllm import chat_template

        tokenizer.chat_template = chat_template()
    processor.save_pretrained(path)

    if spec.legacy_processor_config:
        _strip_processor_keys(path, ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens"))
    if spec.legacy_weight_names:
        _rename_weights_legacy(path)
    (path / "e5v_replica.json").write_text(json.dumps(asdict(spec), indent=2))
    return path


def _strip_processor_keys(path: Path, keys: tuple[str, ...]) -> None:
    for name in ("processor_config.json", "preprocessor_config.json"):
        file = path / name
        if not file.exists():
            continue
        data = json.loads(file.read_text())
        for section in [data] + [v for v in data.values() if isinstance(v, dict)]:
            for key in keys:
                section.pop(key, None)
        file.write_text(json.dumps(data, indent=2))


def _rename_weights_legacy(path: Path) -> None:
    """Rewrite the safetensors keys to the layout transformers 4.41 saved (as on the hub)."""
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(file)
    renamed = {}
    for key, value in tensors.items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key[len("model.language_model.") :]
        elif key.startswith("lm_head."):
            key = "language_model." + key
        elif key.startswith("model."):
            key = key[len("model.") :]
        # transformers 5 saves the CLIP tower without its ``vision_model.`` level (and loads either); the hub has it
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key[len("vision_tower.") :]
        renamed[key] = value
    save_file(renamed, file, metadata={"format": "pt"})


def draw_image(width: int, height: int, seed: int = 0, mode: str = "RGB"):
    """Draw a deterministic test picture (shapes on a gradient) of the given size; distinct seeds differ clearly."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, size=3)
    slope = rng.uniform(-1, 1, size=3)
    arr = np.stack(
        [(base[c] + slope[c] * 255 * (x / max(width, 1) + y / max(height, 1)) / 2) % 256 for c in range(3)], -1
    )
    img = Image.fromarray(arr.astype("uint8"), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, max(width - 1, 1))), int(rng.integers(0, max(height - 1, 1)))
        x1, y1 = x0 + int(rng.integers(1, max(width // 2, 2))), y0 + int(rng.integers(1, max(height // 2, 2)))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img.convert(mode) if mode != "RGB" else img
