"""PDF pages as images (`--pdf-pages`): scanned PDFs give page-image points, text layers give chunks with pages."""

from __future__ import annotations

import io
import json
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from e5v_qdrant.cli import main
from e5v_qdrant.config import IngestConfig, StoreConfig
from e5v_qdrant.ingest import ingest
from e5v_qdrant.reingest import reingest
from e5v_qdrant.search import search
from e5v_qdrant.sources import Chunker, SkippedInput, SourceFile, read_source, render_pdf_page
from e5v_qdrant.store import QdrantStore
from e5v_qdrant.testing import draw_image

pytest.importorskip("pypdfium2")
pytest.importorskip("pypdf")

PAGE_TEXTS = [
    "Chapter one: the lighthouse keeper logged every passing ship, its flag and its cargo, in a leather book.",
    "Fig. 2",  # little text: a figure page, also rendered as an image in auto mode
    "Chapter three: winter storms closed the harbour for weeks and the keeper repaired the lamp by candlelight.",
]


def scanned_pages() -> list[Image.Image]:
    return [draw_image(300, 400, seed=seed) for seed in (11, 12, 13)]


def write_scanned_pdf(path) -> list[Image.Image]:
    """An image-only 3-page PDF written by Pillow (no text layer)."""
    pages = scanned_pages()
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=72.0)
    return pages


def write_text_pdf(path, texts=PAGE_TEXTS) -> None:
    """A PDF with one Helvetica text line per page, written by hand (no PDF library involved)."""
    n = len(texts)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    font = 3 + 2 * n
    for i, text in enumerate(texts):
        stream = f"BT /F1 9 Tf 36 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def _cfg(root, **kw) -> IngestConfig:
    return IngestConfig(collection="docs", paths=[str(root)], chunk_size=64, chunk_overlap=4, **kw)


def test_image_only_pdf_gives_page_image_points_and_page_2_finds_page_2(tmp_path, encoder):
    root = tmp_path / "docs"
    root.mkdir()
    pages = write_scanned_pdf(root / "scan.pdf")
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        report = ingest(_cfg(root), encoder, store)
        assert report.skipped_inputs == [] and report.new == 1
        stored = {r.payload["page"]: r.payload for r in store.scroll("docs")}
        assert sorted(stored) == [1, 2, 3]
        assert all(p["modality"] == "image" and p["source"] == str(root / "scan.pdf") for p in stored.values())

        hits = search(store, encoder, "docs", image=pages[1], top_k=3)
        assert [h.page for h in hits][0] == 2 and hits[0].modality == "image"

        # idempotent: a re-run embeds nothing
        again = ingest(_cfg(root), encoder, store)
        assert (again.unchanged, again.embedded, again.points_written) == (1, 0, 0)

        # the rendering really shows the page: downscaled to the original size it matches the picture Pillow wrote
        for number, original in enumerate(pages, start=1):
            rendered = Image.open(io.BytesIO(render_pdf_page(str(root / "scan.pdf"), number))).convert("RGB")
            assert max(rendered.size) == 1008  # long side: the anyres grid's longest pinpoint side
            small = np.asarray(rendered.resize(original.size, Image.BILINEAR), dtype=float)
            assert np.abs(small - np.asarray(original, dtype=float)).mean() < 8


def test_text_layer_pdf_gives_chunks_with_their_page_numbers_in_every_mode(tmp_path):
    path = tmp_path / "book.pdf"
    write_text_pdf(path)
    entry, chunker = SourceFile(str(path), "pdf"), Chunker(64, 4)

    def summary(mode):
        doc = read_source(entry, chunker, pdf_pages=mode)
        return [(it.modality, it.payload["page"], it.content if it.modality == "text" else None) for it in doc.items]

    texts = [("text", n, t) for n, t in enumerate(PAGE_TEXTS, start=1)]
    images = [("image", n, None) for n in (1, 2, 3)]
    assert summary("text") == texts
    assert summary("auto") == texts + [("image", 2, None)]  # only the page with little text is rendered
    assert summary("both") == texts + images
    assert summary("images") == images
    doc = read_source(entry, chunker)
    assert len({it.id for it in doc.items}) == len(doc.items)
    assert [it.payload["chunk_index"] for it in doc.items if it.modality == "text"] == [0, 1, 2]


def test_scanned_pdf_is_never_silently_skipped(tmp_path, monkeypatch):
    path = tmp_path / "scan.pdf"
    write_scanned_pdf(path)
    skipped = read_source(SourceFile(str(path), "pdf"), Chunker(), pdf_pages="text")
    assert isinstance(skipped, SkippedInput) and "--pdf-pages auto" in skipped.reason
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # as if the [pdf] extra were missing
    skipped = read_source(SourceFile(str(path), "pdf"), Chunker())
    assert isinstance(skipped, SkippedInput) and "pypdfium2" in skipped.reason and "e5v-qdrant[pdf]" in skipped.reason


def test_cli_where_page_and_reingest_of_page_images(tmp_path, replica_path, encoder, capsys):
    from e5v_qdrant import E5VEncoder

    root = tmp_path / "docs"
    root.mkdir()
    write_scanned_pdf(root / "scan.pdf")
    write_text_pdf(root / "book.pdf")
    qd = tmp_path / "qd"
    common = ["--collection", "docs", "--qdrant-path", str(qd), "--device", "cpu", "--dtype", "float32"]
    assert main(["ingest", str(root), "--model", str(replica_path), "--pdf-pages", "both", *common]) == 0
    capsys.readouterr()
    assert main(["search", "lighthouse", "--where", "page=2", "--top-k", "20", "--json", *common]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted((h["source"].rsplit("/", 1)[1], h["modality"]) for h in hits) == [
        ("book.pdf", "image"),
        ("book.pdf", "text"),
        ("scan.pdf", "image"),
    ]
    assert all(h["page"] == 2 for h in hits)
    assert main(["search", "lighthouse", "--top-k", "1", *common, "--modality", "text", "--where", "page=3"]) == 0
    assert " p.3#2 " in capsys.readouterr().out  # provenance: source, page, chunk index

    # reingest re-renders page images from the PDFs (checked against their content hash) and keeps every point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = E5VEncoder(replica_path, prompts="e5v-cirr-target", device="cpu", dtype="float32", batch_size=4)
    with QdrantStore(StoreConfig(qdrant_path=str(qd))) as store:
        before = {str(r.id) for r in store.scroll("docs")}
        report = reingest("docs", other, store)
        assert report.swapped and report.problems == []
        assert {str(r.id) for r in store.scroll("docs")} == before
