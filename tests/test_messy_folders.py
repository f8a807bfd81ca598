"""A messy real-world folder (issue 19): every file accounted for, the run never stops, re-runs open and load nothing.

The corpus holds a file whose chunking raises (injected), a huge single-line HTML page, gzip text, extensionless text,
an extensionless binary, a symlinked duplicate folder, a real symlink loop, corrupt images and an unsupported type.
"""

from __future__ import annotations

import builtins
import gzip
import json
import os

import pytest
from helpers import COMMON, points_of

from e5v_qdrant import encoder as encoder_module
from e5v_qdrant.cli import main
from e5v_qdrant.config import EncoderConfig, IngestConfig, StoreConfig
from e5v_qdrant.ingest import ingest
from e5v_qdrant.sources import Chunker, SourceFile, read_source
from e5v_qdrant.store import QdrantStore
from e5v_qdrant.testing import draw_image

SENTENCE = "The harbour master counted {i} boats before the storm reached the northern pier."
EXPLODE = "EXPLODING-CHUNKER-MARKER"


def make_messy(root):
    """Write the corpus; returns {relative path: expected class}."""
    (root / "real").mkdir(parents=True)
    (root / "ok.txt").write_text(" ".join(SENTENCE.format(i=i) for i in range(6)))
    (root / "notes.md").write_text("# Notes\n\nThe lighthouse keeper writes a short report every evening.")
    (root / "raises.txt").write_text(f"This file makes the chunker fail: {EXPLODE}.")
    words = " ".join(f"<span>{SENTENCE.format(i=i)}</span>" for i in range(2500))
    (root / "huge.html").write_text(f"<html><body>{words}</body></html>")  # ~220 KB on one line, no block tags
    (root / "changelog.txt.gz").write_bytes(gzip.compress(b"Version 2.1 fixed the anchor winch and the radio."))
    (root / "README").write_text("Read me first: the tide tables are in the second drawer.")
    (root / "blob").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    (root / "data.xyz").write_text("unsupported type")
    (root / "real" / "inner.txt").write_text("A file inside the real folder, reached twice through a link.")
    draw_image(64, 48, seed=7).save(root / "good.png")
    png = root.parent / "source.png"
    draw_image(200, 150, seed=8).save(png)
    (root / "truncated.png").write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    (root / "corrupt.jpg").write_bytes(b"plain text wearing an image suffix " * 8)
    os.symlink(root / "real", root / "sym_dup")  # a duplicate of a folder walked before it (sorted order)
    os.symlink(root, root / "real" / "back")  # a real loop: back to an ancestor
    return {
        "ok.txt": "ingested",
        "notes.md": "ingested",
        "huge.html": "ingested",
        "changelog.txt.gz": "ingested",
        "README": "ingested",
        "real/inner.txt": "ingested",
        "good.png": "ingested",
        "raises.txt": "failed",
        "truncated.png": "failed",
        "corrupt.jpg": "failed",
        "blob": "ignored",
        "data.xyz": "ignored",
        "sym_dup": "duplicate",
        "real/back": "loop",
    }


@pytest.fixture
def exploding_chunker(monkeypatch):
    """Chunking raises for any text holding ``EXPLODE`` (a stand-in for a splitter bug on one odd document)."""
    original = Chunker.split_document

    def split_document(self, text):
        if EXPLODE in text:
            raise RuntimeError("splitter blew up")
        return original(self, text)

    monkeypatch.setattr(Chunker, "split_document", split_document)


@pytest.fixture
def model_loads(monkeypatch, encoder):
    """Counts model loads; each load returns the session's tiny encoder."""
    loads = []

    def load(*args, **kwargs):
        loads.append(kwargs.get("config"))
        return encoder

    monkeypatch.setattr(encoder_module, "E5VEncoder", load)
    return loads


@pytest.fixture
def opened(monkeypatch, tmp_path):
    """Paths under ``tmp_path / 'messy'`` opened through ``open`` (reading a file = opening it)."""
    seen: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(str(tmp_path / "messy")):
            seen.append(os.path.relpath(os.fspath(file), tmp_path / "messy"))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return seen


def _classes(report: dict, root) -> dict[str, str]:
    got = {os.path.relpath(s["source"], root): s["outcome"] for s in report["skipped_inputs"]}
    return got


def _run(root, store, replica_path, **kw):
    config = IngestConfig(collection="docs", paths=[str(root)], **kw)
    return ingest(config, EncoderConfig(model=str(replica_path), device="cpu", dtype="float32"), store)


