"""Discover and read files, chunk documents, hash contents → ``Item``s with deterministic ids and LlamaIndex payloads.

Supported inputs:

- text: ``.txt``, ``.md``, ``.markdown``, ``.rst``, ``.html``, ``.htm`` (tags stripped with the standard library's
  ``html.parser``; ``script`` / ``style`` dropped), and ``.pdf`` when ``pypdf`` is installed
  (``pip install 'e5v-qdrant[pdf]'``; otherwise PDFs are skipped with that reason);
- images: ``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.gif`` (first frame), ``.bmp``, ``.tif``, ``.tiff``.

Text is decoded as UTF-8 (a BOM is dropped). Bytes that are not UTF-8 are replaced by U+FFFD and the file is still
ingested, with a warning naming it and the number of bad bytes; a file containing NUL bytes is treated as binary and
skipped. Documents are chunked with LlamaIndex's ``SentenceSplitter``.

Nothing here embeds or writes: ``read_source`` returns a ``Document`` of ``Item``s or a ``SkippedInput`` with a reason.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from .media import IMAGE_SUFFIXES
from .store import document_id, point_id

__all__ = [
    "Item",
    "Document",
    "SkippedInput",
    "SourceFile",
    "Chunker",
    "TEXT_SUFFIXES",
    "PDF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "discover",
    "kind_of",
    "read_source",
    "html_to_text",
    "content_hash",
    "PAYLOAD_KEYS",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm")
PDF_SUFFIXES = (".pdf",)
#: Top-level payload keys this package writes besides LlamaIndex's (``model_fingerprint`` is added by the writer).
PAYLOAD_KEYS = ("modality", "source", "content_hash", "chunk_index")


@dataclass
class Item:
    """One thing to embed and store: a text chunk or an image.

    Attributes:
        id: deterministic point id (``store.point_id`` of source, chunk index, content hash).
        modality: ``"text"`` or ``"image"``.
        content: the chunk text, or the image file's bytes (a decoded ``PIL.Image`` once validated for embedding).
        payload: the point payload (LlamaIndex node fields + ``modality``, ``source``, ``content_hash``,
            ``chunk_index``).
    """

    id: str
    modality: str
    content: Any
    payload: dict[str, Any]


@dataclass
class SkippedInput:
    """An input that was not ingested, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class SourceFile:
    """A discovered file: absolute path (its source URI) and kind (``text``, ``pdf`` or ``image``)."""

    source: str
    kind: str


@dataclass
class Document:
    """A read source file: its items and any warnings (e.g. undecodable bytes replaced)."""

    source: str
    kind: str
    items: list[Item]
    warnings: list[str] = field(default_factory=list)


def content_hash(data: bytes | str) -> str:
    """SHA-256 hex digest of bytes, or of a string's UTF-8 encoding."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def kind_of(path: str) -> str | None:
    """The kind of file ``path`` names by its extension: ``text``, ``pdf``, ``image``, or ``None`` (unsupported)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def _supported_list() -> str:
    return ", ".join(TEXT_SUFFIXES + PDF_SUFFIXES + IMAGE_SUFFIXES)


