"""LLaVA-NeXT "anyres" geometry for both image layouts: best resolution, resize, pad, tiles, grid, unpadding, token count.

An anyres image becomes one 336 px overview tile plus a grid of 336 px tiles cut from the image resized (aspect kept)
and padded to the best of the checkpoint's grid pinpoints; the vision features of the grid are laid out as one
feature map, the padding is cut away again ("unpadding") and a newline embedding ends every row. Two layouts exist:

- ``"paper"`` — the authors' environment, transformers 4.41.2 (pinned in the E5-V requirements.txt): every published
  E5-V image number was computed with it. It differs from today's code in two places. The grid shape is read as
  ``(width, height)`` although it is ``(height, width)``, so for non-square best resolutions (336x672, 672x336,
  1008x336, 336x1008) the tile features are laid out transposed and unpadded along the other axis, which changes
  the image-token count too; unpadding truncates (``int``) instead of rounding. And its image processor pads the
  resized image symmetrically, ``(paste, paste)``: with an odd leftover the padded image is one pixel short, the
  last row or column of tiles is 335 px and is resized to 336 (shortest edge) and centre-cropped before use.
  transformers 4.44 swapped the grid back (transformers PR #32314; issues #31327, #31529, #31588).
- ``"llava-next"`` — today's transformers (and the original LLaVA-NeXT code and vLLM): height-major grid, rounded
  unpadding, padding split as ``(paste, paste + remainder)``. The encoder runs transformers' own code for it; the
  functions here describe it too, for token counts, reports and tests.

Images whose best resolution is square (most 4:3 photos: 640x480 and 500x375 pick 672x672) get the same features in
both layouts except for odd-pixel padding and rare rounding cases; non-square best resolutions (3:2 photos like
500x333, small squares like 300x300 — the tie-break picks 336x672 —, documents, screenshots, panoramas) differ.

This module imports numpy and PIL at the top and torch only inside the functions that build tensors, and it never
loads a model: its geometry is plain arithmetic on sizes. ``use_paper_layout`` is the one hook into a loaded model.

Example:
    >>> from e5v_qdrant.anyres import E5V_GEOMETRY, image_token_count
    >>> image_token_count((333, 500), E5V_GEOMETRY, "paper"), image_token_count((333, 500), E5V_GEOMETRY, "llava-next")
    (976, 1464)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import E5VModelError

__all__ = [
    "LAYOUTS",
    "DEFAULT_LAYOUT",
    "AnyresGeometry",
    "E5V_GEOMETRY",
    "select_best_resolution",
    "has_nonsquare_grid",
    "tile_grid",
    "feature_grid",
    "unpadded_shape",
    "image_token_count",
    "paper_pixel_values",
    "pack_features",
    "use_paper_layout",
]

#: The image layouts: ``"paper"`` = transformers 4.41.2 (the authors' environment), ``"llava-next"`` = today's.
LAYOUTS = ("paper", "llava-next")
DEFAULT_LAYOUT = "paper"
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class AnyresGeometry:
    """The numbers anyres needs, read from a checkpoint's configs.

    Attributes:
        grid_pinpoints: candidate resolutions as ``(height, width)`` pairs (``image_grid_pinpoints``).
        tile: side of a vision-tower input tile in pixels (vision ``image_size``; 336 for E5-V).
        patch: side of a vision patch in pixels (vision ``patch_size``; 14 for E5-V, so 24 x 24 features a tile).
        image_mean, image_std, rescale_factor, resample: the image processor's pixel settings (PIL resample code).
        shortest_edge: what the processor resizes each tile's shortest edge to (``size["shortest_edge"]``).
    """

    grid_pinpoints: tuple[tuple[int, int], ...]
    tile: int = 336
    patch: int = 14
    image_mean: tuple[float, float, float] = _CLIP_MEAN
    image_std: tuple[float, float, float] = _CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = int(Image.Resampling.BICUBIC)
    shortest_edge: int = 336

    @property
    def side(self) -> int:
        """Features per tile side (tile // patch)."""
        return self.tile // self.patch

    @classmethod
    def from_configs(cls, model_config: Any, image_processor: Any = None) -> AnyresGeometry:
        """Geometry of a ``LlavaNextConfig`` and (optionally) its loaded image processor."""
        vision = model_config.vision_config
        fields: dict[str, Any] = {
            "grid_pinpoints": tuple((int(h), int(w)) for h, w in model_config.image_grid_pinpoints),
            "tile": int(vision.image_size),
            "patch": int(vision.patch_size),
            "shortest_edge": int(vision.image_size),
        }
        if image_processor is not None:
            size = getattr(image_processor, "size", None)
            edge = _lookup(size, "shortest_edge")
            if edge:
                fields["shortest_edge"] = int(edge)
            for name in ("image_mean", "image_std"):
                value = getattr(image_processor, name, None)
                if value is not None:
                    fields[name] = tuple(float(v) for v in value)
            if getattr(image_processor, "rescale_factor", None) is not None:
                fields["rescale_factor"] = float(image_processor.rescale_factor)
            resample = _pil_resample(getattr(image_processor, "resample", None))
            if resample is not None:
                fields["resample"] = resample
        return cls(**fields)


#: E5-V's geometry (royokong/e5-v config: CLIP ViT-L/14-336, five pinpoints).
E5V_GEOMETRY = AnyresGeometry(grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)))