def test_messy_folder_every_file_accounted_then_rerun_opens_and_loads_nothing(
    tmp_path, replica_path, exploding_chunker, model_loads, opened
):
    root = tmp_path / "messy"
    expected = make_messy(root)
    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd")))
    try:
        report = _run(root, store, replica_path)
        data = report.to_dict()
        stored = {os.path.relpath(p["source"], root) for p in points_of_store(store)}
        classes = {**{path: "ingested" for path in stored}, **_classes(data, root)}
        assert classes == expected
        reasons = {os.path.relpath(s["source"], root): s["reason"] for s in data["skipped_inputs"]}
        assert "RuntimeError" in reasons["raises.txt"] and "splitter blew up" in reasons["raises.txt"]
        assert report.exit_code == 1 and report.model_loaded and len(model_loads) == 1
        counts = data["counts"]
        assert (counts["new"], counts["failed"], counts["ignored"], counts["duplicate"], counts["loop"]) == (
            7,
            3,
            2,
            1,
            1,
        )
        texts = {os.path.relpath(p["source"], root): p for p in points_of_store(store)}
        gz_text = json.loads(texts["changelog.txt.gz"]["_node_content"])["text"]
        assert gz_text == "Version 2.1 fixed the anchor winch and the radio."
        html_chunks = [p for p in points_of_store(store) if p["source"].endswith("huge.html")]
        assert len(html_chunks) > 10  # the one-line page was split, not skipped

        # summary: grouped by reason, counts, a few examples; never one line per file
        summary = report.summary()
        assert "failed (3):" in summary and "ignored (2):" in summary and "duplicate (1):" in summary
        assert len(summary.splitlines()) < 25  # 6 header lines (totals, skips, types, points, path base) + groups

        # re-run: nothing embedded, no model load, only the files that failed or were sniffed as binary are opened
        opened.clear()
        again = _run(root, store, replica_path)
        assert (again.new, again.replaced, again.embedded, again.points_written) == (0, 0, 0, 0)
        assert again.unchanged == 7 and not again.model_loaded and len(model_loads) == 1
        assert sorted(set(opened)) == ["blob", "corrupt.jpg", "raises.txt", "truncated.png"]
        assert again.exit_code == 1

        # a touched file (same content, new mtime) is re-read once, re-stamped, then left alone
        os.utime(root / "ok.txt", ns=(1_000_000_000, 1_000_000_000))
        opened.clear()
        touched = _run(root, store, replica_path)
        assert "ok.txt" in opened and touched.embedded == 0 and touched.unchanged == 7 and not touched.model_loaded
        opened.clear()
        _run(root, store, replica_path)
        assert "ok.txt" not in opened

        # --verify re-reads every file, still embeds nothing
        opened.clear()
        verified = _run(root, store, replica_path, verify=True)
        assert {"ok.txt", "README", "changelog.txt.gz", "good.png"} <= set(opened) and verified.embedded == 0
    finally:
        store.close()


def points_of_store(store: QdrantStore) -> list[dict]:
    return [r.payload for r in store.scroll("docs", with_payload=True)]


def test_cli_exit_0_when_only_unsupported_duplicate_and_loop_entries_are_skipped(tmp_path, replica_path, capsys):
    root = tmp_path / "tidy"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_text("Only good documents here, plus things that are not documents.")
    (root / "script.pl").write_text("print 'not a document type';")
    os.symlink(root / "real", root / "sym_dup")
    os.symlink(root, root / "real" / "back")
    args = [*map(str, [root]), "--collection", "docs", "--qdrant-path", str(tmp_path / "qd")]
    assert main(["ingest", *args, "--model", str(replica_path), *COMMON]) == 0
    out = capsys.readouterr().out
    assert "ignored (1):" in out and "duplicate (1):" in out and "loop (1):" in out
    assert len(points_of(tmp_path / "qd")) == 1


@pytest.mark.parametrize("name", ["a?b", "a/b", "x" * 240, 'q"uote'])
def test_bad_collection_name_exits_2_before_anything_is_loaded_or_created(tmp_path, name, model_loads, capsys):
    (tmp_path / "a.txt").write_text("text")
    qd = tmp_path / "qd"
    with pytest.raises(SystemExit) as exit_:  # a usage error, refused while the command line is parsed
        main(["ingest", str(tmp_path / "a.txt"), "--collection", name, "--qdrant-path", str(qd), "--model", "m"])
    assert exit_.value.code == 2 and not model_loads and not qd.exists()
    assert "collection name" in capsys.readouterr().err


def test_missing_path_exits_2_before_anything_is_loaded_or_created(tmp_path, model_loads, capsys):
    qd = tmp_path / "qd"
    rc = main(["ingest", str(tmp_path / "my_docs"), "--collection", "docs", "--qdrant-path", str(qd), "--model", "m"])
    assert rc == 2 and not model_loads and not qd.exists()
    assert "my_docs" in capsys.readouterr().err


def test_run_that_writes_nothing_creates_no_collection(tmp_path, replica_path, model_loads):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "tool.pl").write_text("print 1;")
    store = QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd")))
    try:
        report = _run(tmp_path / "docs", store, replica_path)
        assert report.exit_code == 0 and not report.model_loaded and not model_loads
        assert store.resolve("docs") is None
    finally:
        store.close()


