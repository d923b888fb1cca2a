"""Batches for training and evaluation, as grain MapDatasets: random access by step, so deterministic,
resumable and independent of how many hosts and devices share them.

Training: the global batch of step s holds the examples at positions s*B .. s*B + B-1 of an endless
sequence made of one permutation of the source per epoch (grain's index shuffle, seeded by config.seed
and the epoch); the flip and dequantisation noise of row j of step s come from a generator seeded by
(config.seed, s, j). So batch s is a function of (config.seed, s) only. Host p of P takes rows
[p*B/P, (p+1)*B/P) of it.

Pixels: x = pixel / 255 in [0, 1], or with uniform dequantisation x = (pixel + u) / 256 with
u ~ U[0, 1) (on a grid of 2^-16), as the official code; then scaled to [-1, 1] when config.data.centered.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np
from grain.experimental import index_shuffle

from score_sde.data.sources import ImageSource

# Stream tags keep the generators of the shuffle, the training noise and the evaluation noise apart.
_SHUFFLE, _TRAIN, _EVAL = 0, 1, 2


def get_data_scaler(config) -> Callable:
    """x in [0, 1] -> the model's range: 2x - 1 if config.data.centered, else x."""
    if config.data.centered:
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def get_data_inverse_scaler(config) -> Callable:
    """The model's range -> [0, 1]: the inverse of `get_data_scaler`."""
    if config.data.centered:
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


