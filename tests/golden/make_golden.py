"""Golden E5-V vectors from the authors' environment (transformers 4.41.2), for ``tests/test_image_layout.py``.

Run by ``make_golden.sh`` inside a separate venv holding ``transformers==4.41.2`` (the version the authors pinned in
their requirements.txt, github.com/kongds/E5-V). Self-contained on purpose: it imports nothing from ``e5v_qdrant``.

1. transformers 4.41.2 itself builds and saves a tiny LLaVA-NeXT replica with the published checkpoint's geometry
   (CLIP ViT at 336 px with 14 px patches, the five anyres grid pinpoints) and its traps: ``<image>`` id equal to the
   text model's ``vocab_size`` (4.41 embeds it as id 0, so it runs), old weight names and a processor config without
   ``patch_size`` (both simply what 4.41 saves), right padding saved in the tokenizer.
2. It reloads the replica the way the E5-V README does (``LlavaNextProcessor`` + ``LlavaNextForConditionalGeneration``)
   and embeds texts, images and composed queries with the README's recipe: the Llama-3 chat prompt,
   ``output_hidden_states=True``, ``hidden_states[-1][:, -1, :]``, L2 normalisation. Only the device (cpu) and dtype
   (float32) differ from the README; batches are padded on the left as the authors' ``retrieval.py`` sets it.
3. It writes the replica, the test images (PNG), the vectors (``golden.npz``) and what 4.41 reported about every
   image — best resolution, tile count, image-token count, a subsample of its pixel tiles — (``golden.json``).

Usage: ``python make_golden.py OUTPUT_DIR`` (everything), or ``python make_golden.py --composed-only FIXTURE_DIR``
(recompute the composed vectors of an existing fixture in place, every other array kept byte for byte).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    PreTrainedTokenizerFast,
)
from transformers.image_processing_utils import select_best_resolution

LLAMA3_TEMPLATE = (
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
)
TEXT_BODY = "{}\nSummary above sentence in one word: "
IMAGE_BODY = "<image>\nSummary above image in one word: "
# The authors' retrieval.py writes the CIRR query as "[INST] ... [/INST]" and, for the Llama-3 checkpoint, strips the
# markers with exactly these two replace calls: the body ends with no trailing space (unlike the two above).
COMPOSED_BODY = '[INST] <image>Modify this image with "{}", desribe modified image in one word: [/INST]'.replace(
    "[INST] ", ""
).replace(" [/INST]", "")
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # (height, width), as in E5-V's config
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CORPUS = [
    "A dog sitting in the grass. A cat standing in the snow.",
    "Two dogs are running across a green field chasing a red ball.",
    "The support ticket says the invoice total was charged twice this month.",
    "Summary above sentence in one word: Summary above image in one word:",
    'Modify this image with "make it red", desribe modified image in one word:',
    "user assistant photo picture image sentence word document query passage blue sky",
    "0 1 2 3 4 5 6 7 8 9 % $ # @ ! ? ( ) [ ] < > / - _ = + * & ' \" , . ; :",
]
TEXTS = [
    "A dog sitting in the grass.",
    "A cat standing in the snow.",
    "The support ticket says the invoice total was charged twice this month.",
    "",
    "blue sky",
]
# (width, height): every pinpoint, 3:2 and 4:3 photos, odd leftovers, tiny images and extreme aspect ratios.
IMAGE_SIZES = [
    (640, 480),
    (500, 375),
    (500, 333),
    (333, 500),
    (300, 300),
    (179, 240),
    (1001, 701),
    (337, 335),
    (672, 336),
    (1500, 300),
    (300, 1500),
    (1200, 401),
    (2000, 150),
    (150, 2000),
    (33, 17),
    (1024, 768),
]
COMPOSED = [(2, "make the sky red"), (5, "add a second cat"), (9, "zoom out"), (10, "turn it upside down")]
PIXEL_STRIDE = 8  # golden.json keeps every 8th pixel of every tile: enough to see a one-pixel shift


def draw(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic picture: a diagonal colour gradient with a few filled shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base, slope = rng.uniform(0, 255, 3), rng.uniform(-1, 1, 3)
    arr = np.stack([(base[c] + slope[c] * 255 * (x / width + y / height) / 2) % 256 for c in range(3)], -1)
    img = Image.fromarray(arr.astype("uint8"), "RGB")
    pen = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(1, max(width // 2, 2))), y0 + int(rng.integers(1, max(height // 2, 2)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)([x0, y0, x1, y1], fill=fill)
    return img


def build_replica(path: Path) -> None:
    """transformers 4.41.2 builds and saves the replica (its own file layout and weight names)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens(SPECIALS + ["<image>"])
    bos = SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],  # as the Llama-3 tokenizer config says
    )
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    text = LlamaConfig(
        vocab_size=image_id,  # the published checkpoint's trap: <image> id == vocab_size, outside the table
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=336,
        patch_size=14,
        projection_dim=32,
        hidden_act="quick_gelu",
    )
    config = LlavaNextConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_index=image_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():  # widen random weights so different inputs give clearly different vectors
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "norm" not in name:
                param.normal_(0.0, 0.08)
        model.image_newline.normal_(0.0, 0.5)
    model.save_pretrained(path, safe_serialization=True)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=PINPOINTS
    )
    LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)


