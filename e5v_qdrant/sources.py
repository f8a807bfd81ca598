"""Discover and read files, chunk documents, hash contents → ``Item``s with deterministic ids and LlamaIndex payloads.

Supported inputs:

- text: ``.txt``, ``.md``, ``.markdown``, ``.rst``, ``.html``, ``.htm`` (HTML: the main content's text, ``html_text``;
  a page marked ``<meta name="robots" content="noindex">`` is ``ignored``);
- PDFs (``pypdf`` reads the text layer, ``pypdfium2`` renders pages), by ``pdf_pages``: ``text`` = text chunks of each
  page's text layer; ``images`` = one page image per page; ``both``; ``auto`` (default) = text chunks plus a page
  image for each page with little or no text (fewer than ``MIN_PAGE_TEXT_CHARS`` non-space characters: scans, slides,
  figures). Text is chunked page by page, so every chunk and page image records its 1-based ``page``. A PDF yielding
  nothing is skipped with the reason (e.g. a scan with ``pdf_pages=text``), never silently;
- images: ``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.gif`` (first frame), ``.bmp``, ``.tif``, ``.tiff``.

Text files may be compressed (``.gz``, ``.bz2``, ``.xz``: ``notes.md.gz``, ``changelog.gz``); they are decompressed
in memory (at most ``MAX_TEXT_BYTES``). Files without a type extension (``README``, ``copyright``,
``changelog.Debian`` — no extension, or one that is not lower case) are *sniffed*: ingested as text when their content
is valid UTF-8 without NUL bytes, else ignored as binary.

Text is decoded as UTF-8 (a BOM is dropped). Bytes that are not UTF-8 are replaced by U+FFFD and the file is still
ingested, with a warning naming it and the number of bad bytes; a file containing NUL bytes is treated as binary and
skipped. Documents are chunked by a ``chunking.Chunker`` (the model's tokens, never over its context).

Every input that is not ingested is a ``SkippedInput`` with an ``outcome``: ``ignored`` (not a supported type, or
excluded), ``failed`` (a supported file that could not be read), ``duplicate`` (already reached by another path) or
``loop`` (a symlinked folder pointing at one of its own ancestors).

Nothing here embeds or writes: ``read_source`` returns a ``Document`` of ``Item``s or a ``SkippedInput`` with a reason.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import hashlib
import io
import lzma
import mimetypes
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .chunking import Chunker
from .filters import FOLDERS_KEY, ancestor_folders
from .html_text import html_page, html_to_text
from .media import IMAGE_SUFFIXES
from .store import document_id, point_id

__all__ = [
    "Item",
    "Document",
    "SkippedInput",
    "SourceFile",
    "FileStat",
    "TEXT_SUFFIXES",
    "PDF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "discover",
    "kind_of",
    "read_source",
    "html_to_text",
    "content_hash",
    "PAYLOAD_KEYS",
    "PDF_PAGES_MODES",
    "MIN_PAGE_TEXT_CHARS",
    "PAGE_IMAGE_LONG_SIDE",
    "render_pdf_page",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm")
PDF_SUFFIXES = (".pdf",)
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
#: Largest text a file may hold after decompression (a guard against compression bombs).
MAX_TEXT_BYTES = 64 * 1024 * 1024
#: Top-level payload keys this package writes besides LlamaIndex's (``model_fingerprint`` and ``file_stat`` are
#: added by the ingest pipeline; ``folders`` lists the folders containing the source, for ``search --under``; PDF
#: points also have ``page``).
PAYLOAD_KEYS = ("modality", "source", "content_hash", "chunk_index", FOLDERS_KEY)
#: Why a page marked not-to-be-indexed is skipped, and what to do instead.
NOINDEX_REASON = (
    'HTML page marked <meta name="robots" content="noindex"> (a generated duplicate such as mdBook\'s print.html, '
    "or a redirect stub), so not indexed; to index it, remove that tag from the file"
)
#: What ``pdf_pages`` may be (see the module docstring).
PDF_PAGES_MODES = ("auto", "images", "text", "both")
#: ``pdf_pages=auto``: a page whose text layer has fewer non-whitespace characters than this also becomes an image.
MIN_PAGE_TEXT_CHARS = 64
#: Long side of a rendered PDF page in pixels: the longest side among LLaVA-NeXT's anyres grid pinpoints (3 x 336),
#: so the processor only ever scales a page down to its best grid resolution.
PAGE_IMAGE_LONG_SIDE = 1008


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
    """An input that was not ingested, and why.

    ``outcome`` is ``failed`` (a supported input that could not be ingested: unreadable, corrupt, timed out),
    ``ignored`` (not a supported type, binary, excluded, a symlink leading outside the ingested folders), ``duplicate``
    (reached again through a symlink) or ``loop``.
    """

    source: str
    reason: str
    outcome: str = "failed"

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "outcome": self.outcome}


@dataclass(frozen=True)
class FileStat:
    """What ``os.stat`` says about a file's content version: size, modification time (ns) and inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class SourceFile:
    """A discovered file: absolute path (its source URI), kind and what ``os.stat`` said when it was found.

    ``kind`` is ``text``, ``pdf``, ``image`` or ``sniff`` (no type extension: text if its content is UTF-8 text);
    ``compression`` is ``.gz``, ``.bz2``, ``.xz`` or ``None``.
    """

    source: str
    kind: str
    stat: FileStat | None = None
    compression: str | None = None


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
    """The kind of file ``path`` names: ``text``, ``pdf``, ``image``, ``sniff`` (no type extension), or ``None``.

    A compression suffix (``.gz``, ``.bz2``, ``.xz``) is looked through: ``a.md.gz`` is text, ``changelog.gz`` is
    sniffed; compressed images and PDFs are not supported.
    """
    name = os.path.basename(path)
    compressed = _compression(name) is not None
    if compressed:
        name = name[: name.rindex(".")]
    stem, suffix = os.path.splitext(name)
    if suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if compressed and suffix.lower() in PDF_SUFFIXES + IMAGE_SUFFIXES:
        return None
    if suffix.lower() in PDF_SUFFIXES:
        return "pdf"
    if suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if not suffix or suffix != suffix.lower():  # README, copyright, changelog.Debian: a name, not a type
        return "sniff"
    return None


