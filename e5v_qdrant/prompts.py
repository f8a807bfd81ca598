"""Prompt templates. Defaults reproduce the E5-V authors' strings byte for byte, typos and trailing spaces included.

Source: the E5-V repository's evaluation code (github.com/kongds/E5-V) and paper (arXiv 2407.12580); see
``shared/E5V_REFERENCE.md`` §1. A template body holds ``{text}`` where the user's text goes (text and composed
prompts) and ``<image>`` where the image goes; the chat wrapper holds ``{body}``. Substitution is literal (no
``str.format``), so braces in user text are safe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from .errors import E5VConfigError

__all__ = ["PromptSet", "PROMPT_PRESETS", "get_prompts", "LLAMA3_CHAT"]

#: Llama-3 chat wrapper E5-V uses: no system prompt; the tokenizer adds ``<|begin_of_text|>`` itself.
LLAMA3_CHAT = (
    "<|start_header_id|>user<|end_header_id|>\n\n{body}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
)


@dataclass(frozen=True)
class PromptSet:
    """The prompts an encoder wraps inputs in.

    Attributes:
        text: body for documents / passages (``{text}`` placeholder).
        image: body for an image (one ``<image>``).
        composed: body for image + modification text (``<image>`` and ``{text}``), CIRR style by default.
        query: body for search queries; ``None`` means queries use ``text`` (E5-V embeds both alike).
        chat: the chat wrapper around every body (``{body}`` placeholder).
    """

    text: str = "{text}\nSummary above sentence in one word: "
    image: str = "<image>\nSummary above image in one word: "
    composed: str = '<image>Modify this image with "{text}", desribe modified image in one word:'
    query: str | None = None
    chat: str = LLAMA3_CHAT

    def __post_init__(self):
        checks = [
            ("text", self.text, "{text}", 0),
            ("image", self.image, None, 1),
            ("composed", self.composed, "{text}", 1),
        ]
        if self.query is not None:
            checks.append(("query", self.query, "{text}", 0))
        for name, body, placeholder, images in checks:
            if placeholder and placeholder not in body:
                raise E5VConfigError(f"{name} prompt {body!r} lacks the {placeholder} placeholder")
            if body.count("<image>") != images:
                raise E5VConfigError(f"{name} prompt {body!r} must contain <image> exactly {images} time(s)")
        if self.chat.count("{body}") != 1:
            raise E5VConfigError(f"chat wrapper {self.chat!r} must contain {{body}} exactly once")

    def _wrap(self, body: str) -> str:
        head, tail = self.chat.split("{body}")
        return head + body + tail

    def for_text(self, text: str) -> str:
        """The full prompt for a document text."""
        head, tail = self.text.split("{text}", 1)
        return self._wrap(head + text + tail)

    def for_query(self, text: str) -> str:
        """The full prompt for a query text (the text prompt unless ``query`` is set)."""
        body = self.query if self.query is not None else self.text
        head, tail = body.split("{text}", 1)
        return self._wrap(head + text + tail)

    def for_image(self) -> str:
        """The full prompt for an image."""
        return self._wrap(self.image)

    def for_composed(self, text: str) -> str:
        """The full prompt for an image plus its modification text."""
        head, tail = self.composed.split("{text}", 1)
        return self._wrap(head + text + tail)

    def digest(self) -> str:
        """A short stable hash of every template, for fingerprints."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


_AUTHORS = PromptSet()

#: Named prompt sets. ``e5v`` is the default and the authors' exact strings; the others are opt-in deviations.
PROMPT_PRESETS: dict[str, PromptSet] = {
    "e5v": _AUTHORS,
    # The authors' composed prompt with its "desribe" typo fixed. Not what the model was evaluated with.
    "e5v-typofix": replace(
        _AUTHORS, composed='<image>Modify this image with "{text}", describe modified image in one word:'
    ),
    # The authors' CIRR target-image prompt for images (reference §1).
    "e5v-cirr-target": replace(_AUTHORS, image="<image>\n Describe this image in one word:"),
    # FashionIQ (retrieval.py of the authors' repository): catalogue images get the category's target prompt, a
    # reference image plus its change text gets the category's query prompt. "toptee" uses the word "shirt".
    **{
        f"fashioniq-{category}": replace(
            _AUTHORS,
            image=f"<image>\n Describe this {noun} in one word based on its style:",
            composed=f"<image> change the style of this {noun} to {{text}}\n Desribe this modified {noun} in one word "
            "based on its style:",
        )
        for category, noun in (("dress", "dress"), ("shirt", "shirt"), ("toptee", "shirt"))
    },
}


def get_prompts(name: str = "e5v", **overrides: str | None) -> PromptSet:
    """Return a preset by name, with any non-``None`` field overridden.

    Raises:
        E5VConfigError: unknown preset name or an override missing its placeholder.
    """
    try:
        base = PROMPT_PRESETS[name]
    except KeyError:
        raise E5VConfigError(f"unknown prompt preset {name!r}; choose one of {sorted(PROMPT_PRESETS)}") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **changes) if changes else base
