"""Inception features of uint8 images, jitted and sharded over every device, streamed in batches."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_sde.evaluation import weights as weights_lib
from score_sde.evaluation.inception import InceptionV3, check_resize, preprocess


def rebatch(batches: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroups arrays of any lengths into arrays of exactly ``size`` rows; the last may be shorter
    (never empty, never dropped)."""
    buffer: list[np.ndarray] = []
    held = 0
    for batch in batches:
        batch = np.asarray(batch)
        while len(batch):
            take = min(size - held, len(batch))
            buffer.append(batch[:take])
            held += take
            batch = batch[take:]
            if held == size:
                yield np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
                buffer, held = [], 0
    if held:
        yield np.concatenate(buffer)


class InceptionFeatures:
    """Maps uint8 images (N, H, W, C), C in {1, 3}, to ``{"pool3": (N, 2048) float32}`` and, when the
    weights have the head, ``"logits": (N, 1008)``.

    Images go to the devices as uint8 in batches of ``batch_size`` rows (rounded up to a multiple of
    the device count), split over the devices along the batch; resizing (by the convention ``resize``, see
    `inception.RESIZES`) and scaling (`preprocess`)
    run on the devices. The last batch is zero-padded to the fixed size (one compilation per image
    shape) and the padding rows are dropped from the output.
    """

    def __init__(
        self, weights: str | tuple[dict, dict] | None = None, batch_size: int = 200, devices=None, resize: str = "tf1"
    ):
        self.resize = check_resize(resize)
        variables, self.meta = weights if isinstance(weights, tuple) else weights_lib.load(weights)
        self.has_logits = bool(self.meta["has_logits"])
        devices = tuple(devices or jax.local_devices())  # this process's devices: host-local images
        self.batch_size = -(-batch_size // len(devices)) * len(devices)
        self._apply, self._rows, replicated = _compiled(self.has_logits, devices, resize)
        self._variables = jax.device_put(variables, replicated)

    def _dispatch(self, chunk: np.ndarray):
        if chunk.dtype != np.uint8:
            raise TypeError(
                f"Inception features take uint8 images, got {chunk.dtype} "
                "(quantise samples first, e.g. with score_sde.evaluation.images.to_uint8)"
            )
        n = len(chunk)
        if n < self.batch_size:
            chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)])
        return self._apply(self._variables, jax.device_put(chunk, self._rows)), n

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Features of each fixed-size chunk of the images in ``batches`` (any lengths), in order.
        One chunk is in flight on the devices while the host reads the next."""
        pending = None
        for chunk in rebatch(batches, self.batch_size):
            dispatched = self._dispatch(chunk)
            if pending is not None:
                yield _fetch(*pending)
            pending = dispatched
        if pending is not None:
            yield _fetch(*pending)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if len(images) == 0:
            raise ValueError("no images to compute features of")
        outs = list(self.stream([images]))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


@functools.lru_cache(maxsize=8)
def _compiled(has_logits: bool, devices: tuple, resize: str):
    """The jitted network for these devices, shared by every extractor (one compilation per shape)."""
    mesh = jax.make_mesh((len(devices),), ("batch",), devices=devices)
    rows, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    model = InceptionV3(logits=has_logits)
    apply = jax.jit(
        lambda v, x: model.apply(v, preprocess(x, resize=resize)), in_shardings=(replicated, rows), out_shardings=rows
    )
    return apply, rows, replicated


def _fetch(out, n: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:n] for k, v in out.items()}