def _compression(name: str) -> str | None:
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in COMPRESSED_SUFFIXES else None


# ---------------------------------------------------------------- discovery
def discover(
    paths: Iterable[str | os.PathLike],
    *,
    follow_symlinks: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Iterator[SourceFile | SkippedInput]:
    """Walk ``paths`` (files or folders) in sorted order, yielding supported files and skipped inputs with reasons.

    Folders are walked recursively. A symlink met in a folder (to a file or a folder) is followed when its target
    lies inside one of ``paths`` — or anywhere when ``follow_symlinks`` — and is otherwise ``ignored`` with
    ``OUTSIDE_LINK_REASON``, so a link cannot pull a file from elsewhere (``~/private/…``) into a collection and, through
    search snippets and thumbnails, out of a server. Paths given here are taken as named, links or not. Links are
    followed after everything else has been walked, so a file or folder reached both directly and through a link is
    listed under its real path and the link is a ``duplicate``; a link pointing at its own ancestor is a ``loop``. Hidden files and
    folders (``.name``) are ignored silently — they are not inputs (``.git``, ``.DS_Store``, the embedded store's own
    lock file). Only ``os.stat`` is called: no file is opened here.

    Args:
        paths: files or folders.
        follow_symlinks: also follow symlinks whose target is outside ``paths``.
        include: glob patterns (``fnmatch``); when given, only files whose name or path relative to the given folder
            matches one are taken, others are ``ignored``.
        exclude: glob patterns; matching files and folders are ``ignored`` (folders are not walked).

    Example:
        >>> [f.source for f in discover(["docs"], include=["*.md"]) if isinstance(f, SourceFile)]  # doctest: +SKIP
    """
    absolute = [os.path.abspath(os.fspath(raw)) for raw in paths]
    walker = _Walker(follow_symlinks, tuple(include), tuple(exclude), tuple(os.path.realpath(p) for p in absolute))
    for path in absolute:
        if os.path.isdir(path):
            yield from walker.walk(path, path, ())
        else:
            yield from walker.file(path, os.path.dirname(path))
    yield from walker.follow_links()


#: Why a symlink met while walking was not followed (one wording, so summaries count them together).
OUTSIDE_LINK_REASON = "symlink to a target outside the ingested folders: not followed (--follow-symlinks follows it)"


class _Walker:
    def __init__(
        self, follow_symlinks: bool, include: tuple[str, ...], exclude: tuple[str, ...], roots: tuple[str, ...]
    ):
        self.follow_symlinks, self.include, self.exclude, self.roots = follow_symlinks, include, exclude, roots
        self.seen_dirs: dict[tuple[int, int], str] = {}
        self.seen_files: dict[str, str] = {}  # real path -> the path it was listed under
        self.links: list[tuple[str, str, tuple[tuple[int, int], ...], bool]] = []  # met, followed after the walk

    def _inside_roots(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots)

    def _matches(self, patterns: tuple[str, ...], path: str, root: str) -> str | None:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        name = os.path.basename(path)
        return next((p for p in patterns if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p)), None)

    def walk(
        self, folder: str, root: str, ancestors: tuple[tuple[int, int], ...]
    ) -> Iterator[SourceFile | SkippedInput]:
        try:
            st = os.stat(folder)
        except OSError as exc:
            yield SkippedInput(folder, _os_reason(exc))
            return
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            yield SkippedInput(folder, f"symlink loop: points back to {os.path.realpath(folder)}", "loop")
            return
        if key in self.seen_dirs:
            yield SkippedInput(folder, f"duplicate folder: already walked as {self.seen_dirs[key]}", "duplicate")
            return
        self.seen_dirs[key] = folder
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
            if is_link:
                if self.follow_symlinks or self._inside_roots(path):
                    self.links.append((path, root, (*ancestors, key), is_dir))
                else:
                    yield SkippedInput(path, OUTSIDE_LINK_REASON, "ignored")
                continue
            if is_dir:
                pattern = self._matches(self.exclude, path, root)
                if pattern:
                    yield SkippedInput(path, f"excluded by {pattern!r}", "ignored")
                else:
                    yield from self.walk(path, root, (*ancestors, key))
                continue
            yield from self.file(path, root)

    def follow_links(self) -> Iterator[SourceFile | SkippedInput]:
        """The symlinks met so far (and those met behind them), after the real entries: see ``discover``."""
        while self.links:
            path, root, ancestors, is_dir = self.links.pop(0)
            if is_dir:
                pattern = self._matches(self.exclude, path, root)
                if pattern:
                    yield SkippedInput(path, f"excluded by {pattern!r}", "ignored")
                else:
                    yield from self.walk(path, root, ancestors)
            else:
                yield from self.file(path, root)

    def file(self, path: str, root: str) -> Iterator[SourceFile | SkippedInput]:
        pattern = self._matches(self.exclude, path, root)
        if pattern:
            yield SkippedInput(path, f"excluded by {pattern!r}", "ignored")
            return
        if self.include and not self._matches(self.include, path, root):
            yield SkippedInput(path, "not matched by --include", "ignored")
            return
        result = _classify_file(path)
        if isinstance(result, SourceFile):
            real = os.path.realpath(result.source)
            first = self.seen_files.get(real)
            if first is not None:  # listed already: under this path (named twice), or another (a link)
                if first != result.source:
                    yield SkippedInput(result.source, f"duplicate file: the same file as {first}", "duplicate")
                return
            self.seen_files[real] = result.source
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
        return SkippedInput(path, _os_reason(exc), "loop" if "symlink loop" in _os_reason(exc) else "failed")
    if stat.S_ISDIR(st.st_mode):
        return SkippedInput(path, "is a folder", "ignored")
    if not stat.S_ISREG(st.st_mode):
        return SkippedInput(
            path, "not a regular file (fifo, socket or device); cannot be read as a document", "ignored"
        )
    kind = kind_of(path)
    if kind is None:
        ext = os.path.splitext(path)[1] or "(no extension)"
        return SkippedInput(path, f"unsupported file type {ext}", "ignored")
    return SourceFile(path, kind, FileStat.of(st), _compression(os.path.basename(path)))


