"""Evaluation metrics on hand-built score matrices (answers worked out by hand here), readers, and Qdrant parity."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from e5v_qdrant.errors import E5VInputError
from e5v_qdrant.evaluate import (
    MISS,
    average_ranks,
    median_rank,
    qdrant_ranks,
    ranks_from_scores,
    read_composed,
    read_retrieval,
    read_sts,
    read_triplets,
    recall_at_k,
    retrieval_ranks,
    spearman,
)
from e5v_qdrant.testing import draw_image


# ------------------------------------------------------------------ ranks and recall
def test_single_target_ranks_with_pessimistic_tie():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 0 is the top score → rank 0
            [0.2, 0.8, 0.8, 0.1],  # target 2 ties with non-relevant 1 → pessimistic: rank 1
            [0.4, 0.6, 0.3, 0.7],  # target 0 is beaten by 1 (0.6) and 3 (0.7) → rank 2
        ]
    )
    ranks = ranks_from_scores(scores, [[0], [2], [0]])
    assert ranks.tolist() == [0, 1, 2]
    assert recall_at_k(ranks, [1, 2, 3]) == {"R@1": pytest.approx(100 / 3), "R@2": pytest.approx(200 / 3), "R@3": 100.0}


def test_tie_policy_is_pessimistic_whatever_the_candidate_order():
    # The tied non-relevant candidate comes after the target here (index order would put the target first).
    scores = np.array([[0.5, 0.5, 0.1]])
    assert ranks_from_scores(scores, [[0]]).tolist() == [1]
    assert ranks_from_scores(scores[:, ::-1], [[2]]).tolist() == [1]
    assert recall_at_k(ranks_from_scores(scores, [[0]]), [1]) == {"R@1": 0.0}


def test_ties_between_relevant_candidates_do_not_hurt():
    # Relevant 0 and 1 tie at 0.7; only the non-relevant 2 (also 0.7) counts against them.
    scores = np.array([[0.7, 0.7, 0.7, 0.2]])
    assert ranks_from_scores(scores, [[0, 1]]).tolist() == [1]


def test_multi_caption_image_found_by_its_best_caption():
    # Image query, captions 1 and 3 are its own. Best own caption: 3 (0.45); captions 0 (0.5) and 2 (0.9) beat it.
    scores = np.array([[0.5, 0.4, 0.9, 0.45, 0.1]])
    ranks = ranks_from_scores(scores, [[1, 3]])
    assert ranks.tolist() == [2]
    assert recall_at_k(ranks, [1, 2, 3]) == {"R@1": 0.0, "R@2": 0.0, "R@3": 100.0}


def test_clip_style_both_directions_by_hand():
    # 4 captions × 2 images; captions 0, 1 describe image 0, captions 2, 3 image 1.
    s = np.array([[0.9, 0.2], [0.3, 0.6], [0.5, 0.5], [0.1, 0.7]])
    caption_image = [0, 0, 1, 1]
    t2i = ranks_from_scores(s, [[i] for i in caption_image])
    # c0 rank 0; c1: image 1 (0.6) beats image 0 (0.3) → 1; c2: tie 0.5/0.5 → 1 (pessimistic); c3 rank 0
    assert t2i.tolist() == [0, 1, 1, 0]
    assert recall_at_k(t2i, [1, 2]) == {"R@1": 50.0, "R@2": 100.0}
    assert median_rank(t2i) == 1.5
    i2t = ranks_from_scores(s.T, [[0, 1], [2, 3]])
    # image 0: best own caption c0 0.9 is the top → 0; image 1: best own c3 0.7 is the top of [0.2, 0.6, 0.5, 0.7] → 0
    assert i2t.tolist() == [0, 0]
    assert recall_at_k(i2t, [1]) == {"R@1": 100.0}


def test_excluded_reference_is_not_a_competitor_and_excluded_target_is_a_miss():
    scores = np.array([[0.9, 0.8, 0.85, 0.1]])  # candidate 0 is the query's own reference image
    assert ranks_from_scores(scores, [[1]]).tolist() == [2]
    assert ranks_from_scores(scores, [[1]], [[0]]).tolist() == [1]
    missed = ranks_from_scores(scores, [[0]], [[0]])
    assert missed.tolist() == [MISS]
    assert recall_at_k(missed, [1, 4]) == {"R@1": 0.0, "R@4": 0.0}
    assert median_rank(missed) is None


def test_chunked_ranks_equal_unchunked():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(37, 8)), rng.normal(size=(11, 8))
    rel = [[int(i)] for i in rng.integers(0, 11, 37)]
    full = ranks_from_scores(q @ c.T, rel)
    assert retrieval_ranks(q, c, rel, chunk=5).tolist() == full.tolist()


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(E5VInputError, match="out of range"):
        ranks_from_scores(np.zeros((1, 2)), [[2]])
    with pytest.raises(E5VInputError, match="one list per query"):
        ranks_from_scores(np.zeros((2, 2)), [[0]])
    with pytest.raises(E5VInputError, match="NaN"):
        ranks_from_scores(np.array([[np.nan, 0.0]]), [[0]])


# ------------------------------------------------------------------ correlations
def test_average_ranks_share_ties():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert average_ranks(np.array([2.0, 2.0, 2.0])).tolist() == [2.0, 2.0, 2.0]


def test_spearman_with_ties_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([5.0, 6.0, 7.0, 8.0, 7.0])
    # ranks(y) = [1, 2, 3.5, 5, 3.5]; centred: dx = [-2,-1,0,1,2], dy = [-2,-1,0.5,2,0.5]
    # Σdx·dy = 4+1+0+2+1 = 8, Σdx² = 10, Σdy² = 9.5 → ρ = 8 / √95
    assert spearman(x, y) == pytest.approx(8 / math.sqrt(95))
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)  # monotone, non-linear → exactly −1
    with pytest.raises(E5VInputError, match="constant"):
        spearman(x, np.ones(5))


# ------------------------------------------------------------------ Qdrant parity (pure vectors)
def test_qdrant_exact_search_ranks_equal_in_memory_ranks():
    rng = np.random.default_rng(1)
    cands = rng.normal(size=(40, 16)).astype(np.float32)
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    relevant = [sorted({int(i) for i in rng.integers(0, 40, rng.integers(1, 4))}) for _ in range(25)]
    exclude = [[int(rng.integers(0, 40))] if q % 3 == 0 else None for q in range(25)]
    exclude[0] = [relevant[0][0]]  # one query whose (first) relevant candidate is excluded
    limit = 10
    memory = retrieval_ranks(queries, cands, relevant, exclude)
    qdrant, facts = qdrant_ranks(queries, cands, relevant, exclude, limit=limit)
    expected = np.where(memory < limit, memory, MISS)
    assert qdrant.tolist() == expected.tolist()
    assert recall_at_k(qdrant, [1, 5, 10]) == recall_at_k(memory, [1, 5, 10])
    assert 0 < recall_at_k(memory, [5])["R@5"] < 100  # the data exercise both hits and misses
    assert facts["exact"] is True and facts["points"] == 40


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a live Qdrant server at QDRANT_URL")
def test_qdrant_server_exact_search_equals_in_memory():
    from e5v_qdrant.config import StoreConfig

    rng = np.random.default_rng(2)
    cands = rng.normal(size=(30, 16)).astype(np.float32)
    queries = rng.normal(size=(12, 16)).astype(np.float32)
    cands /= np.linalg.norm(cands, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    relevant = [[int(i)] for i in rng.integers(0, 30, 12)]
    memory = retrieval_ranks(queries, cands, relevant)
    ranks, facts = qdrant_ranks(
        queries, cands, relevant, limit=10, store=StoreConfig(qdrant_url=os.environ["QDRANT_URL"])
    )
    assert ranks.tolist() == np.where(memory < 10, memory, MISS).tolist()
    assert facts["location"] == os.environ["QDRANT_URL"]


# ------------------------------------------------------------------ readers
@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "val2014").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "val2014/c.png"]):
        draw_image(40 + 8 * i, 32, seed=i).save(folder / name)
    return folder


def test_read_karpathy_json_filters_split_and_uses_filepath(image_dir, tmp_path):
    doc = {
        "dataset": "coco",
        "images": [
            {"filename": "a.png", "split": "test", "sentences": [{"raw": "one"}, {"raw": "two"}]},
            {"filename": "b.png", "split": "train", "sentences": [{"raw": "three"}]},
            {"filepath": "val2014", "filename": "c.png", "split": "test", "sentences": [{"raw": "four"}]},
        ],
    }
    path = tmp_path / "karpathy.json"
    path.write_text(json.dumps(doc))
    data = read_retrieval(path, image_dir)
    assert [p.rsplit("/", 1)[-1] for p in data.images] == ["a.png", "c.png"]
    assert data.images[1].endswith("val2014/c.png")
    assert data.captions == ["one", "two", "four"] and data.caption_image == [0, 0, 1]
    assert data.dataset == "coco" and data.split == "test"
    assert len(read_retrieval(path, image_dir, split="all").images) == 3
    assert len(read_retrieval(path, image_dir, split="all", limit=1).images) == 1
    with pytest.raises(E5VInputError, match="split 'val'"):
        read_retrieval(path, image_dir, split="val")


def test_read_jsonl_retrieval_and_missing_image(image_dir, tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text('{"image": "a.png", "captions": ["x", "y"]}\n\n{"image": "b.png", "captions": ["z"]}\n')
    data = read_retrieval(path, image_dir)
    assert data.caption_image == [0, 0, 1] and data.dataset is None
    path.write_text('{"image": "nope.png", "captions": ["x"]}\n')
    with pytest.raises(E5VInputError, match=r"caps.jsonl:1.*nope.png.*--images"):
        read_retrieval(path, image_dir)


def test_read_composed_default_candidates_and_candidate_file(image_dir, tmp_path):
    path = image_dir / "q.jsonl"
    path.write_text(
        '{"reference": "a.png", "text": "make it red", "target": "b.png"}\n'
        '{"reference": "b.png", "caption": "add a dog", "target_hard": "val2014/c.png"}\n'
    )
    data = read_composed(path)  # relative to the data file's folder
    assert [p.rsplit("/", 1)[-1] for p in data.candidates] == ["a.png", "b.png", "c.png"]
    assert data.texts == ["make it red", "add a dog"]
    # a candidate folder spelled differently from --images still matches references and targets by path
    spelled = tmp_path / "x" / ".." / "imgs"
    (tmp_path / "x").mkdir()
    by_folder = read_composed(path, image_dir, candidates=spelled)
    assert set(by_folder.references) | set(by_folder.targets) <= set(by_folder.candidates)
    assert len(by_folder.candidates) == 3
    cand = tmp_path / "cands.txt"
    cand.write_text("b.png\n")
    with pytest.raises(E5VInputError, match="not among the candidates"):
        read_composed(path, image_dir, candidates=cand)


def test_read_sts_tsv_with_and_without_header_and_jsonl(tmp_path):
    with_header = tmp_path / "sts.tsv"
    with_header.write_text(
        'genre\tscore\tsentence1\tsentence2\nnews\t4.5\tA cat.\tA kitten.\nnews\t0\tA "car".\tSoup.\n'
    )
    data = read_sts(with_header)
    assert data.sentences1 == ["A cat.", 'A "car".'] and data.scores == [4.5, 0.0]
    plain = tmp_path / "plain.tsv"
    plain.write_text("a\tb\t1\nc\td\t2\n")
    assert read_sts(plain).scores == [1.0, 2.0]
    js = tmp_path / "sts.jsonl"
    js.write_text(
        '{"sentence1": "a", "sentence2": "b", "score": 3}\n{"sentence1": "c", "sentence2": "d", "score": "x"}\n'
    )
    with pytest.raises(E5VInputError, match=r"sts.jsonl:2.*not a number"):
        read_sts(js)


def test_read_triplets_jsonl_and_csv(tmp_path):
    js = tmp_path / "t.jsonl"
    js.write_text(
        '{"anchor": "a", "positive": "p", "negative": "n"}\n{"anchor": "b", "positive": "q", "negative": "m"}\n'
    )
    data = read_triplets(js)
    assert data.anchors == ["a", "b"] and data.negatives == ["n", "m"]
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("sent0,sent1,hard_neg\na,p,n\nb,q,m\n")
    assert read_triplets(csv_file).positives == ["p", "q"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "a"}\n')
    with pytest.raises(E5VInputError):
        read_triplets(bad)


# ------------------------------------------------------------------ diagnosis
def test_diagnose_flags_settings_that_move_the_numbers(encoder):
    from dataclasses import replace
    from types import SimpleNamespace

    from e5v_qdrant.evaluate import diagnose
    from e5v_qdrant.prompts import get_prompts

    def facts(task, **changes):
        cfg = replace(encoder.config, **changes)
        view = SimpleNamespace(
            config=cfg,
            prompts=get_prompts(cfg.prompts, query=cfg.query_prompt),
            torch_dtype=encoder.torch_dtype,
            tokenizer=encoder.tokenizer,
        )
        return diagnose(view, task)

    warnings, _ = facts("retrieval", model="royokong/e5-v", revision=None, prompts="e5v-typofix", max_text_tokens=32)
    text = "\n".join(warnings)
    assert "no revision pin" in text and "'e5v-typofix'" in text and "truncated to 32" in text
    assert "non-default dtype 'float32'" in text  # the session encoder asks for float32 explicitly
    warnings, _ = facts("retrieval", model="royokong/e5-v", revision="abc123", dtype="auto")
    assert warnings == []
    # the authors' CIRR target prompt is their choice for composed retrieval, not a deviation …
    warnings, notes = facts("composed", prompts="e5v-cirr-target", dtype="auto")
    assert warnings == [] and not any("e5v-cirr-target" in n for n in notes)
    # … but it is one for caption retrieval, and plain prompts for composed get a note pointing at it
    assert any("e5v-cirr-target" in w for w in facts("retrieval", prompts="e5v-cirr-target", dtype="auto")[0])
    assert any("e5v-cirr-target" in n for n in facts("composed", dtype="auto")[1])
