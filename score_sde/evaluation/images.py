"""uint8 image sets on disk: folders of image files or of array shards, single .npy/.npz arrays; image grids."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from score_sde import files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
ARRAY_EXTENSIONS = (".npz", ".npy")


def to_uint8(x: np.ndarray, centered: bool = False) -> np.ndarray:
    """Float images (N, ...) in [0, 1] ([-1, 1] if ``centered``) -> uint8 by rounding to the nearest level.
    Raises ValueError if an image holds NaN or inf (a diverged sampler), which no uint8 value stands for."""
    x = np.asarray(x, np.float32)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{bad.sum()} of {len(x)} images hold NaN or inf values: the sampler diverged")
    if centered:
        x = (x + 1.0) / 2.0
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _nhwc(a: np.ndarray, source: str) -> np.ndarray:
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 images (N, H, W) or (N, H, W, 1 or 3), got {a.dtype} {a.shape}")
    return a


def load_array(path: str, mmap: bool = False) -> np.ndarray:
    """uint8 images (N, H, W, C) from an .npy, or from an .npz's ``samples`` array (the official
    code's sample files) or its only array."""
    if path.endswith(".npy"):
        return _nhwc(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False), path)
    with np.load(path, allow_pickle=False) as f:
        if "samples" in f.files:
            key = "samples"
        elif len(f.files) == 1:
            key = f.files[0]
        else:
            raise ValueError(f"{path} holds {f.files}: expected one array, or one named 'samples'")
        return _nhwc(f[key], f"{path}[{key}]")


def _files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(extensions)]
    return found


def _read_image(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im if im.mode == "L" else im.convert("RGB"), np.uint8)


def iter_batches(path: str, batch_size: int = 256) -> Iterator[np.ndarray]:
    """uint8 (B, H, W, C) batches of every image at ``path``, in a fixed order (sorted names): a
    folder of image files (searched recursively), a folder of .npz/.npy shards, or one .npz/.npy.
    Never holds more than one batch of decoded files or one shard."""
    if os.path.isfile(path):
        if not path.endswith(ARRAY_EXTENSIONS):
            raise ValueError(f"{path}: expected a folder, an .npz or an .npy file")
        arrays = load_array(path, mmap=True)
        for i in range(0, len(arrays), batch_size):
            yield np.ascontiguousarray(arrays[i : i + batch_size])
        return
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no images at {path}")
    images, shards = _files(path, IMAGE_EXTENSIONS), _files(path, ARRAY_EXTENSIONS)
    if images and shards:
        raise ValueError(f"{path} mixes image files and array shards; give one kind")
    if not images and not shards:
        raise ValueError(f"{path} has no images ({', '.join(IMAGE_EXTENSIONS + ARRAY_EXTENSIONS)})")
    if shards:
        for shard in shards:
            yield from iter_batches(shard, batch_size)
        return
    for i in range(0, len(images), batch_size):
        batch = [_read_image(p) for p in images[i : i + batch_size]]
        shapes = {b.shape for b in batch}
        if len(shapes) > 1:
            raise ValueError(f"{path}: images of different sizes {sorted(shapes)}; resize them first")
        yield _nhwc(np.stack(batch), path)


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) uint8 grid, row-major."""
    images = _nhwc(np.asarray(images), "image_grid")
    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = im
    return grid


def save_png(path: str, image: np.ndarray) -> None:
    """Writes an (H, W, C) uint8 image as PNG, atomically."""
    with files.atomic_open(path) as f:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(f, format="PNG")


def save_grid(images: np.ndarray, path: str, min_size: int = 256, nrow: int | None = None) -> np.ndarray:
    """Tiles images (N, H, W, C) in [0, 1] into one PNG (written atomically), ``nrow`` per row (default about
    sqrt(N)), enlarged by an integer factor (nearest neighbour) to at least ``min_size`` pixels wide so that
    small images can be seen. Returns the grid (uint8, before enlarging)."""
    grid = image_grid(np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8), nrow)
    factor = max(1, -(-min_size // grid.shape[1]))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_png(path, np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1))
    return grid
