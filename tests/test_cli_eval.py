"""`e5v-qdrant eval …` end to end on the tiny replica and a tiny generated data set (images drawn here)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from e5v_qdrant.cli import main
from e5v_qdrant.testing import draw_image

# The replica reproduces the published checkpoint's traps; the encoder's load-time warnings are asserted on in the
# reports (model.load_warnings), not shown here.
pytestmark = pytest.mark.filterwarnings("ignore:processor config disagrees", "ignore:<image> token id")

SIZES = [(64, 48), (48, 64), (90, 60), (60, 60)]
CAPTIONS = [
    ["a red circle on a blue field", "round red shape"],
    ["two green squares", "green boxes on grey"],
    ["a wide sunset gradient", "orange sky"],
    ["a small cat", "kitten on a mat"],
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    images = root / "images"
    images.mkdir()
    names = []
    for i, (w, h) in enumerate(SIZES):
        name = f"img{i}.png"
        draw_image(w, h, seed=10 + i).save(images / name)
        names.append(name)
    karpathy = {
        "dataset": "flickr30k",
        "images": [
            {"filename": n, "split": "test", "sentences": [{"raw": c} for c in caps]}
            for n, caps in zip(names, CAPTIONS, strict=True)
        ]
        + [{"filename": "not-in-test.png", "split": "train", "sentences": [{"raw": "ignored"}]}],
    }
    (root / "karpathy.json").write_text(json.dumps(karpathy))
    composed = [
        {"reference": "img0.png", "text": "make it green", "target": "img1.png"},
        {"reference": "img1.png", "text": "make it a sunset", "target": "img2.png"},
        {"reference": "img2.png", "text": "put a cat in it", "target": "img3.png"},
    ]
    (root / "composed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in composed))
    (root / "sts.tsv").write_text(
        "sentence1\tsentence2\tscore\n"
        "A cat sits on the mat.\tA kitten sits on the mat.\t4.8\n"
        "A man rides a bike.\tA person cycles down the street.\t3.9\n"
        "The bread is fresh.\tSnow covers the mountains.\t0.2\n"
        "Two dogs run in a field.\tDogs are running outside.\t4.1\n"
        "The invoice was charged twice.\tChildren play football.\t0.0\n"
    )
    triplets = [
        {"anchor": "a cat on the windowsill", "positive": "a cat sits by the window", "negative": "a dog in the park"},
        {"anchor": "bread and cheese", "positive": "food on a wooden table", "negative": "snow on mountains"},
        {"anchor": "a man on a bicycle", "positive": "someone cycling in the city", "negative": "a recipe with flour"},
        {"anchor": "the invoice total", "positive": "billing charged twice", "negative": "children playing football"},
    ]
    (root / "triplets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in triplets))
    return root


def _run(replica_path, tmp_path, *args) -> dict:
    report = tmp_path / f"{args[0]}.json"
    code = main(
        [
            "eval",
            *args,
            "--model",
            str(replica_path),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--batch-size",
            "4",
            "--no-progress",
            "--report",
            str(report),
        ]
    )
    assert code == 0
    return json.loads(report.read_text())


def _check_common(rep: dict, task: str, data_file) -> None:
    assert rep["task"] == task
    model = rep["model"]
    for key in (
        "model",
        "revision",
        "adapter",
        "dtype",
        "device",
        "prompts",
        "transformers",
        "torch",
        "fingerprint",
        "pooling",
        "prompt_preset",
        "load_warnings",
    ):
        assert key in model, key
    assert model["dtype"] == "float32" and model["device"] == "cpu" and "last real token" in model["pooling"]
    assert model["revision"] is None and model["adapter"] is None
    assert set(model["prompts"]) >= {"text", "image", "composed", "chat"}
    assert isinstance(model["transformers"], str) and isinstance(model["torch"], str)
    # the replica reproduces the checkpoint's traps: the encoder's load-time fixes are recorded
    assert any("outside the embedding table" in w for w in model["load_warnings"])
    files = rep["data"]["files"]
    assert files[0]["path"] == str(data_file)
    assert files[0]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert all(isinstance(v, int) and v >= 0 for v in rep["data"]["counts"].values())
    timings = rep["timings"]
    assert {"model_load_s", "total_s"} <= set(timings)
    assert all(isinstance(v, float) and v >= 0 for v in timings.values())
    assert isinstance(rep["warnings"], list) and all(isinstance(w, str) for w in rep["warnings"])
    # --dtype float32 is a non-default request: flagged; a local folder needs no revision pin
    assert any("non-default dtype 'float32'" in w for w in rep["warnings"])
    assert not any("revision" in w for w in rep["warnings"])
    assert rep["tie_policy"].startswith("pessimistic")
    for direction, values in rep["metrics"].items():
        for name, value in values.items():
            if name.startswith("R@") or name in ("spearman", "pearson", "triplet_accuracy"):
                lo = -100.0 if name in ("spearman", "pearson") else 0.0
                assert isinstance(value, float) and lo <= value <= 100.0, (direction, name, value)


def _recall_by_argsort(scores: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Independent recall@k: sort each row and look for a relevant index among the first k (no ties in this data)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return 100.0 * np.mean([bool(set(row.tolist()) & rel) for row, rel in zip(top, relevant, strict=True)])


def test_eval_retrieval_end_to_end(replica_path, encoder, dataset, tmp_path, capsys):
    rep = _run(
        replica_path,
        tmp_path,
        "retrieval",
        "--images",
        str(dataset / "images"),
        "--captions",
        str(dataset / "karpathy.json"),
        "--via-qdrant",
    )
    out = capsys.readouterr().out
    assert "text_to_image" in out and "R@1" in out and "paper" in out
    _check_common(rep, "retrieval", dataset / "karpathy.json")
    assert rep["data"]["counts"] == {"images": 4, "captions": 8}
    assert rep["data"]["dataset"] == "flickr30k" and rep["data"]["split"] == "test"
    assert set(rep["metrics"]) == {"text_to_image", "image_to_text"}
    assert set(rep["metrics"]["text_to_image"]) == {"R@1", "R@5", "R@10", "median_rank"}
    assert rep["paper"]["text_to_image"]["R@1"] == 79.5
    assert any("4 test images" in w and "1000" in w for w in rep["warnings"])

    # numbers equal an independent computation from the same encoder's vectors
    paths = [str(dataset / "images" / f"img{i}.png") for i in range(4)]
    captions = [c for caps in CAPTIONS for c in caps]
    owner = [i for i, caps in enumerate(CAPTIONS) for _ in caps]
    img = encoder.embed_images(paths)
    txt = encoder.embed_texts(captions)
    for k in (1, 5, 10):
        assert rep["metrics"]["text_to_image"][f"R@{k}"] == pytest.approx(
            _recall_by_argsort(txt @ img.T, [{o} for o in owner], k)
        )
        own = [{j for j, o in enumerate(owner) if o == i} for i in range(4)]
        assert rep["metrics"]["image_to_text"][f"R@{k}"] == pytest.approx(_recall_by_argsort(img @ txt.T, own, k))

    counts = [encoder.count_image_tokens(p) for p in paths]
    tokens = rep["image_tokens"]
    assert tokens["images"] == 4 and tokens["min"] == min(counts) and tokens["max"] == max(counts)
    assert tokens["mean"] == pytest.approx(np.mean(counts))
    assert tokens["min"] > 0
    # every image here is small enough to fit any pinpoint whole: the tie-break picks 336x672, a non-square grid
    assert tokens["nonsquare_grid_share"] == 1.0 and "100% have a non-square anyres grid" in out
    assert rep["model"]["image_layout"] == "paper" and not any("image_layout" in w for w in rep["warnings"])

    # Must show 3: exact search through Qdrant gives the in-memory recall
    q = rep["qdrant"]
    for direction in ("text_to_image", "image_to_text"):
        for k in (1, 5, 10):
            assert q["metrics"][direction][f"R@{k}"] == rep["metrics"][direction][f"R@{k}"]
            assert q["delta"][direction][f"R@{k}"] == 0
    assert q["collection"]["exact"] is True and q["collection"]["points"] in (4, 8)


def test_eval_composed_end_to_end(replica_path, dataset, tmp_path):
    rep = _run(
        replica_path,
        tmp_path,
        "composed",
        "--data",
        str(dataset / "composed.jsonl"),
        "--images",
        str(dataset / "images"),
        "--via-qdrant",
        "--image-layout",
        "llava-next",
    )
    _check_common(rep, "composed", dataset / "composed.jsonl")
    assert rep["model"]["image_layout"] == "llava-next"
    assert any("image_layout 'llava-next'" in w and "4.41.2" in w for w in rep["warnings"])
    assert rep["data"]["counts"] == {"queries": 3, "candidates": 4, "target_is_reference": 0}
    metrics = rep["metrics"]["composed_to_image"]
    assert set(metrics) == {"R@1", "R@5", "R@10", "R@50", "median_rank"}
    # 4 candidates minus the excluded reference = 3: every target is within the top 3
    assert metrics["R@5"] == 100.0 and metrics["R@50"] == 100.0
    assert rep["image_tokens"]["images"] == 4
    assert rep["qdrant"]["metrics"]["composed_to_image"] == {k: v for k, v in metrics.items() if k.startswith("R@")}
    assert any("e5v-cirr-target" in n for n in rep["notes"])
    # the exact strings the model got, as repr (written out from issue 27, not derived from the code)
    assert rep["prompts"]["query"] == (
        '\'<|start_header_id|>user<|end_header_id|>\\n\\n<image>Modify this image with "{text}", desribe modified '
        "image in one word:<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n \\n'"
    )
    assert rep["prompts"]["candidates"] == (
        "'<|start_header_id|>user<|end_header_id|>\\n\\n<image>\\nSummary above image in one word: <|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\\n\\n \\n'"
    )


def test_eval_sts_end_to_end(replica_path, encoder, dataset, tmp_path):
    rep = _run(replica_path, tmp_path, "sts", "--data", str(dataset / "sts.tsv"))
    _check_common(rep, "sts", dataset / "sts.tsv")
    assert rep["data"]["counts"]["pairs"] == 5
    assert rep["image_tokens"] is None and rep["qdrant"] is None
    # independent Spearman: the data have no ties, so 1 - 6Σd²/(n(n²-1)) applies
    lines = (dataset / "sts.tsv").read_text().splitlines()[1:]
    s1, s2, gold = zip(*(line.split("\t") for line in lines), strict=True)
    cos = (encoder.embed_texts(list(s1)) * encoder.embed_texts(list(s2))).sum(1)
    d = np.argsort(np.argsort(cos)) - np.argsort(np.argsort(np.array(gold, dtype=float)))
    expected = 100 * (1 - 6 * (d**2).sum() / (5 * (25 - 1)))
    assert rep["metrics"]["sts"]["spearman"] == pytest.approx(expected)


def test_eval_triplets_end_to_end(replica_path, dataset, tmp_path):
    rep = _run(replica_path, tmp_path, "triplets", "--data", str(dataset / "triplets.jsonl"), "--via-qdrant")
    _check_common(rep, "triplets", dataset / "triplets.jsonl")
    assert rep["data"]["counts"] == {"triplets": 4, "pool": 8, "with_negative": 4}
    metrics = rep["metrics"]["anchor_to_positive"]
    assert {"R@1", "triplet_accuracy"} <= set(metrics)
    assert rep["qdrant"]["metrics"]["anchor_to_positive"]["R@1"] == metrics["R@1"]


def test_eval_limit_and_bad_path(replica_path, dataset, tmp_path, capsys):
    rep = _run(replica_path, tmp_path, "triplets", "--data", str(dataset / "triplets.jsonl"), "--limit", "2")
    assert rep["data"]["counts"]["triplets"] == 2
    assert any("--limit" in w for w in rep["warnings"])
    # a missing image is reported (exit 2) before any model is loaded
    code = main(
        [
            "eval",
            "retrieval",
            "--images",
            str(tmp_path),
            "--captions",
            str(dataset / "karpathy.json"),
            "--model",
            str(tmp_path / "no-model"),
        ]
    )
    assert code == 2
    assert "img0.png" in capsys.readouterr().err
    assert main(["eval"]) == 2
