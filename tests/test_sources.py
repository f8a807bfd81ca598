"""sources.py: discovery with bad inputs listed, reading/decoding decisions, ids and LlamaIndex payloads."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from llama_index.core.schema import ImageNode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from e5v_qdrant.chunking import Chunker
from e5v_qdrant.sources import Document, SkippedInput, SourceFile, discover, html_to_text, read_source
from e5v_qdrant.store import ID_NAMESPACE
from e5v_qdrant.testing import draw_image


def _expected_id(source: str, index: int, data: bytes) -> str:
    # the documented id scheme, computed independently: UUIDv5(namespace, "source\nindex\nsha256")
    return str(uuid.uuid5(ID_NAMESPACE, f"{source}\n{index}\n{hashlib.sha256(data).hexdigest()}"))


def test_discover_lists_supported_files_sorted_and_reports_bad_entries(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    (tmp_path / "notes.xyz").write_text("?")
    (tmp_path / ".hidden.txt").write_text("hidden")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")  # folder symlink back to an ancestor
    os.symlink(tmp_path / "l2.txt", tmp_path / "l1.txt")  # file symlink loop
    os.symlink(tmp_path / "l1.txt", tmp_path / "l2.txt")
    os.symlink(tmp_path / "gone.txt", tmp_path / "dangling.txt")
    os.mkfifo(tmp_path / "pipe.txt")

    entries = list(discover([tmp_path]))
    files = [e for e in entries if isinstance(e, SourceFile)]
    skipped = {os.path.basename(e.source): e.reason for e in entries if isinstance(e, SkippedInput)}

    assert [os.path.relpath(f.source, tmp_path) for f in files] == ["a.md", "b.txt", os.path.join("sub", "c.png")]
    assert [f.kind for f in files] == ["text", "text", "image"]
    assert "unsupported file type .xyz" in skipped["notes.xyz"]
    assert "symlink loop" in skipped["loop"]
    assert "symlink loop" in skipped["l1.txt"] and "symlink loop" in skipped["l2.txt"]
    assert "no such file" in skipped["dangling.txt"]
    assert "not a regular file" in skipped["pipe.txt"]
    assert ".hidden.txt" not in skipped and all(".hidden" not in f.source for f in files)


def test_discover_single_files_and_deduplicates(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    entries = list(discover([f, tmp_path, str(f)]))
    assert [e.source for e in entries] == [str(f)]


def test_html_to_text_drops_tags_scripts_and_styles():
    html = "<html><head><title>T</title><style>p{color:red}</style></head><body><h1>Head</h1><p>Hello <b>bold</b> &amp; more</p><script>alert(1)</script></body></html>"
    text = html_to_text(html)
    assert text.splitlines() == ["Head", "Hello bold & more"]
    assert "alert" not in text and "color" not in text


def test_text_chunks_ids_and_payload_round_trip_as_textnode(tmp_path):
    path = tmp_path / "doc.txt"
    body = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))
    path.write_text(body)
    doc = read_source(SourceFile(str(path), "text"), Chunker(chunk_size=64, chunk_overlap=8))
    assert isinstance(doc, Document) and len(doc.items) > 3
    for index, item in enumerate(doc.items):
        assert item.modality == "text"
        assert item.id == _expected_id(str(path), index, item.content.encode())
        # the chunk really comes from the document
        node = metadata_dict_to_node(item.payload)
        assert isinstance(node, TextNode) and node.id_ == item.id and node.text == item.content
        assert item.content in body
        assert node.ref_doc_id == item.payload["ref_doc_id"] != "None"
        assert {k: item.payload[k] for k in ("modality", "source", "chunk_index")} == {
            "modality": "text",
            "source": str(path),
            "chunk_index": index,
        }
        assert item.payload["content_hash"] == hashlib.sha256(item.content.encode()).hexdigest()
    # all text is covered, nothing invented
    words = set(body.split())
    assert set(" ".join(i.content for i in doc.items).split()) == words
    # deterministic: a second read gives identical ids and payloads
    again = read_source(SourceFile(str(path), "text"), Chunker(chunk_size=64, chunk_overlap=8))
    assert [(i.id, i.payload) for i in again.items] == [(i.id, i.payload) for i in doc.items]


def test_image_item_round_trips_as_imagenode(tmp_path):
    path = tmp_path / "pic.png"
    draw_image(40, 30, 3).save(path)
    doc = read_source(SourceFile(str(path), "image"), Chunker())
    (item,) = doc.items
    assert item.id == _expected_id(str(path), 0, path.read_bytes())
    node = metadata_dict_to_node(item.payload)
    assert isinstance(node, ImageNode) and node.image_path == str(path) and node.id_ == item.id
    assert item.payload["modality"] == "image" and item.content == path.read_bytes()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"   \n\t ", "empty document"),
        ("zero.txt", b"", "empty document"),
        ("binary.txt", b"abc\x00def", "binary content"),
        ("zero.png", b"", "zero bytes"),
    ],
)
def test_bad_documents_are_skipped_with_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    kind = "image" if name.endswith(".png") else "text"
    result = read_source(SourceFile(str(path), kind), Chunker())
    assert isinstance(result, SkippedInput) and reason in result.reason and result.source == str(path)


def test_non_utf8_text_is_decoded_with_replacement_and_warned(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("latin-1"))
    doc = read_source(SourceFile(str(path), "text"), Chunker())
    assert isinstance(doc, Document)
    assert doc.items[0].content == "Caf\ufffd cr\ufffdme br\ufffdl\ufffde"
    assert doc.warnings and "4 undecodable" in doc.warnings[0]


def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, written by hand (no PDF library involved)."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_text_is_extracted_and_chunked(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(_minimal_pdf("Quarterly invoices were charged twice"))
    doc = read_source(SourceFile(str(path), "pdf"), Chunker())
    assert isinstance(doc, Document)
    assert "Quarterly invoices were charged twice" in doc.items[0].content
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really a pdf")
    skipped = read_source(SourceFile(str(broken), "pdf"), Chunker())
    assert isinstance(skipped, SkippedInput) and skipped.source.endswith("broken.pdf")


def test_pdf_without_pypdf_is_skipped_with_install_hint(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if pypdf were missing (a broken install)
    path = tmp_path / "doc.pdf"
    path.write_bytes(_minimal_pdf("hello"))
    result = read_source(SourceFile(str(path), "pdf"), Chunker())
    assert isinstance(result, SkippedInput) and "pip install pypdf" in result.reason
