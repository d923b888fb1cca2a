"""Masks for inpainting tasks, selectable by name: float32 arrays (B, H, W, C), 1 = known, 0 = to inpaint.

    mask = MASKS.lookup("centre_box")(rng, (B, H, W, C))

Every mask is the same in every channel. The random ones draw from a numpy Generator, one row after the
other, so mask i depends on the seed and i only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from score_sde.registry import Registry

MaskFn = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
MASKS: Registry[MaskFn] = Registry("mask")
# The unknown box covers this fraction of each side (a quarter of the image), as the paper's figures.
BOX_FRACTION = 0.5
# random_pixels: the fraction of pixels known.
KNOWN_FRACTION = 0.25


def _check(shape) -> tuple[int, int, int, int]:
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"masks are made for image batches (B, H, W, C), got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def _box(shape, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.ones(shape[1:], np.float32)
    mask[top : top + height, left : left + width] = 0.0
    return mask


@MASKS.register("centre_box")
def centre_box(rng: np.random.Generator, shape) -> np.ndarray:
    """The central box of half the height and half the width unknown."""
    b, h, w, _ = _check(shape)
    bh, bw = max(1, round(h * BOX_FRACTION)), max(1, round(w * BOX_FRACTION))
    return np.broadcast_to(_box(shape, (h - bh) // 2, (w - bw) // 2, bh, bw), shape).copy()


@MASKS.register("random_box")
def random_box(rng: np.random.Generator, shape) -> np.ndarray:
    """A box of half the height and width at a uniformly random position unknown, one per image."""
    b, h, w, _ = _check(shape)
    bh, bw = max(1, round(h * BOX_FRACTION)), max(1, round(w * BOX_FRACTION))
    return np.stack([_box(shape, rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1), bh, bw) for _ in range(b)])


@MASKS.register("half")
def half(rng: np.random.Generator, shape) -> np.ndarray:
    """The right half unknown (the left half known): outpainting."""
    b, h, w, _ = _check(shape)
    return np.broadcast_to(_box(shape, 0, w // 2, h, w - w // 2), shape).copy()


@MASKS.register("random_pixels")
def random_pixels(rng: np.random.Generator, shape) -> np.ndarray:
    """Each pixel (all its channels) known with probability 1/4, independently."""
    b, h, w, c = _check(shape)
    known = np.stack([rng.random((h, w)) < KNOWN_FRACTION for _ in range(b)])
    return np.repeat(known[..., None], c, axis=-1).astype(np.float32)
