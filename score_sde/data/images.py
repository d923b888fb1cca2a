"""Crops and resizes of one uint8 image (H, W, C), as the official code preprocesses each dataset.

The official code resizes with `tf.image.resize(..., antialias=True)`; we resize with Pillow, whose
resampling filters are antialiased when shrinking and match TF's (bilinear, Keys bicubic a=-0.5) up to
rounding. Every function returns uint8 (rounded, clipped), so a source always yields uint8 pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_MODES = {1: "L", 3: "RGB"}


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 (H, W, 1) or (H, W, 3) -> a Pillow image in mode L or RGB."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image, _MODES[image.shape[-1]])


def from_pil(image: Image.Image, num_channels: int) -> np.ndarray:
    """A Pillow image in any mode -> uint8 (H, W, num_channels), converting the colour mode if needed."""
    if num_channels not in _MODES:
        raise ValueError(f"config.data.num_channels must be 1 or 3, got {num_channels}")
    array = np.asarray(image.convert(_MODES[num_channels]), dtype=np.uint8)
    return array[..., None] if num_channels == 1 else array


def resize(
    image: np.ndarray, height: int, width: int | None = None, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """Resize to (height, width) (width defaults to height); a no-op at the same size."""
    width = height if width is None else width
    if image.shape[:2] == (height, width):
        return image
    return from_pil(to_pil(image).resize((width, height), resample), image.shape[-1])


def central_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre size x size crop (the official `central_crop`: offsets rounded down)."""
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {size}x{size} from an image of shape {image.shape}")
    return image[top : top + size, left : left + size]


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the shorter side is `size`, keeping the aspect ratio (the official `resize_small`)."""
    h, w = image.shape[:2]
    ratio = size / min(h, w)
    return resize(image, round(h * ratio), round(w * ratio))


def crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square, resized bicubically to size x size (the official `crop_resize`)."""
    square = min(image.shape[:2])
    h, w = image.shape[:2]
    image = image[(h - square) // 2 : (h + square) // 2, (w - square) // 2 : (w + square) // 2]
    return resize(image, size, resample=Image.Resampling.BICUBIC)
