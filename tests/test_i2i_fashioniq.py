"""Image-to-image retrieval with rendered captions and FashionIQ composed retrieval (issue 20).

References used here, independent of the code under test: the pixel content of the rendered PNGs, PIL's own text
measurement, ``hashlib`` over the font file, the prompt strings written out from the issue, recall recomputed by
sorting score rows, and the two-caption query rebuilt from separately computed un-normalised vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from e5v_qdrant import E5VEncoder
from e5v_qdrant.cli import main
from e5v_qdrant.errors import E5VInputError
from e5v_qdrant.evaluate import read_fashioniq, render_caption, render_captions
from e5v_qdrant.evaluate.render import find_default_font, resolve_font, wrap_lines
from e5v_qdrant.prompts import get_prompts
from e5v_qdrant.testing import draw_image

pytestmark = pytest.mark.filterwarnings("ignore:processor config disagrees", "ignore:<image> token id")

CAPTIONS = [
    ["A red circle on a blue field.", "round red shape"],
    ["Two green squares", "green boxes on grey, seen from above while the light fades over the quiet harbour town"],
    ["a wide sunset gradient", "orange sky"],
]
RUN = ["--model", "", "--device", "cpu", "--dtype", "float32", "--batch-size", "4", "--no-progress"]


def _ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 128


def _recall(scores: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Recall@k by sorting each score row (no exact ties in these data)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return 100.0 * np.mean([bool(set(row.tolist()) & rel) for row, rel in zip(top, relevant, strict=True)])


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ------------------------------------------------------------------ rendering (no model)
@pytest.mark.parametrize(
    "caption",
    [
        "A dog.",
        "A man in an orange hat starring at something while a dog runs on the beach near the ocean waves.",
        " ".join(["wrapping"] * 30),
    ],
)
def test_rendered_caption_is_800x400_white_with_black_ink_inside_the_margins(caption):
    image = render_caption(caption)
    assert image.size == (800, 400) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert set(map(tuple, pixels.reshape(-1, 3)[::97].tolist())) <= {(v, v, v) for v in range(256)}  # grey levels only
    ink = _ink(image)
    ys, xs = np.nonzero(ink)
    assert xs.min() >= 20 and xs.max() < 780, (xs.min(), xs.max())
    assert ys.min() >= 20 and ys.max() < 380, (ys.min(), ys.max())
    # vertically centred block: the ink's middle lies near the canvas middle (shifted by the first line's ascent gap)
    assert abs((ys.min() + ys.max()) / 2 - 200) < 20
    # the margins stay white (anti-aliasing may leave a barely visible edge pixel: 250+ of 255)
    for margin in (pixels[:20], pixels[380:], pixels[:, :20], pixels[:, 780:]):
        assert margin.min() >= 250


def test_word_wrap_is_greedy_at_760_px_by_pils_own_measure():
    font = ImageFont.truetype(find_default_font(), 40)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = CAPTIONS[1][1] + " " + " ".join(["and", "then", "some", "more", "words"] * 6)
    lines = wrap_lines(text, font)
    assert " ".join(line.strip() for line in lines) == " ".join(text.split())  # nothing lost or reordered
    for line, following in zip(lines, lines[1:], strict=False):
        assert draw.textlength(line.rstrip(" "), font=font) <= 760
        # greedy: the next line's first word would not have fitted after this line's trailing space
        assert draw.textlength(line + following.split()[0], font=font) > 760


def test_an_over_long_single_word_renders_without_hanging_and_inside_the_margins():
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3  # far wider than 760 px at 40 pt
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("image", render_caption(f"see {word} here")))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "rendering an over-long word did not finish"
    ys, xs = np.nonzero(_ink(result["image"]))
    assert xs.min() >= 20 and xs.max() < 780
    lines = wrap_lines(f"see {word} here", ImageFont.truetype(find_default_font(), 40))
    assert "".join(line.replace(" ", "") for line in lines) == f"see{word}here"  # every character drawn once
    assert len(lines) >= 4


def test_saved_renderings_sort_in_caption_order_and_match_the_renderer(tmp_path):
    captions = [f"caption number {i}" for i in range(12)]  # more than 10: plain numbering would mis-sort
    paths = render_captions(captions, tmp_path / "r")
    assert sorted(os.listdir(tmp_path / "r")) == [os.path.basename(p) for p in paths]
    for caption, path in zip(captions, paths, strict=True):
        with Image.open(path) as saved:
            assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(render_caption(caption)))


def test_font_errors_name_the_file_and_the_remedy(tmp_path):
    with pytest.raises(E5VInputError, match="not found"):
        resolve_font(tmp_path / "arial.ttf")
    (tmp_path / "fake.ttf").write_bytes(b"not a font")
    with pytest.raises(E5VInputError, match="TrueType"):
        resolve_font(tmp_path / "fake.ttf")
    assert os.path.basename(find_default_font()) == "LiberationSans-Regular.ttf"


# ------------------------------------------------------------------ prompts and the two-caption query
def test_fashioniq_prompt_strings_are_byte_equal_to_the_issue():
    chat_head = "<|start_header_id|>user<|end_header_id|>\n\n"
    chat_tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
    for category, noun in (("dress", "dress"), ("shirt", "shirt"), ("toptee", "shirt")):
        p = get_prompts(f"fashioniq-{category}")
        assert p.image == f"<image>\n Describe this {noun} in one word based on its style:"  # no trailing space
        assert p.for_composed("TEXT") == (
            chat_head + f"<image> change the style of this {noun} to TEXT\n Desribe this modified {noun} in one word "
            "based on its style:" + chat_tail
        )
        assert p.text == get_prompts("e5v").text  # texts keep the authors' text prompt


@pytest.fixture(scope="module")
def dress_encoder(replica_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return E5VEncoder(replica_path, device="cpu", dtype="float32", batch_size=4, prompts="fashioniq-dress")


def test_normalize_false_returns_the_raw_vectors_that_normalise_to_the_default(encoder):
    images = [draw_image(60, 40, seed=1), draw_image(40, 60, seed=2)]
    raw = encoder.embed_images(images, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(_normalise(raw), encoder.embed_images(images), atol=1e-5)
    texts = ["a cat", "a much longer sentence about dogs"]
    np.testing.assert_allclose(
        _normalise(encoder.embed_texts(texts, normalize=False)), encoder.embed_texts(texts), atol=1e-5
    )


def test_two_caption_query_equals_the_normalised_sum_of_both_orders(dress_encoder):
    ref = draw_image(64, 48, seed=3)
    pairs = [("  is red with shorter sleeves. ", "has a belt?"), ("Is longer,", ". and darker")]
    got = dress_encoder.embed_composed_pairs([ref, ref], pairs)
    texts = [("is red with shorter sleeves", "has a belt"), ("Is longer", "and darker")]  # stripped by hand
    for row, (a, b) in enumerate(texts):
        ab = dress_encoder.embed_composed([ref], [f"{a}, {b}"], normalize=False)[0].astype(np.float64)
        ba = dress_encoder.embed_composed([ref], [f"{b}, {a}"], normalize=False)[0].astype(np.float64)
        np.testing.assert_allclose(got[row], _normalise(ab + ba), atol=1e-5)
        # and it is neither single order alone
        assert not np.allclose(got[row], _normalise(ab), atol=1e-3)
    with pytest.raises(E5VInputError, match="one \\(a, b\\) per image"):
        dress_encoder.embed_composed_pairs([ref], [("only one",)])


# ------------------------------------------------------------------ eval i2i end to end
@pytest.fixture(scope="module")
def i2i_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2i")
    (root / "images").mkdir()
    entries = []
    for i, caps in enumerate(CAPTIONS):
        draw_image(48 + 16 * i, 40, seed=20 + i).save(root / "images" / f"p{i}.png")
        entries.append({"filename": f"p{i}.png", "split": "test", "sentences": [{"raw": c} for c in caps]})
    (root / "karpathy.json").write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    return root


def test_eval_i2i_report_equals_recall_from_the_saved_renderings(replica_path, encoder, i2i_data, tmp_path):
    saved = tmp_path / "rendered"
    report = tmp_path / "i2i.json"
    run = [*RUN]
    run[1] = str(replica_path)
    args = ["eval", "i2i", "--images", str(i2i_data / "images"), "--captions", str(i2i_data / "karpathy.json")]
    assert main([*args, "--save-rendered", str(saved), "--report", str(report), *run]) == 0
    rep = json.loads(report.read_text())
    captions = [c for caps in CAPTIONS for c in caps]
    names = sorted(os.listdir(saved))
    assert len(names) == len(captions)
    for name in names:
        with Image.open(saved / name) as im:
            assert im.size == (800, 400)
    # independent recall: the saved PNGs and the photos through E5VEncoder, ranked by sorting
    rendered = encoder.embed_images([str(saved / n) for n in names])
    photos = encoder.embed_images([str(i2i_data / "images" / f"p{i}.png") for i in range(len(CAPTIONS))])
    owner = [i for i, caps in enumerate(CAPTIONS) for _ in caps]
    scores = rendered @ photos.T
    for k in (1, 5, 10):
        assert rep["metrics"]["caption_image_to_image"][f"R@{k}"] == pytest.approx(
            _recall(scores, [{o} for o in owner], k)
        )
        mine = [{j for j, o in enumerate(owner) if o == i} for i in range(len(CAPTIONS))]
        assert rep["metrics"]["image_to_caption_image"][f"R@{k}"] == pytest.approx(_recall(scores.T, mine, k))
    font = rep["data"]["font"]
    assert font["path"] == find_default_font()
    assert font["sha256"] == hashlib.sha256(open(font["path"], "rb").read()).hexdigest()
    assert rep["paper"]["caption_image_to_image"]["R@1"] == 67.8  # Flickr30K I2I, next to the result
    assert any("3 test images" in w and "has 1000" in w for w in rep["warnings"])
    assert rep["data"]["rendered_captions"] == str(saved)
    assert any("Arial" in n for n in rep["notes"])


def test_eval_i2i_bad_font_fails_before_loading_the_model(i2i_data, tmp_path, capsys):
    args = ["eval", "i2i", "--images", str(i2i_data / "images"), "--captions", str(i2i_data / "karpathy.json")]
    assert main([*args, "--font", str(tmp_path / "missing.ttf"), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "missing.ttf" in err and "font file not found" in err


# ------------------------------------------------------------------ FashionIQ end to end
@pytest.fixture(scope="module")
def fiq(tmp_path_factory):
    root = tmp_path_factory.mktemp("fiq")
    (root / "img").mkdir()
    ids = [f"B00{i}" for i in range(6)]
    for i, image_id in enumerate(ids):
        draw_image(40 + 8 * i, 56 - 4 * i, seed=40 + i).save(root / "img" / f"{image_id}.png")
    caps = [
        {"candidate": "B000", "target": "B001", "captions": ["is shorter.", "has red sleeves"]},
        {
            "candidate": "B002",
            "target": "B002",
            "captions": ["is the same dress", "same colour?"],
        },  # target == reference
        {"candidate": "B003", "target": "B005", "captions": ["is darker", " , has no belt"]},
    ]
    (root / "cap.dress.val.json").write_text(json.dumps(caps))
    (root / "split.dress.val.json").write_text(json.dumps(ids))
    return root, ids, caps


def test_read_fashioniq_keeps_references_as_candidates_and_checks_files(fiq):
    root, ids, caps = fiq
    data = read_fashioniq(root / "cap.dress.val.json", root / "img", root / "split.dress.val.json", category="dress")
    assert [os.path.basename(p) for p in data.candidates] == [f"{i}.png" for i in ids]
    assert set(data.references) <= set(data.candidates)
    assert data.captions == [tuple(c["captions"]) for c in caps]
    with pytest.raises(E5VInputError, match="unknown category"):
        read_fashioniq(root / "cap.dress.val.json", root / "img", root / "split.dress.val.json", category="shoes")
    (root / "short.json").write_text(json.dumps(ids[:2]))
    with pytest.raises(E5VInputError, match="not in the split file"):
        read_fashioniq(root / "cap.dress.val.json", root / "img", root / "short.json", category="dress")


def test_eval_composed_fashioniq_equals_independent_recall(replica_path, dress_encoder, fiq, tmp_path):
    root, ids, caps = fiq
    report = tmp_path / "fiq.json"
    run = [*RUN]
    run[1] = str(replica_path)
    args = ["eval", "composed", "--fashioniq", "dress", "--data", str(root / "cap.dress.val.json")]
    args += ["--images", str(root / "img"), "--candidates", str(root / "split.dress.val.json")]
    assert main([*args, "--report", str(report), *run]) == 0
    rep = json.loads(report.read_text())
    assert rep["task"] == "fashioniq-dress"
    assert rep["model"]["prompt_preset"] == "fashioniq-dress"  # the category's preset without --prompts
    assert not any("prompt preset" in w for w in rep["warnings"])
    assert rep["data"]["counts"]["references_among_candidates"] == 3
    head, tail = (
        "'<|start_header_id|>user<|end_header_id|>\\n\\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n \\n'",
    )
    assert rep["prompts"]["query"] == (
        head
        + "<image> change the style of this dress to {text}\\n Desribe this modified dress in one word based on its"
        " style:" + tail
    )
    assert (
        rep["prompts"]["candidates"] == head + "<image>\\n Describe this dress in one word based on its style:" + tail
    )
    # independent: raw vectors for each caption order, summed, normalised; all six images are candidates
    cands = dress_encoder.embed_images([str(root / "img" / f"{i}.png") for i in ids])
    queries = []
    for c in caps:
        a, b = (x.strip(".?, ") for x in c["captions"])
        ref = str(root / "img" / f"{c['candidate']}.png")
        raw = dress_encoder.embed_composed([ref, ref], [f"{a}, {b}", f"{b}, {a}"], normalize=False).astype(np.float64)
        queries.append(_normalise(raw[0] + raw[1]))
    scores = np.asarray(queries) @ cands.T
    relevant = [{ids.index(c["target"])} for c in caps]
    for k in (1, 5, 10, 50):
        assert rep["metrics"]["composed_to_image"][f"R@{k}"] == pytest.approx(_recall(scores, relevant, k))
    # the query whose target is its own reference is found within the 6 candidates: the reference was not excluded
    assert rep["metrics"]["composed_to_image"]["R@50"] == 100.0
    assert rep["paper"]["composed_to_image"] == {"R@10": 31.80, "R@50": 53.78}


def test_fashioniq_needs_its_image_folder_and_split_file(fiq, capsys):
    root, _, _ = fiq
    assert main(["eval", "composed", "--fashioniq", "dress", "--data", str(root / "cap.dress.val.json")]) == 2
    assert "--candidates split" in capsys.readouterr().err


# ------------------------------------------------------------------ catalogue search
def test_catalogue_search_with_fashioniq_prompts_cli_and_llamaindex(replica_path, dress_encoder, fiq, tmp_path, capsys):
    from llama_index.embeddings.e5v import E5VEmbedding

    root, ids, _ = fiq
    store = ["--qdrant-path", str(tmp_path / "qd"), "--collection", "shop"]
    run = [*RUN]
    run[1] = str(replica_path)
    assert main(["ingest", str(root / "img"), *store, "--prompts", "fashioniq-dress", *run[:-1]]) == 0
    capsys.readouterr()
    ref = str(root / "img" / "B000.png")
    text = "shorter sleeves, in red"
    # the model and prompts recorded in the collection are used: no --model / --prompts at search time
    assert main(["search", "--image", ref, text, *store, "--json", "--top-k", "6"]) == 0
    hits = json.loads(capsys.readouterr().out)
    query = dress_encoder.embed_composed([ref], [text])[0]
    cands = dress_encoder.embed_images([str(root / "img" / f"{i}.png") for i in ids])
    expected = cands @ query
    got = {os.path.basename(h["source"]): h["score"] for h in hits}
    assert got == pytest.approx({f"{i}.png": float(s) for i, s in zip(ids, expected, strict=True)}, abs=1e-4)
    assert [os.path.basename(h["source"]) for h in hits][0] == f"{ids[int(np.argmax(expected))]}.png"
    bundle = E5VEmbedding(encoder=dress_encoder).query_bundle(image=ref, text=text)
    np.testing.assert_allclose(bundle.embedding, query, atol=1e-5)
