"""The text summary `e5v-qdrant ingest` prints: whole reasons (cause and remedy), short lines, paths relative to the
ingested folder, and per-type counts of what is stored."""

from __future__ import annotations

import json
from collections import Counter

from helpers import make_corpus, points_of, run_ingest

from e5v_qdrant.pipeline import IngestReport
from e5v_qdrant.sources import SkippedInput

REMEDY = "PDF support needs pypdf: pip install 'e5v-qdrant[pdf]'"
CAUSE = "cannot parse PDF: PdfStreamError: Stream has ended unexpectedly while reading the cross-reference table"


def test_summary_keeps_each_reason_whole_on_short_lines_with_relative_paths(tmp_path):
    root = tmp_path / "a-rather-long-folder-name-for-the-books" / "mdbook-html-output"
    root.mkdir(parents=True)
    deep = root / "chapter-01-getting-started" / "appendix"
    skipped = [SkippedInput(str(deep / f"manual-{i}.pdf"), REMEDY) for i in range(5)]
    skipped += [SkippedInput(str(deep / "broken.pdf"), CAUSE)]
    skipped += [SkippedInput(str(root / "theme" / "fonts.css"), "unsupported file type .css", "ignored")]
    report = IngestReport(collection="docs", roots=[str(root)], skipped_inputs=skipped, skipped=len(skipped))
    summary = report.summary()
    lines = summary.splitlines()
    assert all(len(line) <= 100 or line.strip() == str(root) for line in lines), max(lines, key=len)  # paths stay whole
    flat = " ".join(summary.split())
    assert f"{REMEDY} (5 files): chapter-01-getting-started/appendix/manual-0.pdf" in flat
    assert f"{CAUSE} (1 file): chapter-01-getting-started/appendix/broken.pdf" in flat
    assert "unsupported file type .css (1 file): theme/fonts.css" in flat
    assert f"paths below are relative to {root}" in flat
    assert sum(str(root) in line for line in lines) == 1  # only that header names the folder
    assert report.to_dict()["skipped_inputs"][0]["source"] == str(deep / "manual-0.pdf")  # the report stays absolute


def test_summary_counts_what_is_stored_per_file_type(tmp_path, replica_path, capsys):
    root = make_corpus(tmp_path / "corpus")  # 3 text files (txt, md, html) and 3 images
    report_file = tmp_path / "report.json"
    assert run_ingest([root], tmp_path / "qd", replica_path, "--report", str(report_file)) == 0
    out = capsys.readouterr().out
    chunks = Counter(p["modality"] for p in points_of(tmp_path / "qd").values())
    expected = f"stored (new, replaced or unchanged): image 3 files, text 3 files ({chunks['text']} chunks)"
    assert expected in out
    assert json.loads(report_file.read_text())["by_type"] == {
        "text": {"files": 3, "points": chunks["text"]},
        "image": {"files": 3, "points": 3},
    }
    # a re-run changes nothing and still says what the collection holds from these paths
    assert run_ingest([root], tmp_path / "qd", replica_path) == 0
    assert expected in capsys.readouterr().out