# ---------------------------------------------------------------- chunking of pathological text
def test_huge_unbroken_text_is_split_in_bounded_pieces_and_covers_every_word():
    text = " ".join(SENTENCE.format(i=i) for i in range(3000))  # ~250 K characters, one line
    chunks, warnings = Chunker(512, 0).split_document(text)
    assert warnings == [] and len(chunks) > 50
    assert " ".join(chunks).split() == text.split()  # no overlap: the chunks are the text, in order


def test_gzip_bz2_xz_and_sniffed_text_are_read(tmp_path):
    import bz2
    import lzma

    body = b"Compressed notes about the ferry timetable."
    for name, data in {
        "a.md.gz": gzip.compress(body),
        "b.txt.bz2": bz2.compress(body),
        "c.xz": lzma.compress(body),
    }.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "TODO").write_bytes(body)
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b not really gzip")
    for name, kind in {"a.md.gz": "text", "b.txt.bz2": "text", "c.xz": "sniff", "TODO": "sniff"}.items():
        compression = next((s for s in (".gz", ".bz2", ".xz") if name.endswith(s)), None)
        doc = read_source(SourceFile(str(tmp_path / name), kind, compression=compression), Chunker())
        assert [i.content for i in doc.items] == [body.decode()], name
    bad = read_source(SourceFile(str(tmp_path / "broken.txt.gz"), "text", compression=".gz"), Chunker())
    assert bad.outcome == "failed" and "cannot decompress" in bad.reason


def test_pillow_warnings_name_the_file(tmp_path, monkeypatch, caplog):
    import logging
    import warnings

    from PIL import ImageOps

    from e5v_qdrant.media import load_image

    original = ImageOps.exif_transpose

    def warn_then_transpose(image, **kw):
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 2.", UserWarning, stacklevel=2)
        return original(image, **kw)

    monkeypatch.setattr(ImageOps, "exif_transpose", warn_then_transpose)  # what Pillow does on a broken EXIF block
    path = tmp_path / "odd-exif.png"
    draw_image(32, 32, seed=1).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes unnamed
        with caplog.at_level(logging.WARNING, logger="e5v_qdrant.media"):
            load_image(str(path))
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(str(path)) and "Corrupt EXIF data" in message


# ---------------------------------------------------------------- symlinks (issue 28)
def _linked_tree(tmp_path):
    """docs/ with a real file, a link to it, links out to a private folder (file and folder), and the private file."""
    docs, private = tmp_path / "docs", tmp_path / "private"
    docs.mkdir()
    private.mkdir()
    (private / "secret.txt").write_text("The vault code is SECRET-TOKEN-4471.")
    (docs / "report.txt").write_text("The quarterly report is ready.")
    os.symlink(private / "secret.txt", docs / "notes.txt")  # a file link out of the folder
    os.symlink(private, docs / "archive")  # a folder link out of the folder
    os.symlink(docs / "report.txt", docs / "a-latest.txt")  # a link inside the folder, sorted before its target
    return docs, private


def test_links_out_of_the_ingested_folder_are_not_followed_and_links_inside_are_taken_once(
    tmp_path, replica_path, capsys
):
    from e5v_qdrant.sources import OUTSIDE_LINK_REASON, discover

    docs, private = _linked_tree(tmp_path)
    found = {os.path.relpath(x.source, docs): x for x in discover([docs])}
    assert {k for k, x in found.items() if isinstance(x, SourceFile)} == {"report.txt"}  # the real path, not the link
    assert {k: x.reason for k, x in found.items() if not isinstance(x, SourceFile)} == {
        "notes.txt": OUTSIDE_LINK_REASON,
        "archive": OUTSIDE_LINK_REASON,
        "a-latest.txt": f"duplicate file: the same file as {docs / 'report.txt'}",
    }
    followed = {
        os.path.relpath(x.source, docs) for x in discover([docs], follow_symlinks=True) if isinstance(x, SourceFile)
    }
    assert followed == {"report.txt", "archive/secret.txt"}  # links in sorted order: notes.txt is the same file
    assert {x.source for x in discover([docs, private]) if isinstance(x, SourceFile)} == {  # both are roots now
        str(docs / "report.txt"),
        str(private / "secret.txt"),
    }

    qd = tmp_path / "qd"
    args = [str(docs), "--collection", "docs", "--qdrant-path", str(qd), "--model", str(replica_path), *COMMON]
    assert main(["ingest", *args]) == 0
    out = capsys.readouterr().out
    assert "outside the ingested folders" in out and "--follow-symlinks" in out
    texts = [json.loads(p["_node_content"])["text"] for p in points_of(qd).values()]
    assert texts and not any("SECRET" in t for t in texts)
    assert main(["ingest", *args, "--follow-symlinks"]) == 0
    assert any("SECRET" in json.loads(p["_node_content"])["text"] for p in points_of(qd).values())
