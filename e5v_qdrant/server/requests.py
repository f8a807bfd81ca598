"""Request bodies of the HTTP API and their validation into encoder inputs (no I/O, no model calls)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import E5VInputError
from ..media import image_size, load_image
from .limits import lone_surrogate

__all__ = [
    "EmbeddingRequest",
    "SearchRequest",
    "IngestRequest",
    "ChatMessage",
    "ParsedConversation",
    "decode_image_url",
    "inline_image",
    "InlineImage",
    "parse_messages",
    "message_texts",
    "SEARCH_FILTERS",
]

#: Search request fields that narrow the results; ``app`` forwards the ones ``search.search`` accepts.
SEARCH_FILTERS = ("under", "where", "score_threshold", "hybrid", "fusion")

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.S)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str


class ContentPart(BaseModel):
    """One part of a chat message: ``{"type": "text", "text": ...}`` or ``{"type": "image_url", "image_url": {...}}``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str = "user"
    content: str | list[ContentPart]


class _UnicodeBody(BaseModel):
    """A request body whose every string (keys included) is Unicode text: a lone surrogate gets a 400 naming where."""

    @model_validator(mode="before")
    @classmethod
    def _scalar_values(cls, data: Any) -> Any:
        problem = lone_surrogate(data)
        if problem is not None:
            raise ValueError(f"{problem}; send valid Unicode text (a surrogate pair cut in half is not)")
        return data


class EmbeddingRequest(_UnicodeBody):
    """``POST /v1/embeddings``: OpenAI's ``input`` or vLLM's chat-style ``messages`` (exactly one of them)."""

    model_config = ConfigDict(extra="ignore")

    input: Any = None
    messages: list[ChatMessage] | None = None
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if value is None:
            return None
        token_ids = "token-id inputs are not supported: send text (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"must be a string or a list of strings, got {type(value).__name__}")
        if not value:
            raise ValueError("is an empty list; send at least one string")
        for i, item in enumerate(value):
            if isinstance(item, (int, list)) and not isinstance(item, bool):
                raise ValueError(token_ids)
            if not isinstance(item, str):
                raise ValueError(f"item {i} must be a string, got {type(item).__name__}")
            if not item:
                raise ValueError(f"item {i} is an empty string (refused, as OpenAI's API does); send some text")
        return value


class SearchRequest(_UnicodeBody):
    """``POST /v1/search``: a text, an image (data URL), or both (composed query) against a collection."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1)
    text: str | None = Field(None, min_length=1, description="the query text (an empty string is refused)")
    image: str | None = Field(None, description="data:image/...;base64,... URL")
    top_k: int = Field(10, ge=1)
    modality: Literal["any", "text", "image"] = "any"
    under: str | None = Field(None, description="only hits whose source starts with this path prefix")
    where: dict[str, Any] | None = Field(
        None, description="payload field -> value, all must match (a list matches any of its values)"
    )
    score_threshold: float | None = Field(None, allow_inf_nan=False, description="only hits scoring at least this")
    hybrid: bool = Field(False, description="fuse dense and BM25 keyword results (a collection ingested with --hybrid)")
    fusion: Literal["rrf", "dbsf"] = Field("rrf", description="how hybrid results are fused")


class IngestRequest(_UnicodeBody):
    """``POST /v1/ingest``: paths on the server's machine (under its ``--ingest-root`` folders) into a collection,
    with ingest options (``config.IngestConfig`` field names)."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1, max_length=1000)
    options: dict[str, Any] = Field(default_factory=dict)
    encoder: dict[str, Any] = Field(default_factory=dict, description="encoder options; must match the served model")


@dataclass(frozen=True)
class InlineImage:
    """An image sent inline, checked but not decoded: its encoded bytes and upright ``(height, width)``.

    The server queues the bytes (a few KB to MB) instead of the decoded pixels (3 bytes a pixel: 260 MB for 86
    megapixels); the model thread decodes each image when it embeds it, one at a time.
    """

    data: bytes
    size: tuple[int, int]