def supported_types() -> str:
    """The file types ``discover`` takes, as one line for help texts and summaries."""
    return (
        ", ".join(TEXT_SUFFIXES + PDF_SUFFIXES + IMAGE_SUFFIXES)
        + "; text also compressed ("
        + ", ".join(COMPRESSED_SUFFIXES)
        + ") and files without a type extension when their content is UTF-8 text"
    )


# ---------------------------------------------------------------- reading
def _decode_text(data: bytes) -> tuple[str, list[str]]:
    warnings: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.decode("utf-8", errors="ignore").count("\ufffd")
        warnings.append(f"not valid UTF-8: {bad} undecodable byte sequence(s) replaced by U+FFFD")
    return text, warnings


def _read_pdf_pages(data: bytes) -> list[str]:
    """The text layer of each page (pypdf), in page order."""
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise _Skip("reading PDFs needs pypdf, a dependency that is missing here (pip install pypdf)") from exc
    try:
        return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]
    except Exception as exc:  # pypdf raises many types on malformed files
        raise _Skip(f"cannot parse PDF: {type(exc).__name__}: {exc}") from exc


def _pdfium():
    try:
        import pypdfium2
    except ImportError as exc:
        raise _Skip(
            "rendering PDF pages needs pypdfium2, a dependency that is missing here (pip install pypdfium2)"
        ) from exc
    return pypdfium2