def readme_recipe(replica: Path):
    """The E5-V README recipe on ``replica``, device and dtype changed (cpu, float32): ``embed(prompts, images)`` →
    (normalised last-position final hidden states, processor inputs, sequence length)."""
    processor = LlavaNextProcessor.from_pretrained(replica)
    model = LlavaNextForConditionalGeneration.from_pretrained(replica, torch_dtype=torch.float32).eval()
    processor.tokenizer.padding_side = "left"  # as the authors' retrieval.py sets it for batches

    def embed(prompts, images=None):
        inputs = processor(prompts, images, return_tensors="pt", padding=True)
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1]
        return F.normalize(hidden[:, -1, :], dim=-1).numpy(), inputs, hidden.shape[1]

    return embed


def composed_vectors(embed, images) -> dict[str, np.ndarray]:
    """The composed queries (``COMPOSED``) one at a time and in one batch."""
    prompts = [LLAMA3_TEMPLATE.format(COMPOSED_BODY.format(t)) for _, t in COMPOSED]
    chosen = [images[i] for i, _ in COMPOSED]
    return {
        "composed_single": np.concatenate([embed([p], [im])[0] for p, im in zip(prompts, chosen, strict=True)]),
        "composed_batched": embed(prompts, chosen)[0],
    }


def file_digests(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "golden.json"
    }


def update_composed(out: Path) -> None:
    """Recompute only the composed vectors of the fixture in ``out`` (its replica and images as they are); every other
    array is copied byte for byte. For a change of ``COMPOSED_BODY``: a full run on another CPU reproduces the text and
    image vectors only to ~1e-7, and those need not move."""
    manifest = json.loads((out / "golden.json").read_text())
    if manifest["transformers"] != transformers.__version__:
        raise SystemExit(
            f"the fixture was made with transformers {manifest['transformers']}, this is {transformers.__version__}"
        )
    images = [Image.open(out / "images" / f["file"]).convert("RGB") for f in manifest["images"]]
    with np.load(out / "golden.npz") as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(composed_vectors(readme_recipe(out / "replica"), images))
    np.savez_compressed(out / "golden.npz.tmp.npz", **arrays)
    (out / "golden.npz.tmp.npz").replace(out / "golden.npz")
    manifest.update(
        composed_body=COMPOSED_BODY,
        composed=[{"image": manifest["images"][i]["file"], "text": t} for i, t in COMPOSED],
        composed_by={"transformers": transformers.__version__, "torch": torch.__version__},
        files=file_digests(out),
    )
    (out / "golden.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"updated the composed vectors of {out} ({len(COMPOSED)} queries)")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    replica, image_dir = out / "replica", out / "images"
    build_replica(replica)
    image_dir.mkdir(exist_ok=True)
    names = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        name = f"{i:02d}_{w}x{h}.png"
        draw(w, h, seed=100 + i).save(image_dir / name, optimize=True)
        names.append(name)

    embed = readme_recipe(replica)
    images = [Image.open(image_dir / n).convert("RGB") for n in names]
    text_prompts = [LLAMA3_TEMPLATE.format(TEXT_BODY.format(t)) for t in TEXTS]
    image_prompt = LLAMA3_TEMPLATE.format(IMAGE_BODY)
    vectors = {
        "texts_single": np.concatenate([embed([p])[0] for p in text_prompts]),
        "texts_batched": embed(text_prompts)[0],
        **composed_vectors(embed, images),
    }
    singles, facts, pixels = [], [], {}
    for name, image in zip(names, images, strict=True):
        vec, inputs, length = embed([image_prompt], [image])
        singles.append(vec)
        tiles = int(inputs["pixel_values"].shape[1])
        best = select_best_resolution((image.height, image.width), PINPOINTS)
        facts.append(
            {
                "file": name,
                "width": image.width,
                "height": image.height,
                "best_resolution": list(best),
                "tiles": tiles,
                # 4.41 expands the one <image> token inside the model: the sequence grows by tokens - 1
                "image_tokens": int(length - inputs["input_ids"].shape[1] + 1),
            }
        )
        pixels[f"pixels_{name}"] = inputs["pixel_values"][0, :, :, ::PIXEL_STRIDE, ::PIXEL_STRIDE].numpy()
    vectors["images_single"] = np.concatenate(singles)
    # mixed grids in one call, in two batches (4.41 pads the tile dimension and left-pads the merged sequences)
    half = len(images) // 2
    vectors["images_batched"] = np.concatenate(
        [embed([image_prompt] * len(part), part)[0] for part in (images[:half], images[half:])]
    )
    np.savez_compressed(out / "golden.npz", **vectors, **pixels)
    manifest = {
        "made_by": "tests/golden/make_golden.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "recipe": "E5-V README (LlavaNextProcessor + LlavaNextForConditionalGeneration, hidden_states[-1][:, -1, :], "
        "normalised); device cpu, dtype float32; batches left-padded",
        "template": LLAMA3_TEMPLATE,
        "texts": TEXTS,
        "text_body": TEXT_BODY,
        "image_body": IMAGE_BODY,
        "composed_body": COMPOSED_BODY,
        "composed": [{"image": names[i], "text": t} for i, t in COMPOSED],
        "images": facts,
        "images_batched_split": half,
        "pixel_stride": PIXEL_STRIDE,
        "files": file_digests(out),
    }
    (out / "golden.json").write_text(json.dumps(manifest, indent=1) + "\n")
    covered = {tuple(f["best_resolution"]) for f in facts}
    missing = [p for p in PINPOINTS if tuple(p) not in covered]
    if missing:
        raise SystemExit(f"image sizes do not cover the pinpoints {missing}")
    print(f"wrote {out}: {len(TEXTS)} texts, {len(names)} images, {len(COMPOSED)} composed queries")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--composed-only"] and len(sys.argv) == 3:
        update_composed(Path(sys.argv[2]))
    elif len(sys.argv) == 2:
        main(Path(sys.argv[1]))
    else:
        raise SystemExit(__doc__)
