"""Search filters and provenance: --modality, --under, --where, --score-threshold against a brute-force reference."""

from __future__ import annotations

import json
import os

import pytest

from e5v_qdrant.cli import main
from e5v_qdrant.config import IngestConfig, StoreConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.filters import ancestor_folders, build_filter, parse_where
from e5v_qdrant.ingest import ingest
from e5v_qdrant.search import search
from e5v_qdrant.store import QdrantStore
from e5v_qdrant.testing import draw_image

LONG = " ".join(f"Sentence {i} about the harbour, its cranes and the tides of the season." for i in range(12))


def make_tree(root):
    """root/a (notes, a long note, images), root/ab (a sibling whose name starts with 'a'), root/a/deep/x.md."""
    for folder in ("a", "ab", "a/deep"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "a" / "one.txt").write_text("Apples grow in the orchard near the river.\n")
    (root / "a" / "long.txt").write_text(LONG + "\n")
    (root / "a" / "deep" / "x.md").write_text("# Deep\nA note deep in the tree about lighthouses.\n")
    (root / "ab" / "two.txt").write_text("Bananas ripen on the windowsill in summer.\n")
    draw_image(80, 60, seed=1).save(root / "a" / "pic.png")
    draw_image(60, 80, seed=2).save(root / "ab" / "pic2.jpg")
    return root


@pytest.fixture(scope="module")
def tree_store(tmp_path_factory, encoder):
    root = make_tree(tmp_path_factory.mktemp("tree"))
    qd = tmp_path_factory.mktemp("qd")
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        ingest(IngestConfig(collection="docs", paths=[str(root)], chunk_size=32, chunk_overlap=4), encoder, store)
        payloads = {str(r.id): r.payload for r in store.scroll("docs")}
    return root, qd, payloads


def test_ancestor_folders_and_parse_where():
    assert ancestor_folders("/data/a/b/c.txt") == ["/data/a/b", "/data/a", "/data", "/"]
    assert parse_where(["page=2", "file_name=a=b.txt"]) == {"page": "2", "file_name": "a=b.txt"}
    for bad in (["page"], ["=2"]):
        with pytest.raises(E5VConfigError, match="KEY=VALUE"):
            parse_where(bad)
    with pytest.raises(E5VConfigError, match="twice"):
        parse_where(["page=1", "page=2"])
    assert build_filter() is None and build_filter(modality="any", where={}) is None
    with pytest.raises(E5VConfigError, match="modality"):
        build_filter(modality="video")


def _expected(payloads, *, modality=None, under=None, where=None) -> set[str]:
    """Brute force over every stored payload: the ids a filter must return (written without Qdrant filters)."""
    out = set()
    for pid, p in payloads.items():
        if modality and p["modality"] != modality:
            continue
        if under is not None:
            under_abs = os.path.abspath(under)
            if not (p["source"] == under_abs or p["source"].startswith(under_abs + os.sep)):
                continue
        if where and any(k not in p or str(p[k]) != str(v) for k, v in where.items()):
            continue
        out.add(pid)
    return out


@pytest.mark.parametrize(
    "filters",
    [
        {"modality": "image"},
        {"modality": "text"},
        {"under": "a"},  # must not include the sibling folder "ab"
        {"under": "a/deep"},
        {"under": "ab/two.txt"},  # a file: that source only
        {"under": "a", "modality": "image"},
        {"where": {"chunk_index": "1"}},  # "1" matches the integer payload value
        {"where": {"file_name": "one.txt"}},
        {"under": "a", "where": {"chunk_index": "0", "modality": "text"}},
        {"where": {"no_such_field": "1"}},  # a field no point has: nothing, not everything
        {"where": {"file_name": "nope.txt"}},
    ],
)
def test_every_result_satisfies_the_filters_and_none_is_missed(tree_store, encoder, filters):
    root, qd, payloads = tree_store
    if "under" in filters:
        filters = {**filters, "under": str(root / filters["under"])}
    expected = _expected(payloads, **filters)
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        hits = search(store, encoder, "docs", text="harbour apples", top_k=len(payloads) + 5, **filters)
    assert {h.id for h in hits} == expected
    if "no_such_field" in str(filters) or "nope" in str(filters):
        assert hits == []
    else:
        assert hits  # the reference is not trivially empty


def test_score_threshold_keeps_exactly_the_results_at_or_above_it(tree_store, encoder):
    _, qd, payloads = tree_store
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        everything = search(store, encoder, "docs", text="harbour cranes", top_k=len(payloads))
        scores = sorted(h.score for h in everything)
        middle = len(scores) // 2
        assert scores[middle - 1] < scores[middle]
        threshold = (scores[middle - 1] + scores[middle]) / 2  # between two scores: no float ties at the boundary
        kept = search(store, encoder, "docs", text="harbour cranes", top_k=len(payloads), score_threshold=threshold)
    assert {h.id for h in kept} == {h.id for h in everything if h.score >= threshold}
    assert 0 < len(kept) < len(everything)


def test_cli_results_show_provenance_in_text_and_json(tree_store, replica_path, capsys):
    root, qd, payloads = tree_store
    args = ["search", "harbour", "--collection", "docs", "--qdrant-path", str(qd), "--top-k", "50"]
    args += ["--under", str(root / "a"), "--where", "file_name=long.txt", "--device", "cpu", "--dtype", "float32"]
    assert main([*args, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and {h["source"] for h in hits} == {str(root / "a" / "long.txt")}
    assert set(hits[0]) == {"score", "id", "modality", "source", "page", "chunk_index", "text"}
    for h in hits:
        assert h["text"] == json.loads(payloads[h["id"]]["_node_content"])["text"]
        assert h["chunk_index"] == payloads[h["id"]]["chunk_index"] and h["page"] is None
    assert len({h["chunk_index"] for h in hits}) > 1  # the long note has several chunks
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(hits)
    for line, h in zip(lines, hits, strict=True):
        assert line.startswith(f"{h['score']:.4f}  text ") and f"{h['source']}#{h['chunk_index']}" in line
        assert " ".join(h["text"].split())[:40] in line  # the snippet
    assert main(["search", "x", "--collection", "docs", "--qdrant-path", str(qd), "--where", "page"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
