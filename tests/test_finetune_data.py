"""Training-data loading and validation: good layouts parse, bad files fail with line numbers and nothing trains."""

from __future__ import annotations

import json

import pytest

from e5v_qdrant.cli import main
from e5v_qdrant.evaluate import file_sha256
from e5v_qdrant.finetune import FinetuneDataError, load_triplets


def _write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def _lines(problems):
    return [line for line, _ in problems]


def test_jsonl_triplets_and_pairs(tmp_path):
    rows = [
        {"anchor": "a dog", "positive": "a puppy", "negative": "a car"},
        {"anchor": "tea", "positive": "chai", "negative": "oil"},
    ]
    f = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_triplets(f)
    assert data.format == "jsonl" and data.has_negatives and len(data) == 2
    assert (data.rows[1].anchor, data.rows[1].positive, data.rows[1].negative, data.rows[1].line) == (
        "tea",
        "chai",
        "oil",
        2,
    )
    assert data.sha256 == file_sha256(f)
    pairs = _write(tmp_path / "p.jsonl", '{"sent0": "x", "sent1": "y"}\n{"anchor": "u", "positive": "v"}')
    data = load_triplets(pairs)
    assert not data.has_negatives and [r.positive for r in data.rows] == ["y", "v"]


def test_simcse_csv_with_quoted_commas_and_crlf(tmp_path):
    text = (
        'sent0,sent1,hard_neg\r\n"A man, smiling",A person smiles,Nobody smiles\r\nTwo dogs,Animals,"A cat, alone"\r\n'
    )
    data = load_triplets(_write(tmp_path / "nli.csv", text))
    assert data.format == "csv" and len(data) == 2
    assert data.rows[0].anchor == "A man, smiling" and data.rows[1].negative == "A cat, alone"
    pairs = load_triplets(_write(tmp_path / "pairs.csv", "anchor,positive\nq1,d1\nq2,d2\n"))
    assert not pairs.has_negatives and pairs.rows[1].line == 3


def test_missing_column_names_line(tmp_path):
    f = _write(
        tmp_path / "t.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n{"anchor": "e", "positive": "f"}\n'
    )
    with pytest.raises(FinetuneDataError) as info:
        load_triplets(f)
    assert _lines(info.value.problems) == [2]
    assert "line 2" in str(info.value) and "positive" in str(info.value) and str(f) in str(info.value)
    csv = _write(tmp_path / "t.csv", "sent0,hard_neg\nx,y\n")
    with pytest.raises(FinetuneDataError, match=r"line 1: header .* lacks column 'positive'"):
        load_triplets(csv)


def test_empty_lines_and_empty_values(tmp_path):
    f = _write(
        tmp_path / "t.jsonl",
        '{"anchor": "a", "positive": "b"}\n\n{"anchor": "  ", "positive": "d"}\n   \n{"anchor": "e", "positive": "f"}\n',
    )
    with pytest.raises(FinetuneDataError) as info:
        load_triplets(f)
    assert _lines(info.value.problems) == [2, 3, 4]
    assert "line 2: empty line" in str(info.value) and "line 3: empty value in column 'anchor'" in str(info.value)
    csv = _write(tmp_path / "t.csv", "sent0,sent1,hard_neg\na,b,c\n\nd,,f\n")
    with pytest.raises(FinetuneDataError) as info:
        load_triplets(csv)
    assert _lines(info.value.problems) == [3, 4]


def test_non_utf8_names_line(tmp_path):
    f = _write(tmp_path / "t.jsonl", b'{"anchor": "a", "positive": "b"}\n{"anchor": "caf\xe9", "positive": "d"}\n')
    with pytest.raises(FinetuneDataError, match=r"line 2: not valid UTF-8") as info:
        load_triplets(f)
    assert _lines(info.value.problems) == [2]
    latin = _write(tmp_path / "t.csv", "sent0,sent1\nok,fine\nna\xefve,x\n".encode("latin-1"))
    with pytest.raises(FinetuneDataError, match=r"line 3: not valid UTF-8"):
        load_triplets(latin)


def test_empty_file_bad_json_and_mixed_negatives(tmp_path):
    for content in ("", "\n\n  \n"):
        with pytest.raises(FinetuneDataError, match="the file is empty"):
            load_triplets(_write(tmp_path / "empty.jsonl", content))
    with pytest.raises(FinetuneDataError, match="cannot read the file"):
        load_triplets(tmp_path / "missing.jsonl")
    bad = _write(
        tmp_path / "b.jsonl",
        '{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive": \n["x"]\n{"anchor": 3, "positive": "b"}\n',
    )
    with pytest.raises(FinetuneDataError) as info:
        load_triplets(bad)
    assert _lines(info.value.problems) == [2, 3, 4]
    assert (
        "bad JSON" in str(info.value)
        and "expected a JSON object" in str(info.value)
        and "must be a string" in str(info.value)
    )
    mixed = _write(
        tmp_path / "m.jsonl", '{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "d", "positive": "e"}\n'
    )
    with pytest.raises(FinetuneDataError, match=r"line 2: row lacks a negative"):
        load_triplets(mixed)


def test_cli_refuses_bad_file_before_training(tmp_path, capsys):
    bad = _write(tmp_path / "t.jsonl", '{"anchor": "a", "positive": "b"}\n{"positive": "d"}\n')
    out = tmp_path / "out"
    code = main(["finetune", "--train", str(bad), "--output", str(out), "--model", str(tmp_path / "no-model")])
    assert code == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "anchor" in err
    assert not out.exists()  # nothing was trained or written
