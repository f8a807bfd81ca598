"""Captions rendered as images, for the paper's image-to-image (I2I) retrieval.

The recipe is the one the E5-V authors describe and use (arXiv 2407.12580 §4; ``create_text_image`` in their
repository's ``retrieval.py``): an 800x400 white RGB canvas, black text in a 40-pt Arial, greedy word wrap at 760 px
(20 px margins), each line drawn at x = 20 and advanced by its own ink height, the block starting at
``(400 - total ink height) // 2``. Lines keep the trailing space the greedy loop appends, as theirs do.

One deliberate difference: their wrap loop never ends when a single word is wider than a line. Here such a word is
broken at the last character that still fits and continued on the next line, so the ink stays inside the left and
right margins and rendering always ends. Arial cannot be shipped; the default font is Liberation Sans, which is
metric-compatible with Arial (same advance widths), found among the system fonts (Debian: ``fonts-liberation``).
Pass ``font=`` the path of ``arial.ttf`` to reproduce the authors exactly.

Example:
    >>> from e5v_qdrant.evaluate.render import render_caption                 # doctest: +SKIP
    >>> render_caption("A dog runs on the beach.").size                       # doctest: +SKIP
    (800, 400)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ..errors import E5VInputError

__all__ = [
    "CANVAS",
    "FONT_SIZE",
    "MARGIN",
    "DEFAULT_FONT_FILE",
    "find_default_font",
    "resolve_font",
    "font_facts",
    "wrap_lines",
    "render_caption",
    "render_captions",
]

CANVAS = (800, 400)
FONT_SIZE = 40
MARGIN = 20
DEFAULT_FONT_FILE = "LiberationSans-Regular.ttf"
_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "~/Library/Fonts",
    "C:/Windows/Fonts",
)
_INSTALL_HINT = (
    "install Liberation Sans (Debian/Ubuntu: `apt-get install fonts-liberation`; Fedora: liberation-sans-fonts; "
    "macOS: `brew install --cask font-liberation`) or pass --font /path/to/arial.ttf"
)


@lru_cache(maxsize=1)
def find_default_font() -> str:
    """Path of Liberation Sans Regular among the system's font folders.

    Raises:
        E5VInputError: the font is not installed (the message says how to install it or pass another).
    """
    for folder in _FONT_DIRS:
        root = Path(os.path.expanduser(folder))
        if root.is_dir():
            found = sorted(root.rglob(DEFAULT_FONT_FILE))
            if found:
                return str(found[0])
    raise E5VInputError("font", f"{DEFAULT_FONT_FILE} not found in {', '.join(_FONT_DIRS)}; {_INSTALL_HINT}")


def resolve_font(font: str | os.PathLike | None = None) -> str:
    """The font file to render with: ``font`` if given (checked to load as a TrueType/OpenType font), else the default.

    Raises:
        E5VInputError: the file is missing or not a font PIL can load.
    """
    path = find_default_font() if font is None else os.fspath(font)
    if not os.path.isfile(path):
        raise E5VInputError(path, f"font file not found; {_INSTALL_HINT}")
    try:
        _load_font(os.path.abspath(path))
    except OSError as exc:
        raise E5VInputError(path, f"not a TrueType/OpenType font PIL can load ({exc}); pass a .ttf/.otf file") from None
    return os.path.abspath(path)


def font_facts(path: str) -> dict[str, str | int]:
    """What the report records about the font: its path, SHA-256, size in points and the canvas."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": path, "sha256": h.hexdigest(), "size_pt": FONT_SIZE, "canvas": f"{CANVAS[0]}x{CANVAS[1]}"}


@lru_cache(maxsize=4)
def _load_font(path: str):
    from PIL import ImageFont

    return ImageFont.truetype(path, FONT_SIZE)


def _split_word(word: str, fits) -> list[str]:
    """Break a word wider than a line into pieces that each fit (at least one character per piece)."""
    pieces = []
    while word:
        cut = 1
        while cut < len(word) and fits(word[: cut + 1]):
            cut += 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces


def wrap_lines(text: str, font, max_width: int = CANVAS[0] - 2 * MARGIN) -> list[str]:
    """Greedy word wrap: add words (each followed by a space) while ``line + word`` is at most ``max_width`` px long.

    A word that does not fit even on an empty line is broken at the last character that fits.
    """
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # measures as drawing on the RGB canvas does

    def fits(candidate: str) -> bool:
        return draw.textlength(candidate, font=font) <= max_width

    words = text.split()
    lines = []
    while words:
        line = ""
        while words and fits(line + words[0]):
            line += words.pop(0) + " "
        if not line:  # the next word alone is wider than a line: the authors' loop would spin here forever
            pieces = _split_word(words.pop(0), fits)
            lines.extend(pieces[:-1])
            words.insert(0, pieces[-1])
            continue
        lines.append(line)
    return lines


def render_caption(text: str, font: str | os.PathLike | None = None):
    """Render ``text`` as the authors render captions (see the module docstring) and return the PIL image."""
    from PIL import Image, ImageDraw

    face = _load_font(resolve_font(font))
    image = Image.new("RGB", CANVAS, color=(255, 255, 255))
    draw = ImageDraw.Draw(image)
    lines = wrap_lines(text, face)
    heights = []
    for line in lines:
        box = draw.textbbox((0, 0), line, font=face)
        heights.append(box[3] - box[1])
    y = (CANVAS[1] - sum(heights)) // 2
    for line, height in zip(lines, heights, strict=True):
        draw.text((MARGIN, y), line, font=face, fill=(0, 0, 0))
        y += height
    return image


def render_captions(
    captions: Sequence[str],
    folder: str | os.PathLike,
    font: str | os.PathLike | None = None,
    *,
    show_progress: bool = False,
) -> list[str]:
    """Render each caption to ``folder/NNNNNN.png`` (zero-padded position, so names sort in ``captions`` order).

    Returns:
        the PNG paths, in ``captions`` order.
    """
    path = resolve_font(font)
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(max(len(captions) - 1, 0))))
    out = []
    if show_progress:
        from tqdm.auto import tqdm

        captions = tqdm(captions, unit="caption", desc="rendering", dynamic_ncols=True)
    for i, caption in enumerate(captions):
        name = target / f"{i:0{width}d}.png"
        render_caption(caption, path).save(name)
        out.append(str(name))
    return out
