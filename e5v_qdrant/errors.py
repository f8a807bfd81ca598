"""Typed errors. Every message names the offending input and, where there is one, the remedy."""

from __future__ import annotations


class E5VError(Exception):
    """Base class of every error this package raises on purpose."""


class E5VConfigError(E5VError, ValueError):
    """An option is invalid or options contradict each other."""


class E5VInputError(E5VError, ValueError):
    """An input (text, image, file) cannot be embedded.

    Attributes:
        source: a short description of the input (path, ``bytes[123]``, ``BytesIO``, ``item 4``…).
        reason: why it was refused, without the source.
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class E5VImageError(E5VInputError):
    """An image input is unreadable, empty, truncated, too large or not an image."""


class E5VModelError(E5VError, RuntimeError):
    """The model or processor could not be loaded or is not an E5-V / LLaVA-NeXT checkpoint."""