def _render_pages(data: bytes, pages: list[int], long_side: int = PAGE_IMAGE_LONG_SIDE) -> dict[int, bytes]:
    """PNG bytes of the given 1-based pages, rendered by PDFium with the page's long side at ``long_side`` pixels."""
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # PdfiumError and friends on malformed files
        raise _Skip(f"cannot open PDF for rendering: {type(exc).__name__}: {exc}") from exc
    out: dict[int, bytes] = {}
    try:
        for number in pages:
            page = pdf[number - 1]
            try:
                width, height = page.get_size()
                image = page.render(scale=long_side / max(width, height, 1.0)).to_pil().convert("RGB")
            except Exception as exc:
                raise _Skip(f"cannot render PDF page {number}: {type(exc).__name__}: {exc}") from exc
            finally:
                page.close()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            out[number] = buffer.getvalue()
    finally:
        pdf.close()
    return out


def render_pdf_page(source: str, page: int, long_side: int = PAGE_IMAGE_LONG_SIDE) -> bytes:
    """PNG bytes of the 1-based ``page`` of the PDF file ``source``, exactly as ingest renders it.

    Raises:
        E5VInputError: the file cannot be read or rendered, or has no such page.
    """
    from .errors import E5VInputError

    try:
        with open(source, "rb") as fh:
            data = fh.read()
        count = _page_count(data)
        if not 1 <= page <= count:
            raise _Skip(f"no page {page} (the PDF has {count})")
        return _render_pages(data, [page], long_side)[page]
    except OSError as exc:
        raise E5VInputError(source, _os_reason(exc)) from exc
    except _Skip as exc:
        raise E5VInputError(source, str(exc)) from exc


def _page_count(data: bytes) -> int:
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:
        raise _Skip(f"cannot open PDF: {type(exc).__name__}: {exc}") from exc
    try:
        return len(pdf)
    finally:
        pdf.close()


def _read_pdf(source: str, data: bytes, chunker: Chunker, pdf_pages: str) -> Document | SkippedInput:
    """A PDF as per-page text chunks and/or page images (``pdf_pages``); see the module docstring."""
    if pdf_pages not in PDF_PAGES_MODES:
        raise ValueError(f"pdf_pages must be one of {PDF_PAGES_MODES}, got {pdf_pages!r}")
    texts = _read_pdf_pages(data) if pdf_pages != "images" else [""] * _page_count(data)
    items: list[Item] = []
    if pdf_pages != "images":
        for number, text in enumerate(texts, start=1):
            for chunk in chunker.split(text):
                items.append(text_item(source, len(items), chunk, page=number))
    if pdf_pages in ("images", "both"):
        to_render = list(range(1, len(texts) + 1))
    elif pdf_pages == "auto":
        to_render = [n for n, t in enumerate(texts, start=1) if len("".join(t.split())) < MIN_PAGE_TEXT_CHARS]
    else:
        to_render = []
    for number, png in _render_pages(data, to_render).items() if to_render else ():
        items.append(page_image_item(source, number, png))
    if not items:
        hint = " (a scanned PDF? use --pdf-pages auto or images)" if pdf_pages == "text" else ""
        return SkippedInput(source, f"empty PDF: no text and no pages{hint}")
    return Document(source, "pdf", items)


class _Skip(Exception):
    pass


def _item(
    node_cls,
    source: str,
    modality: str,
    chunk_index: int,
    content: str | bytes,
    page: int | None = None,
    **node_fields: Any,
) -> Item:
    """``content`` as an ``Item`` whose payload is what LlamaIndex writes for a ``node_cls`` node with id = point id.

    Metadata (``modality``, ``source``, ``content_hash``, ``chunk_index``, ``file_name``, and ``page`` for PDFs) is
    excluded from the embedding text; the LLM sees ``source``, ``file_name`` and ``page``. The node's source
    relationship is the file. A ``page`` is part of the id (the payload stays a pure function of the id).
    """
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    digest = content_hash(content)
    pid = point_id(source, chunk_index, digest if page is None else f"{digest}\npage {page}")
    metadata = {
        "modality": modality,
        "source": source,
        "content_hash": digest,
        "chunk_index": chunk_index,
        "file_name": os.path.basename(source),
    }
    if page is not None:
        metadata["page"] = page
    node = node_cls(
        id_=pid,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=[k for k in metadata if k not in ("source", "file_name", "page")],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=document_id(source))},
        **node_fields,
    )
    payload = node_to_metadata_dict(node, remove_text=False, flat_metadata=True)
    payload[FOLDERS_KEY] = ancestor_folders(source)  # a list, so outside the (flat) LlamaIndex metadata
    return Item(pid, modality, content, payload)


