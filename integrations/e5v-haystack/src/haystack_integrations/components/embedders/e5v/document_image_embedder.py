"""``E5VDocumentImageEmbedder``: Documents naming an image file or a PDF page -> Documents with its E5-V embedding."""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import replace
from pathlib import Path
from typing import Any

from haystack import Document, component, default_to_dict
from tqdm.auto import tqdm

from e5v_qdrant.config import DEFAULT_MODEL
from e5v_qdrant.errors import E5VImageError, E5VInputError

from .encoder_backed import EncoderBacked

__all__ = ["E5VDocumentImageEmbedder"]

#: Documents whose images are read (and PDF pages rendered) at a time: bounds the decoded pixels held in memory.
_CHUNK = 32


@component
class E5VDocumentImageEmbedder(EncoderBacked):
    """Embed the image each Document names (an image file, or a PDF page) with E5-V.

    Like Haystack's ``SentenceTransformersDocumentImageEmbedder``: ``meta[file_path_meta_field]`` names the file
    (relative to ``root_path`` if set); a PDF (by ``meta["mime_type"]`` or the ``.pdf`` suffix) also needs
    ``meta["page_number"]`` (1-based), and that page is rendered with pypdfium2 at ``pdf_dpi``. Returned Documents
    carry the image's ``embedding`` and ``meta["embedding_source"] = {"type": "image", "file_path_meta_field": ...}``;
    text queries from ``E5VTextEmbedder`` find them.

    Args:
        model: hub id or local folder of an E5-V checkpoint.
        options: the ``EncoderConfig`` options every adapter mirrors (``e5v_qdrant.sharing.adapter_options``: each
            option that changes vectors — revision, adapter, prompts, query_prompt, max_text_tokens, image_layout —
            plus device, dtype and batch_size); ``None``: its default.
        encoder_kwargs: any other ``EncoderConfig`` option.
        file_path_meta_field: meta key holding the image or PDF path.
        root_path: folder the paths are relative to; paths that resolve outside it are refused (set it when meta
            comes from untrusted sources). ``None``: paths are used as given.
        pdf_dpi: resolution PDF pages are rendered at (E5-V resizes images to at most 1008 px a side anyway).
        progress_bar: show a progress bar while embedding.

    Example:
        >>> embedder = E5VDocumentImageEmbedder(model="royokong/e5-v", root_path="scans")          # doctest: +SKIP
        >>> docs = [Document(meta={"file_path": "cat.jpg"}), Document(meta={"file_path": "report.pdf",
        ...                                                                   "page_number": 2})]  # doctest: +SKIP
        >>> embedder.run(docs)["documents"][1].embedding[:3]                                        # doctest: +SKIP
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        file_path_meta_field: str = "file_path",
        root_path: str | None = None,
        pdf_dpi: int = 150,
        progress_bar: bool = True,
        **options: Any,
    ):
        # explicit base call: @component rebuilds the class, which breaks zero-argument super() in __init__
        EncoderBacked.__init__(self, model, encoder_kwargs=encoder_kwargs, **options)
        if pdf_dpi < 1:
            raise E5VInputError(f"pdf_dpi={pdf_dpi}", "must be a positive number of dots per inch, e.g. 150")
        self.file_path_meta_field = file_path_meta_field
        self.root_path = root_path
        self.pdf_dpi = pdf_dpi
        self.progress_bar = progress_bar

    def to_dict(self) -> dict[str, Any]:
        """Serialise the component (its options; never the model)."""
        return default_to_dict(
            self,
            **self._encoder_parameters(),
            file_path_meta_field=self.file_path_meta_field,
            root_path=self.root_path,
            pdf_dpi=self.pdf_dpi,
            progress_bar=self.progress_bar,
        )

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed the image of each Document; returns copies with ``embedding`` set, in order.

        All paths are checked before any image is embedded.

        Raises:
            E5VInputError: a Document lacks the path meta (or a PDF Document its ``page_number``), or its path
                escapes ``root_path``.
            E5VImageError: a file is missing or unreadable, a page is out of range, or pypdfium2 is missing.
        """
        self._check_documents(documents)
        sources = [self._source(doc) for doc in documents]
        vectors: list[list[float]] = []
        with tqdm(total=len(documents), desc="Embedding images", unit="img", disable=not self.progress_bar) as bar:
            for start in range(0, len(documents), _CHUNK):
                chunk = sources[start : start + _CHUNK]
                images = [_render_page(path, page, self.pdf_dpi) if page else str(path) for path, page in chunk]
                vectors.extend(self._embed("embed_images", images))
                bar.update(len(chunk))
        source = {"type": "image", "file_path_meta_field": self.file_path_meta_field}
        return {
            "documents": [
                replace(doc, embedding=vector, meta={**doc.meta, "embedding_source": source})
                for doc, vector in zip(documents, vectors, strict=True)
            ]
        }

    @component.output_types(documents=list[Document])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """``run`` in a worker thread."""
        return await asyncio.to_thread(self.run, documents)

    def _source(self, doc: Document) -> tuple[Path, int | None]:
        """The file a Document names, checked, and its PDF page number (``None`` for an image file)."""
        label = f"Document {doc.id}"
        name = doc.meta.get(self.file_path_meta_field)
        if name is None:
            raise E5VInputError(
                label, f"has no meta[{self.file_path_meta_field!r}] naming its image or PDF; set it to the file's path"
            )
        path = Path(self.root_path or "", name)
        if self.root_path is not None and not path.resolve().is_relative_to(Path(self.root_path).resolve()):
            raise E5VInputError(f"{label} ({name})", f"path escapes root_path {self.root_path!r}; refused")
        if not path.is_file():
            raise E5VImageError(f"{label} ({path})", "no such file; fix the path or root_path")
        mime_type = doc.meta.get("mime_type") or mimetypes.guess_type(path.name)[0]
        if mime_type != "application/pdf":
            return path, None
        page = doc.meta.get("page_number")
        if not isinstance(page, int) or page < 1:
            raise E5VInputError(
                f"{label} ({path})", f"is a PDF, so meta['page_number'] must be a page number from 1, got {page!r}"
            )
        return path, page


def _render_page(path: Path, page_number: int, dpi: int):
    """Render one PDF page (1-based) to an RGB PIL image at ``dpi``."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise E5VImageError(
            f"{path} page {page_number}", "rendering PDF pages needs pypdfium2: pip install 'e5v-haystack[pdf]'"
        ) from exc
    try:
        pdf = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as exc:
        raise E5VImageError(str(path), f"not a readable PDF ({exc})") from exc
    try:
        if page_number > len(pdf):
            raise E5VImageError(f"{path} page {page_number}", f"out of range: the PDF has {len(pdf)} pages")
        bitmap = pdf[page_number - 1].render(scale=dpi / 72)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()
    finally:
        pdf.close()