def host_rows(batch_size: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The rows of a global batch that one process (host) takes: contiguous, batch_size / process_count
    of them. Defaults to jax.process_index() / jax.process_count()."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if batch_size % count:
        raise ValueError(f"batch size {batch_size} is not divisible by the number of processes {count}")
    if not 0 <= index < count:
        raise ValueError(f"process_index {index} is not in [0, {count})")
    local = batch_size // count
    return slice(index * local, (index + 1) * local)


def _seed(config) -> int:
    seed = int(config.seed)
    if seed < 0:
        raise ValueError(f"config.seed must be a non-negative integer, got {seed}")
    return seed


def _to_float(
    images: np.ndarray, rngs: list[np.random.Generator] | None, *, flip: bool, dequantize: bool, centered: bool
) -> np.ndarray:
    """uint8 (b, H, W, C) -> float32 in [0, 1], or [-1, 1] if centered.

    Row k uses rngs[k] (needed when flip or dequantize): its first draw u0 flips the row left-right when
    flip and u0 < 1/2; then, with dequantize, x = (pixel + u) / 256 (the official uniform dequantisation)
    with u uniform on the 2^16 values {0, 1/2^16, ..., 1 - 1/2^16}, else x = pixel / 255. With 16 bits of
    noise below the 8 of the pixel, pixel + u is exact in float32, so floor(256 x) = pixel and x < 1 always.
    """
    coins = np.array([rng.random() < 0.5 for rng in rngs]) if flip or dequantize else None
    if flip and coins.any():
        images = images.copy()
        images[coins] = images[coins][:, :, ::-1]
    x = images.astype(np.float32)
    if dequantize:
        u = np.stack([rng.integers(0, 2**16, images.shape[1:], dtype=np.uint16) for rng in rngs])
        x *= 2**16
        x += u
        x *= np.float32(2**-24)  # = (pixel + u / 2^16) / 256, every step exact in float32
    else:
        x /= 255.0
    if centered:
        x *= 2.0
        x -= 1.0
    return x


def _shuffled(position: int, n: int, seed: int) -> int:
    """The example at `position` of the endless training sequence: epoch position // n is a permutation of
    [0, n) seeded by (seed + epoch) (grain's index shuffle, as grain's MapDataset.shuffle uses it)."""
    epoch, index = divmod(position, n)
    return index_shuffle(index, max_index=n - 1, seed=(seed + epoch) % 2**32, rounds=4)


def train_dataset(
    source: ImageSource,
    config,
    *,
    batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_devices: int | None = None,
) -> grain.MapDataset:
    """This host's training batches as an endless random-access dataset: `ds[s]` is the local batch of
    step s, a dict(image=float32 (b, H, W, C), label=int32 (b,)) with b = batch_size / process_count.

    batch_size defaults to config.training.batch_size (the global batch); it must be divisible by
    process_count and by num_devices (default jax.device_count(): every device gets an equal shard).
    Reads config.seed, config.data.random_flip, uniform_dequantization, centered.
    """
    batch = config.training.batch_size if batch_size is None else batch_size
    devices = jax.device_count() if num_devices is None else num_devices
    if batch % devices:
        raise ValueError(f"batch size {batch} is not divisible by the number of devices {devices}")
    rows = host_rows(batch, process_index, process_count)
    seed = _seed(config)
    flip, dequantize = bool(config.data.random_flip), bool(config.data.uniform_dequantization)
    centered = bool(config.data.centered)
    shuffle_seed = int(np.random.SeedSequence([seed, _SHUFFLE]).generate_state(1)[0])
    n = len(source)
    js = range(rows.start, rows.stop)

    def local_batch(step: int) -> dict:
        items = [source[_shuffled(step * batch + j, n, shuffle_seed)] for j in js]
        images = np.stack([image for image, _ in items])
        labels = np.array([label for _, label in items], np.int32)
        rngs = [np.random.default_rng([seed, _TRAIN, step, j]) for j in js] if flip or dequantize else None
        return dict(image=_to_float(images, rngs, flip=flip, dequantize=dequantize, centered=centered), label=labels)

    return grain.MapDataset.range(sys.maxsize).map(local_batch)


def _iterate(ds: grain.MapDataset, prefetch: int, num_threads: int) -> Iterator:
    """Iterate `ds` in order; with prefetch > 0, `num_threads` threads prepare up to `prefetch` elements
    ahead, while the caller works on the current one."""
    options = grain.ReadOptions(num_threads=num_threads if prefetch > 0 else 0, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def train_batches(
    source: ImageSource,
    config,
    *,
    start_step: int = 0,
    n_steps: int | None = None,
    batch_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_devices: int | None = None,
    prefetch: int = 2,
    num_threads: int = 2,
) -> Iterator[dict]:
    """The training batches of steps start_step, start_step + 1, ... (endless), prepared in the background.

    Yields `train_dataset(...)[s]` for s = start_step, start_step+1, ... ; with n_steps, blocks of n_steps
    consecutive steps stacked: image (n_steps, b, H, W, C), label (n_steps, b), the k-th block holding
    steps start_step + k*n_steps ... (for a scan over n_jitted_steps per call). Starting at any step gives
    exactly the batches an uninterrupted run sees from that step on. prefetch: how many elements (steps or
    blocks) are prepared ahead (0: none, each made when asked for); num_threads: how many threads make them.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    ds = train_dataset(
        source,
        config,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        num_devices=num_devices,
    )[start_step:]
    if n_steps is not None:
        ds = ds.batch(n_steps)
    return _iterate(ds, prefetch, num_threads)


def eval_dataset(
    source: ImageSource,
    batch_size: int,
    config,
    *,
    dequantize: bool = False,
    uint8: bool = False,
    repeat: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
    """One pass over `source` in order, as ceil(N / batch_size) global batches; `ds[i]` is this host's
    rows of global batch i: dict(image, label=int32 (b,), mask=bool (b,)).

    Every example appears exactly once; the last global batch is padded to batch_size with zero images
    and label 0, marked mask=False (every batch has the same shape, so a jitted step compiles once).
    image is float32 in the config's range (config.data.centered), with no flips; with dequantize, the
    uniform noise of example i comes from a generator seeded by (config.seed, repeat, i), so each of several
    passes (repeat = 0, 1, ..., as the official eval.bpd_num_repeats) has its own noise. With uint8, image
    is the raw uint8 pixels (no scaling, no noise), e.g. for FID reference statistics.
    """
    if dequantize and uint8:
        raise ValueError("eval_dataset: dequantize and uint8 exclude each other")
    rows = host_rows(batch_size, process_index, process_count)
    seed, n, centered = _seed(config), len(source), bool(config.data.centered)
    shape = source[0][0].shape

    def local_batch(i: int) -> dict:
        positions = np.arange(i * batch_size + rows.start, i * batch_size + rows.stop)
        mask = positions < n
        images = np.zeros((len(positions), *shape), np.uint8)
        labels = np.zeros(len(positions), np.int32)
        for row, position in enumerate(positions[mask]):
            images[row], labels[row] = source[int(position)]
        if not uint8:
            rngs = [np.random.default_rng([seed, _EVAL, repeat, int(p)]) for p in positions] if dequantize else None
            images = _to_float(images, rngs, flip=False, dequantize=dequantize, centered=centered)
            images[~mask] = 0.0
        return dict(image=images, label=labels, mask=mask)

    return grain.MapDataset.range(math.ceil(n / batch_size)).map(local_batch)


def eval_batches(
    source: ImageSource, batch_size: int, config, *, prefetch: int = 2, num_threads: int = 2, **options
) -> Iterator[dict]:
    """Iterate `eval_dataset(source, batch_size, config, **options)` (one pass, in order; options: dequantize,
    uint8, repeat, process_index, process_count), preparing `prefetch` batches ahead."""
    return _iterate(eval_dataset(source, batch_size, config, **options), prefetch, num_threads)