def text_item(source: str, chunk_index: int, text: str, page: int | None = None) -> Item:
    """A text chunk as an ``Item`` whose payload LlamaIndex reads back as a ``TextNode`` with id = point id.

    The payload is a pure function of (source, chunk index, chunk text, PDF page) — no character offsets, which would
    change when an earlier part of the file is edited — so an unchanged chunk keeps its point as is.
    """
    from llama_index.core.schema import TextNode

    return _item(TextNode, source, "text", chunk_index, text, page=page, text=text)


def page_image_item(source: str, page: int, png: bytes) -> Item:
    """A rendered PDF page as an image ``Item`` (``page`` 1-based; ``content_hash`` = SHA-256 of the PNG bytes).

    Its id depends on (source, page, rendered pixels), so an unchanged page keeps its point. The LlamaIndex node is
    an ``ImageNode`` with ``image_mimetype`` ``image/png`` and no ``image_path`` (the source is a PDF, not an image
    file); ``render_pdf_page(source, page)`` gives the image back.
    """
    from llama_index.core.schema import ImageNode

    return _item(ImageNode, source, "image", 0, png, page=page, image_mimetype="image/png")


def image_item(source: str, data: bytes) -> Item:
    """An image file as an ``Item`` whose payload LlamaIndex reads back as an ``ImageNode`` (``image_path`` = source)."""
    from llama_index.core.schema import ImageNode

    return _item(ImageNode, source, "image", 0, data, image_path=source, image_mimetype=mimetypes.guess_type(source)[0])


def read_source(
    entry: SourceFile, chunker: Chunker, data: bytes | None = None, *, pdf_pages: str = "auto"
) -> Document | SkippedInput:
    """Read one discovered file into items (text chunks, one image, or a PDF's chunks and page images).

    Never raises for bad input. ``data``, when given, is the file's content already read by the caller (the Ray
    engine reads files with ``ray.data.read_binary_files``); the file is then not opened again. ``pdf_pages``: how
    PDFs become items (``PDF_PAGES_MODES``, see the module docstring).

    Images are only read and hashed here (cheap); decoding and validation happen when they are to be embedded
    (``media.load_image``), so unchanged images cost no decode on re-runs. Compressed text is decompressed; a file of
    kind ``sniff`` that is not UTF-8 text is ``ignored``.
    """
    source = entry.source
    name = os.path.basename(source)
    if entry.compression:
        name = name[: -len(entry.compression)]
    try:
        if data is None:
            with open(source, "rb") as fh:
                data = fh.read()
        if entry.kind == "pdf":
            return _read_pdf(source, data, chunker, pdf_pages)
        if entry.kind == "image":
            if not data:
                return SkippedInput(source, "empty (zero bytes)")
            return Document(source, "image", [image_item(source, data)])
        if entry.compression:
            data = _decompress(data, entry.compression)
        if entry.kind == "sniff" and not _is_text(data):
            return SkippedInput(source, "binary content (no type extension, not UTF-8 text)", "ignored")
        if b"\x00" in data:
            return SkippedInput(source, "binary content (NUL bytes) in a text file")
        text, warnings = _decode_text(data)
        if os.path.splitext(name)[1].lower() in (".html", ".htm"):
            page = html_page(text)
            if page.noindex:
                return SkippedInput(source, NOINDEX_REASON, "ignored")
            text = page.text
    except _Skip as exc:
        return SkippedInput(source, str(exc))
    except OSError as exc:
        return SkippedInput(source, _os_reason(exc))
    if not text.strip():
        return SkippedInput(source, "empty document (no text after reading)")
    chunks, notes = chunker.split_document(text)
    items = [text_item(source, i, chunk) for i, chunk in enumerate(chunks)]
    if not items:
        return SkippedInput(source, "empty document (no chunks)")
    return Document(source, "text" if entry.kind == "sniff" else entry.kind, items, warnings + notes)


def _decompress(data: bytes, compression: str) -> bytes:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[compression]
    try:
        with opener(io.BytesIO(data), "rb") as fh:
            out = fh.read(MAX_TEXT_BYTES + 1)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise _Skip(f"cannot decompress {compression}: {exc.__class__.__name__}: {exc}") from exc
    if len(out) > MAX_TEXT_BYTES:
        raise _Skip(f"decompresses to more than {MAX_TEXT_BYTES} bytes (compression bomb guard)")
    return out


def _is_text(data: bytes) -> bool:
    """UTF-8 text without NUL bytes (a BOM allowed)."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
