"""Cheap checks on request text before any tokenizer or model work: Unicode scalar values, character and token caps.

A tokenizer call costs time and memory in proportion to its text (a 31 MB string took 40-57 s and ~5 GB), so a text
is measured in characters first (free), and only a text under the character cap is tokenized, to count its tokens
against the token cap. Both refusals are 400s naming the limit and how to raise it, as OpenAI's and vLLM's
context-length errors do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import E5VInputError

__all__ = ["CHARS_PER_TOKEN", "TextLimits", "lone_surrogate", "shown"]

#: Default character cap per allowed token. Byte-level BPE (Llama-3's tokenizer) averages ~4 characters a token on
#: English prose and fewer on code or other scripts; only texts made mostly of long repeated runs (whitespace,
#: "=====") pack more than 16 characters into a token, and those get the character error, naming ``max_input_chars``.
CHARS_PER_TOKEN = 16

_SHOWN = 80


def shown(value: str, limit: int = _SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters (with the full length said), for echoing client strings."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def lone_surrogate(data: Any) -> str | None:
    """Where the first string of a parsed JSON value (keys included) holds a lone surrogate (``"\\ud800"``), else
    ``None``. JSON's ``\\uXXXX`` escapes can spell half a UTF-16 pair (a browser cutting an emoji in half does); such
    a string is not Unicode text: it cannot be tokenized or written back as UTF-8. Walked without recursion, so any
    depth the JSON parser accepted is fine."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            at = _surrogate_at(value)
            if at is not None:
                return f"{where or 'body'}: character {at} is a lone UTF-16 surrogate (U+{ord(value[at]):04X})"
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _surrogate_at(key) is not None:
                    return f"{_printable(name)}: the key holds a lone UTF-16 surrogate"
                stack.append((_printable(name), item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _surrogate_at(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")[:_SHOWN]


@dataclass(frozen=True)
class TextLimits:
    """Per-input caps: ``max_chars`` characters (checked before tokenizing), ``max_tokens`` model tokens (the
    prompted text; for an image input the prompt with the image's placeholder tokens).

    Example:
        >>> limits = TextLimits(max_tokens=8192, max_chars=131072)
        >>> limits.check_chars(["a short text"], "input")
    """

    max_tokens: int
    max_chars: int

    @classmethod
    def for_encoder(cls, encoder, *, max_tokens: int | None, max_chars: int | None) -> TextLimits:
        """Limits of a server: ``max_tokens`` defaults to the model's context, ``max_chars`` to
        ``CHARS_PER_TOKEN`` per token."""
        tokens = max_tokens or encoder.max_positions or 8192
        return cls(tokens, max_chars or tokens * CHARS_PER_TOKEN)

    def check_chars(self, texts: Iterable[str], name: str) -> None:
        """Refuse a text over ``max_chars`` characters (no tokenizer involved).

        Raises:
            E5VInputError: naming the text's position, its length and the limit.
        """
        for i, text in enumerate([texts] if isinstance(texts, str) else texts):
            if len(text) > self.max_chars:
                where = name if isinstance(texts, str) else f"{name}[{i}]"
                raise E5VInputError(
                    where,
                    f"text of {len(text)} characters is over the server's limit of {self.max_chars} characters "
                    f"(max_input_chars, checked before tokenizing; the model reads at most {self.max_tokens} tokens, "
                    "max_input_tokens): split it into chunks",
                )

    def check_tokens(self, count: int, name: str) -> None:
        """Refuse an input of more than ``max_tokens`` tokens.

        Raises:
            E5VInputError: naming the input, its token count and the limit.
        """
        if count > self.max_tokens:
            raise E5VInputError(
                name,
                f"input of {count} tokens (prompt included) is over the server's limit of {self.max_tokens} tokens "
                "(max_input_tokens): split it into chunks",
            )
