"""PDF pages as images (`--pdf-pages`): scanned PDFs give page-image points, text layers give chunks with pages."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

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


def _base_install(pyproject: Path) -> set[str]:
    """Distributions the plain ``pip install e5v-qdrant`` installs: the base dependencies in ``pyproject`` and,
    recursively, what their installed metadata requires (extras only where a requirement asks for them)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [(Requirement(r), "") for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    found: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in found:
            continue
        found |= {name, key}
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(r), e) for r in requires for e in ("", *req.extras)]
    return {name for name in found if "[" not in name}


def _modules_outside(base: set[str]) -> set[str]:
    """Module names (``a``, ``a.b``) that only distributions outside ``base`` provide, from their installed files."""
    from packaging.utils import canonicalize_name

    provided: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        for file in dist.files or ():
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] == "..":
                continue
            stem = parts[-1].partition(".")[0] if parts[-1].endswith((".py", ".so", ".pyd")) else None
            if stem is None:
                continue
            module = ".".join(parts[:-1] if stem == "__init__" else (*parts[:-1], stem))
            provided.setdefault(module, set()).add(name)
    return {module for module, owners in provided.items() if module and not owners & base}


def test_a_plain_install_reads_and_renders_pdfs(tmp_path):
    """Reading a PDF (text layer and page images) works with every module that only a non-base distribution
    provides made unimportable in a fresh interpreter: PDFs work after the Quick start's ``pip install -e .``."""
    write_text_pdf(tmp_path / "book.pdf")
    hidden = tmp_path / "hidden.json"
    base = _base_install(Path(__file__).parents[1] / "pyproject.toml") | {"e5v-qdrant"}
    hidden.write_text(json.dumps(sorted(_modules_outside(base))))
    script = textwrap.dedent(
        f"""
        import json, sys
        hidden = set(json.load(open({str(hidden)!r})))

        class Hide:  # as if the distributions outside the base install were not installed
            def find_spec(self, name, path=None, target=None):
                if name in hidden:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, Hide())
        from e5v_qdrant.sources import Chunker, SourceFile, read_source
        doc = read_source(SourceFile({str(tmp_path / "book.pdf")!r}, "pdf"), Chunker(), pdf_pages="both")
        print(json.dumps([[i.modality, i.payload.get("page")] for i in getattr(doc, "items", [])] or repr(doc)))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    items = json.loads(run.stdout)
    assert items == [["text", 1], ["text", 2], ["text", 3], ["image", 1], ["image", 2], ["image", 3]], items


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
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # as if pypdfium2 were missing (a broken install)
    skipped = read_source(SourceFile(str(path), "pdf"), Chunker())
    assert isinstance(skipped, SkippedInput) and "pip install pypdfium2" in skipped.reason


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