def _pil_resample(value: Any) -> int | None:
    """A PIL resampling code from what an image processor holds: a PIL code or enum, or a torchvision mode name."""
    value = getattr(value, "value", value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.upper() in Image.Resampling.__members__:
        return int(Image.Resampling[value.upper()])
    return None


def _lookup(mapping: Any, key: str) -> Any:
    if mapping is None:
        return None
    if isinstance(mapping, dict):
        return mapping.get(key)
    return getattr(mapping, key, None)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"image layout {layout!r} is not one of {LAYOUTS}")


def select_best_resolution(size: tuple[int, int], pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The pinpoint ``(height, width)`` keeping most of the image's pixels, then wasting least (same in both layouts).

    Args:
        size: the image's ``(height, width)``.
        pinpoints: candidate ``(height, width)`` pairs; ties keep the earlier one.
    """
    height, width = size
    best, best_kept, best_waste = None, 0, math.inf
    for ph, pw in pinpoints:
        scale = min(pw / width, ph / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = ph * pw - kept
        if kept > best_kept or (kept == best_kept and waste < best_waste):
            best, best_kept, best_waste = (int(ph), int(pw)), kept, waste
    if best is None:
        raise ValueError(f"no grid pinpoint fits an image of size {size}")
    return best


def has_nonsquare_grid(size: tuple[int, int], geometry: AnyresGeometry = E5V_GEOMETRY) -> bool:
    """Whether an image of ``(height, width)`` picks a non-square best resolution: the layouts then differ."""
    best_h, best_w = select_best_resolution(size, geometry.grid_pinpoints)
    return best_h != best_w


def tile_grid(size: tuple[int, int], geometry: AnyresGeometry = E5V_GEOMETRY) -> tuple[int, int]:
    """``(rows, columns)`` of grid tiles cut from the image (same in both layouts; the overview tile comes on top)."""
    best_h, best_w = select_best_resolution(size, geometry.grid_pinpoints)
    return best_h // geometry.tile, best_w // geometry.tile


def feature_grid(size: tuple[int, int], geometry: AnyresGeometry, layout: str) -> tuple[int, int]:
    """``(rows, columns)`` in tiles of the feature map the grid tiles are laid out as.

    ``"llava-next"``: the tile grid itself. ``"paper"``: rows and columns swapped (4.41 reads the grid as
    ``(width, height)``), while the tiles keep their row-major order: a non-square grid's features are reshaped, not
    moved.
    """
    _check_layout(layout)
    rows, cols = tile_grid(size, geometry)
    return (cols, rows) if layout == "paper" else (rows, cols)


def _unpadded_bounds(current: tuple[int, int], size: tuple[int, int], layout: str) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the feature map ``current = (height, width)`` kept after unpadding."""
    cur_h, cur_w = current
    height, width = size
    if width / height > cur_w / cur_h:
        scaled = height * (cur_w / width)
        new = int(scaled) if layout == "paper" else int(round(scaled, 7))
        pad = (cur_h - new) // 2
        return pad, cur_h - pad, 0, cur_w
    scaled = width * (cur_h / height)
    new = int(scaled) if layout == "paper" else int(round(scaled, 7))
    pad = (cur_w - new) // 2
    return 0, cur_h, pad, cur_w - pad


def unpadded_shape(size: tuple[int, int], geometry: AnyresGeometry, layout: str) -> tuple[int, int]:
    """``(rows, columns)`` of grid features left after unpadding, for an image of ``(height, width)``."""
    rows, cols = feature_grid(size, geometry, layout)
    top, bottom, left, right = _unpadded_bounds((rows * geometry.side, cols * geometry.side), size, layout)
    return bottom - top, right - left


def image_token_count(size: tuple[int, int], geometry: AnyresGeometry, layout: str) -> int:
    """``<image>`` tokens an image of ``(height, width)`` becomes: overview tile + unpadded grid + a newline per row.

    Example:
        >>> image_token_count((480, 640), E5V_GEOMETRY, "paper")  # 24² + 36 rows x (48 + 1 newline)
        2340
    """
    rows, cols = unpadded_shape(size, geometry, layout)
    return geometry.side**2 + rows * (cols + 1)


# ---------------------------------------------------------------------------------------------- pixels ("paper")
def _patch_output_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Size the image is resized to inside ``target`` (aspect kept, long side exact, short side rounded up)."""
    height, width = size
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def _resize(pixels: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """PIL resize of a uint8 HxWx3 array (Pillow returns an exact copy when the size does not change)."""
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample=resample, reducing_gap=None))


def _shortest_edge_then_crop(pixels: np.ndarray, edge: int, crop: int, resample: int) -> np.ndarray:
    """Resize so the shortest side is ``edge`` (long side truncated), then centre-crop to ``crop`` (zero-filled)."""
    height, width = pixels.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    new_h, new_w = (new_long, edge) if width <= height else (edge, new_long)
    pixels = _resize(pixels, new_h, new_w, resample)
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + crop, left : left + crop]
    out = np.zeros((max(crop, new_h), max(crop, new_w), 3), dtype=pixels.dtype)
    top_pad, left_pad = (out.shape[0] - new_h) // 2, (out.shape[1] - new_w) // 2
    out[top_pad : top_pad + new_h, left_pad : left_pad + new_w] = pixels
    top, left = top + top_pad, left + left_pad
    return out[max(0, top) : top + crop, max(0, left) : left + crop]


def paper_pixel_values(image: Image.Image, geometry: AnyresGeometry = E5V_GEOMETRY) -> np.ndarray:
    """The tiles transformers 4.41.2's LLaVA-NeXT image processor makes of an RGB image: ``(tiles, 3, tile, tile)``.

    Overview tile (the whole image resized to ``shortest_edge`` square) first, then the grid tiles row by row: the
    image is resized into its best resolution (bicubic, aspect kept), padded with black by ``(target - new) // 2`` on
    both sides (one pixel short when the leftover is odd), cut into ``tile``-sized pieces, and every piece is resized
    to ``shortest_edge`` on its short side and centre-cropped to ``tile``; then rescaled and normalised in float32.

    Args:
        image: an RGB ``PIL.Image`` (``e5v_qdrant.media.load_image`` returns one).
        geometry: the checkpoint's geometry and pixel settings.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    original = np.asarray(image)
    size = (image.height, image.width)
    target = select_best_resolution(size, geometry.grid_pinpoints)
    new_h, new_w = _patch_output_size(size, target)
    resized = _resize(original, new_h, new_w, geometry.resample)
    pad_y, pad_x = (target[0] - new_h) // 2, (target[1] - new_w) // 2
    padded = np.pad(resized, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)))
    tile, edge = geometry.tile, geometry.shortest_edge
    pieces = [_resize(original, edge, edge, geometry.resample)]
    pieces += [
        padded[i : i + tile, j : j + tile]
        for i in range(0, padded.shape[0], tile)
        for j in range(0, padded.shape[1], tile)
    ]
    tiles = np.stack([_shortest_edge_then_crop(p, edge, tile, geometry.resample) for p in pieces])
    scaled = (tiles * geometry.rescale_factor).astype(np.float32)
    mean = np.asarray(geometry.image_mean, dtype=np.float32)
    std = np.asarray(geometry.image_std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------- features
def pack_features(features, size: tuple[int, int], geometry: AnyresGeometry, layout: str, newline=None):
    """One image's projected tile features ``(tiles, side², dim)`` as its sequence of image-token embeddings.

    The overview tile's features come first, then the grid tiles' features laid out as a feature map (see
    ``feature_grid``), unpadded (see ``unpadded_shape``), with ``newline`` appended to every row, row by row.

    Args:
        features: a ``torch.Tensor`` of shape ``(tiles, side * side, dim)``.
        size: the original image's ``(height, width)``.
        newline: the model's ``image_newline`` embedding ``(dim,)``, or ``None`` for none.

    Returns:
        A tensor ``(image_token_count(size, geometry, layout), dim)`` when ``newline`` is given.
    """
    import torch

    base = features[0]
    if features.shape[0] == 1:
        return base if newline is None else torch.cat((base, newline[None].to(base)), dim=0)
    side = geometry.side
    if base.shape[0] != side * side:
        raise ValueError(f"expected {side * side} features per tile, got {base.shape[0]} (CLS not dropped?)")
    rows, cols = feature_grid(size, geometry, layout)
    dim = features.shape[-1]
    grid = features[1:].reshape(rows, cols, side, side, dim).permute(4, 0, 2, 1, 3).reshape(dim, rows * side, -1)
    top, bottom, left, right = _unpadded_bounds((grid.shape[1], grid.shape[2]), size, layout)
    grid = grid[:, top:bottom, left:right]
    if newline is not None:
        grid = torch.cat((grid, newline[:, None, None].to(grid).expand(dim, grid.shape[1], 1)), dim=-1)
    return torch.cat((base, grid.flatten(1, 2).transpose(0, 1)), dim=0)


def use_paper_layout(model, geometry: AnyresGeometry, select_strategy: str = "default") -> None:
    """Make one loaded ``LlavaNextModel`` lay out image features as transformers 4.41.2 did.

    Binds a replacement ``pack_image_features`` on this model instance only (the class, and every other model in
    the process, keep transformers' own): transformers' ``get_image_features`` runs the vision tower and projector
    as always and hands each image's tile features to it; it returns them packed by ``pack_features(..., "paper")``.
    The caller supplies matching ``<image>`` token counts (``image_token_count(..., "paper")``) and pixels
    (``paper_pixel_values``); transformers checks that tokens and features agree. Binding this one step, rather than
    computing the input embeddings here, leaves the vision tower, projector, placeholder check and language model to
    transformers, in both layouts alike.

    Args:
        model: a loaded ``transformers`` ``LlavaNextModel``.
        geometry: its anyres geometry.
        select_strategy: the model config's ``vision_feature_select_strategy``.

    Raises:
        E5VModelError: the model cannot take the 4.41.2 layout (no ``pack_image_features``, as in transformers
            releases before 4.45 or after a rename; or a "full" feature strategy, which 4.41.2 rejected too).
    """
    if not callable(getattr(type(model), "pack_image_features", None)):
        raise E5VModelError(
            f"image_layout='paper' needs {type(model).__name__}.pack_image_features, which this transformers version "
            "lacks; use --image-layout llava-next (image_layout='llava-next')"
        )
    if select_strategy != "default":
        raise E5VModelError(
            f"image_layout='paper' reproduces transformers 4.41.2, which needs vision_feature_select_strategy "
            f"'default' (this checkpoint: {select_strategy!r}); use --image-layout llava-next"
        )

    def pack_image_features(image_features, image_sizes, vision_feature_select_strategy=None, image_newline=None):
        import torch

        packed = [
            pack_features(features, tuple(int(v) for v in size), geometry, "paper", image_newline)
            for features, size in zip(image_features, image_sizes, strict=True)
        ]
        lengths = torch.tensor([p.shape[0] for p in packed], dtype=torch.long, device=packed[0].device)
        return packed, lengths

    model.pack_image_features = pack_image_features