# ---------------------------------------------------------------- discovery
def discover(
    paths: Iterable[str | os.PathLike], *, follow_symlinks: bool = True
) -> Iterator[SourceFile | SkippedInput]:
    """Walk ``paths`` (files or folders) in sorted order, yielding supported files and skipped inputs with reasons.

    Folders are walked recursively; symlinked folders are followed when ``follow_symlinks`` and a folder reached
    twice through links (a loop) is reported once. Hidden files and folders (``.name``) are ignored silently —
    they are not inputs (``.git``, ``.DS_Store``, the embedded store's own lock file).
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            yield from _walk(path, seen_dirs, seen_files, follow_symlinks)
        else:
            entry = _classify_file(path)
            if isinstance(entry, SourceFile):
                if entry.source in seen_files:
                    continue
                seen_files.add(entry.source)
            yield entry


def _walk(folder: str, seen_dirs, seen_files, follow_symlinks: bool) -> Iterator[SourceFile | SkippedInput]:
    try:
        st = os.stat(folder)
    except OSError as exc:
        yield SkippedInput(folder, _os_reason(exc))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        yield SkippedInput(folder, f"symlink loop: folder already visited as {os.path.realpath(folder)}")
        return
    seen_dirs.add(key)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield SkippedInput(folder, f"cannot list folder: {_os_reason(exc)}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.join(folder, entry.name)
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError as exc:
            yield SkippedInput(path, _os_reason(exc))
            continue
        if is_dir:
            if is_link and not follow_symlinks:
                yield SkippedInput(path, "symlinked folder not followed (follow_symlinks is off)")
                continue
            yield from _walk(path, seen_dirs, seen_files, follow_symlinks)
            continue
        result = _classify_file(path)
        if isinstance(result, SourceFile):
            if result.source in seen_files:
                continue
            seen_files.add(result.source)
        yield result


def _os_reason(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT:
        return "no such file (broken symlink?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read: {exc.strerror or exc}"


def _classify_file(path: str) -> SourceFile | SkippedInput:
    try:
        st = os.stat(path)
    except OSError as exc:
        return SkippedInput(path, _os_reason(exc))
    if stat.S_ISDIR(st.st_mode):
        return SkippedInput(path, "is a folder")
    if not stat.S_ISREG(st.st_mode):
        return SkippedInput(path, "not a regular file (fifo, socket or device); cannot be read as a document")
    kind = kind_of(path)
    if kind is None:
        ext = os.path.splitext(path)[1] or "(no extension)"
        return SkippedInput(path, f"unsupported file type {ext}; supported: {_supported_list()}")
    return SourceFile(path, kind)


# ---------------------------------------------------------------- reading
class _HTMLText(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "pre",
        "table",
        "title",
    }

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document (tags, scripts and styles removed, block elements on their own lines)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _decode_text(data: bytes) -> tuple[str, list[str]]:
    warnings: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
        warnings.append(f"not valid UTF-8: {bad} undecodable byte sequence(s) replaced by U+FFFD")
    return text, warnings


def _read_pdf(path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise _Skip("PDF support needs pypdf: pip install 'e5v-qdrant[pdf]'") from exc
    try:
        reader = PdfReader(path)
        return "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except Exception as exc:  # pypdf raises many types on malformed files
        raise _Skip(f"cannot parse PDF: {type(exc).__name__}: {exc}") from exc


class _Skip(Exception):
    pass


class Chunker:
    """LlamaIndex ``SentenceSplitter`` with fixed settings; the same text always gives the same chunks.

    Args:
        chunk_size: tokens per chunk (tiktoken ``cl100k_base`` counting, LlamaIndex's default tokenizer).
        chunk_overlap: tokens shared by consecutive chunks.
    """

    def __init__(self, chunk_size: int = 512, chunk_overlap: int = 64):
        from llama_index.core.node_parser import SentenceSplitter

        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)

    def split(self, text: str) -> list[str]:
        """Non-blank chunks of ``text`` in order."""
        return [chunk for chunk in self._splitter.split_text(text) if chunk.strip()]


def _item(node_cls, source: str, modality: str, chunk_index: int, content: str | bytes, **node_fields: Any) -> Item:
    """``content`` as an ``Item`` whose payload is what LlamaIndex writes for a ``node_cls`` node with id = point id.

    Metadata (``modality``, ``source``, ``content_hash``, ``chunk_index``, ``file_name``) is excluded from the
    embedding text; the LLM sees ``source`` and ``file_name``. The node's source relationship is the file.
    """
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    digest = content_hash(content)
    pid = point_id(source, chunk_index, digest)
    metadata = {
        "modality": modality,
        "source": source,
        "content_hash": digest,
        "chunk_index": chunk_index,
        "file_name": os.path.basename(source),
    }
    node = node_cls(
        id_=pid,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=[k for k in metadata if k not in ("source", "file_name")],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=document_id(source))},
        **node_fields,
    )
    return Item(pid, modality, content, node_to_metadata_dict(node, remove_text=False, flat_metadata=True))


def text_item(source: str, chunk_index: int, text: str) -> Item:
    """A text chunk as an ``Item`` whose payload LlamaIndex reads back as a ``TextNode`` with id = point id.

    The payload is a pure function of (source, chunk index, chunk text) — no character offsets, which would change
    when an earlier part of the file is edited — so an unchanged chunk keeps its point as is.
    """
    from llama_index.core.schema import TextNode

    return _item(TextNode, source, "text", chunk_index, text, text=text)


def image_item(source: str, data: bytes) -> Item:
    """An image file as an ``Item`` whose payload LlamaIndex reads back as an ``ImageNode`` (``image_path`` = source)."""
    from llama_index.core.schema import ImageNode

    return _item(ImageNode, source, "image", 0, data, image_path=source, image_mimetype=mimetypes.guess_type(source)[0])


def read_source(entry: SourceFile, chunker: Chunker, data: bytes | None = None) -> Document | SkippedInput:
    """Read one discovered file into items (text chunks or one image); never raises for bad input.

    ``data``, when given, is the file's content already read by the caller (the Ray engine reads files with
    ``ray.data.read_binary_files``); the file is then not opened again.

    Images are only read and hashed here (cheap); decoding and validation happen when they are to be embedded
    (``media.load_image``), so unchanged images cost no decode on re-runs.
    """
    source = entry.source
    try:
        if entry.kind == "pdf":
            text, warnings = _read_pdf(source if data is None else io.BytesIO(data)), []
        else:
            if data is None:
                with open(source, "rb") as fh:
                    data = fh.read()
            if entry.kind == "image":
                if not data:
                    return SkippedInput(source, "empty (zero bytes)")
                return Document(source, "image", [image_item(source, data)])
            if b"\x00" in data:
                return SkippedInput(source, "binary content (NUL bytes) in a text file")
            text, warnings = _decode_text(data)
            if os.path.splitext(source)[1].lower() in (".html", ".htm"):
                text = html_to_text(text)
    except _Skip as exc:
        return SkippedInput(source, str(exc))
    except OSError as exc:
        return SkippedInput(source, _os_reason(exc))
    if not text.strip():
        return SkippedInput(source, "empty document (no text after reading)")
    items = [text_item(source, i, chunk) for i, chunk in enumerate(chunker.split(text))]
    if not items:
        return SkippedInput(source, "empty document (no chunks)")
    return Document(source, entry.kind, items, warnings)
