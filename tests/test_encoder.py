"""E5VEncoder against the authors' recipe, written out independently here (shared/E5V_REFERENCE.md §1):

processor → full LlavaNextForConditionalGeneration forward with output_hidden_states → hidden_states[-1][:, -1]
→ L2-normalise, left padding, the authors' prompt strings typed in below.

The recipe runs on the installed (current) transformers, so image vectors are compared with
``image_layout="llava-next"``; the default ``"paper"`` layout is checked against a real transformers 4.41.2 install
in test_image_layout.py.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import torch

from e5v_qdrant import E5VConfigError, E5VEncoder, E5VImageError, E5VInputError
from e5v_qdrant.testing import ReplicaSpec, build_replica, draw_image

CHAT = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
TEXT = CHAT.format("{}\nSummary above sentence in one word: ")
IMAGE = CHAT.format("<image>\nSummary above image in one word: ")
COMPOSED = CHAT.format(
    '<image>Modify this image with "{}", desribe modified image in one word:'
)  # no trailing space (issue 27)

TEXTS = [
    "A cat.",
    "Two dogs are running across a green field chasing a red ball while children laugh. " * 6,
    "The invoice was charged twice this month.",
    "snow",
    "Fresh bread, cheese and olives are laid out on a wooden table next to a bottle of wine and a basket of figs.",
]
# Different aspect ratios pick different anyres grids (and so different token counts).
IMAGES = [
    draw_image(640, 480, seed=1),
    draw_image(300, 900, seed=2),
    draw_image(1000, 330, seed=3),
    draw_image(200, 200, seed=4),
]


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


class Recipe:
    """The authors' evaluation recipe, on the 'fixed' model (embedding table grown, processor settings filled)."""

    def __init__(self, path, padding_side="left"):
        from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

        cfg = json.loads((path / "config.json").read_text())
        self.processor = LlavaNextProcessor.from_pretrained(
            path,
            patch_size=cfg["vision_config"]["patch_size"],
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
        self.processor.tokenizer.padding_side = padding_side
        self.model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        self.model.resize_token_embeddings(cfg["image_token_index"] + 1, mean_resizing=False)

    def __call__(self, prompts, images=None):
        inputs = self.processor(text=prompts, images=images, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        return torch.nn.functional.normalize(out.hidden_states[-1][:, -1, :], dim=-1).numpy()


@pytest.fixture(scope="module")
def recipe(replica_path):
    return Recipe(replica_path)


@pytest.fixture(scope="module")
def llava_next(replica_path):
    """The encoder with today's transformers image layout, the one the installed transformers computes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=4, image_layout="llava-next")


def test_text_parity_with_recipe_batched_and_alone(encoder, recipe):
    ours = encoder.embed_texts(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), encoder.dim)
    batched = recipe([TEXT.format(t) for t in TEXTS])
    alone = np.concatenate([recipe([TEXT.format(t)]) for t in TEXTS])
    assert _cos(ours, alone).min() >= 0.9999
    assert _cos(ours, batched).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the inputs really differ: vectors must not collapse onto one point
    assert _cos(ours[0], ours[3]) < 0.999


def test_image_parity_with_recipe(llava_next, recipe):
    ours = llava_next.embed_images(IMAGES)
    alone = np.concatenate([recipe([IMAGE], [img]) for img in IMAGES])
    batched = recipe([IMAGE] * len(IMAGES), IMAGES)
    assert _cos(ours, alone).min() >= 0.9999
    assert _cos(ours, batched).min() >= 0.9999


def test_composed_parity_with_recipe(llava_next, recipe):
    edits = ["make it red", "remove the dog and add two cats sitting on a sofa"]
    ours = llava_next.embed_composed(IMAGES[:2], edits)
    ref = recipe([COMPOSED.format(e) for e in edits], IMAGES[:2])
    assert _cos(ours, ref).min() >= 0.9999
    # the edit text matters
    other = llava_next.embed_composed(IMAGES[:1], ["make it blue and add snow"])
    assert _cos(ours[0], other[0]) < 0.9999


def test_right_padding_trap_would_change_vectors(replica_path, encoder):
    """Trap 4: the replica's tokenizer saves right padding; naive batching pools pads. The encoder must not."""
    right = Recipe(replica_path, padding_side="right")
    naive = right([TEXT.format(t) for t in TEXTS])
    ours = encoder.embed_texts(TEXTS)
    assert _cos(ours, naive).min() < 0.99  # pooling a pad token gives a different vector


def test_batch_invariance_across_sizes_and_orders(replica_path):
    texts = TEXTS * 2 + ["", "x " * 40]
    results = []
    for batch_size in (1, 3, 16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=batch_size, preprocess_workers=0)
        results.append(enc.embed_texts(texts))
        reversed_out = enc.embed_texts(texts[::-1])[::-1]
        assert _cos(results[-1], reversed_out).min() >= 0.99999
        img = enc.embed_images(IMAGES[::-1])[::-1]
        if batch_size == 1:
            img_ref = img
        assert _cos(img, img_ref).min() >= 0.99999
    for other in results[1:]:
        assert _cos(results[0], other).min() >= 0.99999
    # duplicates in one call are identical rows, single calls equal their batch rows
    assert _cos(results[0][0], results[0][len(TEXTS)]) >= 0.99999


def test_mixed_input_forms_give_same_vectors(encoder, tmp_path):
    import io

    img = IMAGES[0]
    path = tmp_path / "a.png"
    img.save(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = encoder.embed_images([img, str(path), path, buf.getvalue(), io.BytesIO(buf.getvalue())])
    assert _cos(out, np.repeat(out[:1], len(out), axis=0)).min() >= 0.99999


def test_empty_inputs_and_empty_strings(encoder):
    assert encoder.embed_texts([]).shape == (0, encoder.dim)
    assert encoder.embed_images([]).shape == (0, encoder.dim)
    assert encoder.embed_composed([], []).shape == (0, encoder.dim)
    out = encoder.embed_texts(["", "a cat"])
    assert out.shape == (2, encoder.dim)  # empty strings are embedded, not dropped
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_input_validation_errors(encoder):
    with pytest.raises(E5VInputError, match="single str"):
        encoder.embed_texts("not a list")
    with pytest.raises(E5VInputError, match=r"texts\[1\].*expected str"):
        encoder.embed_texts(["ok", 3])
    with pytest.raises(E5VInputError, match="2 images but 1 texts"):
        encoder.embed_composed(IMAGES[:2], ["one"])


def test_bad_image_in_a_batch_names_the_item(encoder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(E5VImageError) as info:
        encoder.embed_images([IMAGES[0], IMAGES[1], bad])
    assert "image 2" in str(info.value) and "broken.jpg" in str(info.value)


def test_trap_replica_breaks_stock_transformers(replica_path):
    """The replica really reproduces traps 1 and 2: the stock path fails where the encoder works."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    processor = LlavaNextProcessor.from_pretrained(replica_path)
    with pytest.raises(TypeError):  # patch_size missing from the saved processor config
        processor(text=[IMAGE], images=[IMAGES[0]], return_tensors="pt")
    cfg = json.loads((replica_path / "config.json").read_text())
    assert cfg["image_token_index"] == cfg["text_config"]["vocab_size"]
    fixed = LlavaNextProcessor.from_pretrained(
        replica_path,
        patch_size=cfg["vision_config"]["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model = LlavaNextForConditionalGeneration.from_pretrained(replica_path)
    with pytest.raises(IndexError):
        model(**fixed(text=[IMAGE], images=[IMAGES[0]], return_tensors="pt"))


def test_trap_fixes_are_logged_once_at_info_and_clean_checkpoint_is_silent(replica_path, tmp_path, caplog):
    """Handled traps are reported once at INFO (``-v``) and recorded on the encoder, not raised as warnings."""
    with caplog.at_level(logging.INFO, logger="e5v_qdrant"), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        enc = E5VEncoder(replica_path, device="cpu")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("e5v_qdrant") and r.levelno == logging.INFO]
    text = " ".join(enc.load_fixes)
    assert "outside the embedding table" in text and "patch_size" in text
    assert sorted(logged) == sorted(enc.load_fixes) and len(enc.load_fixes) == 2

    clean = build_replica(
        tmp_path / "clean",
        ReplicaSpec(image_token_outside_vocab=False, legacy_processor_config=False, tokenizer_padding_side="left"),
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="e5v_qdrant"), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        enc = E5VEncoder(clean, device="cpu")
    assert enc.load_fixes == [] and not [r for r in caplog.records if r.name.startswith("e5v_qdrant")]
    assert enc.embed_images(IMAGES[:1]).shape == (1, enc.dim)
    assert Recipe(clean)([IMAGE], IMAGES[:1]).shape == (1, enc.dim)


def test_image_token_count_matches_processor_expansion(llava_next, recipe):
    for img in IMAGES[:3]:
        ids = recipe.processor(text=[IMAGE], images=[img], return_tensors="pt")["input_ids"][0]
        expected = int((ids == llava_next.image_token_id).sum())
        assert llava_next.count_image_tokens(img) == expected
    counts = {llava_next.count_image_tokens(img) for img in IMAGES}
    assert len(counts) >= 3  # aspect ratio changes the anyres grid


def test_max_text_tokens_truncates_user_text_only(replica_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = E5VEncoder(replica_path, device="cpu", max_text_tokens=4)
    long_text = "the quick brown fox jumps over the lazy dog " * 5
    head = enc.tokenizer.decode(enc.tokenizer(long_text, add_special_tokens=False)["input_ids"][:4])
    recipe = Recipe(replica_path)
    assert _cos(enc.embed_texts([long_text]), recipe([TEXT.format(head)])).min() >= 0.9999


def test_options_are_validated_and_dtype_accepts_torch_dtypes(replica_path, tmp_path):
    with pytest.raises(E5VConfigError, match="dtype"):
        E5VEncoder(replica_path, dtype="float8")
    with pytest.raises(E5VConfigError, match="batch_size"):
        E5VEncoder(replica_path, batch_size=0)
    with pytest.raises(E5VConfigError, match="adapter folder"):
        E5VEncoder(replica_path, adapter=str(tmp_path / "nope"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = E5VEncoder(replica_path, dtype=torch.bfloat16, device="cpu")
    assert enc.torch_dtype == torch.bfloat16 and enc.describe()["dtype"] == "bfloat16"
    assert enc.embed_texts(["a cat"]).dtype == np.float32


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from e5v_qdrant import E5VModelError

    (tmp_path / "empty").mkdir()
    with pytest.raises(E5VModelError, match="cannot load"):
        E5VEncoder(tmp_path / "empty")


def test_fingerprint_tracks_what_changes_vectors(replica_path, encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = E5VEncoder(replica_path, device="cpu", prompts="e5v-cirr-target")  # another image body
        typo = E5VEncoder(replica_path, device="cpu", prompts="e5v-typofix")  # another composed body: query-time only
    assert target.fingerprint["id"] != encoder.fingerprint["id"]
    assert typo.fingerprint["id"] == encoder.fingerprint["id"]  # issue 27: stored vectors are the same
    assert encoder.fingerprint["dim"] == encoder.dim == 64


def test_revision_reaches_every_from_pretrained_call(replica_path, monkeypatch):
    import transformers

    seen = []
    for cls in (
        transformers.LlavaNextConfig,
        transformers.LlavaNextProcessor,
        transformers.LlavaNextForConditionalGeneration,
    ):
        original = cls.from_pretrained.__func__

        def recording(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            seen.append((_name, kwargs.get("revision")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        E5VEncoder(replica_path, device="cpu", revision="v1.2")  # a local folder ignores the revision
    names = {name for name, _ in seen}
    assert {"LlavaNextConfig", "LlavaNextProcessor", "LlavaNextForConditionalGeneration"} <= names
    assert all(rev == "v1.2" for _, rev in seen)


def test_fingerprint_ignores_path_spelling_and_files_beside_the_adapter(replica_path, tmp_path, monkeypatch):
    import shutil

    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        absolute = E5VEncoder(replica_path, device="cpu")
        monkeypatch.chdir(replica_path.parent)
        relative = E5VEncoder(replica_path.name, device="cpu")
        assert absolute.fingerprint["id"] == relative.fingerprint["id"]

        # an adapter with non-zero LoRA weights changes the id; a checkpoint folder saved beside it does not
        lm = absolute.model.language_model
        lora = get_peft_model(lm, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        lora.save_pretrained(tmp_path / "adapter")
        lora.unload()
        with_adapter = E5VEncoder(replica_path, device="cpu", adapter=str(tmp_path / "adapter")).fingerprint["id"]
        shutil.copytree(tmp_path / "adapter", tmp_path / "adapter" / "checkpoints")
        (tmp_path / "adapter" / "manifest.json").write_text("{}")
        again = E5VEncoder(replica_path, device="cpu", adapter=str(tmp_path / "adapter")).fingerprint["id"]
    assert with_adapter != absolute.fingerprint["id"]
    assert again == with_adapter