@dataclass
class ParsedConversation:
    """What a ``messages`` list embeds: an image, a text, or both (composed query)."""

    text: str | None = None
    image: InlineImage | None = None

    @property
    def kind(self) -> str:
        if self.image is not None:
            return "composed" if self.text is not None else "image"
        return "text"


def decode_image_url(url: str, *, max_pixels: int | None, name: str) -> Any:
    """Decode an inline ``data:image/...;base64,...`` URL into a validated RGB PIL image (``inline_image``, decoded).

    Raises:
        E5VInputError: as ``inline_image``, or the image data is corrupt.
    """
    return load_image(inline_image(url, max_pixels=max_pixels, name=name).data, max_pixels=max_pixels, name=name)


def inline_image(url: str, *, max_pixels: int | None, name: str) -> InlineImage:
    """The image of an inline ``data:image/...;base64,...`` URL, its header checked (format, pixel limit), not decoded.

    Remote (``http(s)://``) and ``file://`` URLs are refused, never fetched or read.

    Raises:
        E5VInputError: (``E5VImageError`` for image content) the URL is not inline base64 image data, or the image is
            not an image or too large.
    """
    head = url[:16].lower()
    if head.startswith(("http://", "https://")):
        raise E5VInputError(
            name, "remote image URLs are never fetched; send the image inline as data:image/png;base64,..."
        )
    if head.startswith("file:"):
        raise E5VInputError(
            name,
            "file:// URLs are refused (the server reads no files named by clients); send data:image/...;base64,...",
        )
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise E5VInputError(name, "must be an inline data URL: data:image/png;base64,<base64 bytes>")
    if match["mime"] and not match["mime"].lower().startswith("image/"):
        raise E5VInputError(name, f"data URL media type {match['mime']!r} is not an image")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise E5VInputError(name, f"invalid base64 image data ({exc})") from None
    return InlineImage(data, image_size(data, max_pixels=max_pixels, name=name))


def message_texts(messages: list[ChatMessage]) -> list[str]:
    """The text parts of chat ``messages``, in order (cheap: no image is decoded), for limits checked first."""
    texts: list[str] = []
    for message in messages:
        if isinstance(message.content, str):
            texts.append(message.content)
        else:
            texts.extend(part.text for part in message.content if part.type == "text" and part.text is not None)
    return texts


def parse_messages(messages: list[ChatMessage], *, max_pixels: int | None) -> ParsedConversation:
    """Turn vLLM-style chat ``messages`` into one embedding input.

    Image only = image embedding; image + text parts = composed query (texts joined by newlines); text only = text.

    Raises:
        E5VInputError: no content, more than one image, a non-user role, or a bad image.
    """
    if not messages:
        raise E5VInputError("messages", "is empty; send one user message with image_url and/or text parts")
    texts: list[str] = []
    images: list[Any] = []
    for m, message in enumerate(messages):
        if message.role != "user":
            raise E5VInputError(f"messages[{m}].role", f"only user messages are embedded, got {message.role!r}")
        parts = message.content
        if isinstance(parts, str):
            texts.append(parts)
            continue
        for p, part in enumerate(parts):
            where = f"messages[{m}].content[{p}]"
            if part.type == "text":
                if part.text is None:
                    raise E5VInputError(where, 'a "text" part needs a "text" string')
                texts.append(part.text)
            else:
                if part.image_url is None:
                    raise E5VInputError(where, 'an "image_url" part needs {"image_url": {"url": "data:..."}}')
                if images:
                    raise E5VInputError(where, "only one image per embedding; send one request per image")
                images.append(inline_image(part.image_url.url, max_pixels=max_pixels, name=where + ".image_url"))
    if not texts and not images:
        raise E5VInputError("messages", "hold no text or image parts")
    return ParsedConversation(text="\n".join(texts) if texts else None, image=images[0] if images else None)
