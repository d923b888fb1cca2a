"""FIR up- and down-sampling of NHWC images, as in StyleGAN2 (Karras et al., 2020), used by NCSN++.

A resampling kernel is given in 1-D (``fir_kernel``, e.g. ``(1, 3, 3, 1)``); its outer product, normalised
to sum 1, is the (separable) 2-D filter. Upsampling inserts zeros between pixels then filters (the filter is scaled by
``factor**2`` so constant images stay constant); downsampling filters then keeps every ``factor``-th pixel.
`Conv2d` fuses such a resampling with a 3x3 convolution. Pixels outside the image are zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_NHWC = ("NHWC", "HWIO", "NHWC")


def _filter_1d(k: Sequence[float], gain: float) -> np.ndarray:
    """The 1-D factor of the separable 2-D filter outer(k, k) / sum(k)^2 * gain."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 1:
        raise ValueError(f"the FIR kernel must be 1-D (its outer product is the 2-D filter), got shape {k.shape}")
    return k / k.sum() * np.sqrt(gain)


def _upfirdn_1d(x, k: np.ndarray, axis: int, up: int, down: int, pad: tuple[int, int]):
    # One lax.pad inserts the zeros between samples (interior) and pads the ends; then the convolution with k is
    # a weighted sum of len(k) shifted, strided slices: elementwise work that XLA fuses, unlike a depthwise conv.
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (pad[0], pad[1] + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    n = (x.shape[axis] - len(k)) // down + 1
    taps = k[::-1]  # a convolution is a correlation with the flipped filter
    return sum(
        float(taps[j]) * jax.lax.slice_in_dim(x, j, j + (n - 1) * down + 1, down, axis)
        for j in range(len(k))
        if taps[j] != 0
    )


def upfirdn2d(x: jnp.ndarray, k: np.ndarray, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample (insert ``up - 1`` zeros after each pixel), pad, convolve with the separable filter outer(k, k),
    downsample (keep every ``down``-th pixel), along H and W.

    x: (B, H, W, C); k: 1-D; ``pad = (before, after)`` on both spatial axes. Returns
    (B, (H*up + before + after - len(k)) // down + 1, ...) in the dtype of x.
    """
    for axis in (1, 2):
        x = _upfirdn_1d(x, k, axis, up, down, pad)
    return x


def upsample_2d(x, k=(1, 3, 3, 1), factor: int = 2):
    """(B, H, W, C) -> (B, H*factor, W*factor, C), FIR-filtered."""
    k = _filter_1d(k, gain=factor**2)
    p = len(k) - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k=(1, 3, 3, 1), factor: int = 2):
    """(B, H, W, C) -> (B, H//factor, W//factor, C), FIR-filtered."""
    k = _filter_1d(k, gain=1.0)
    p = len(k) - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x, w, k=(1, 3, 3, 1), factor: int = 2):
    """Upsampling fused with a convolution by ``w`` (kh, kw, C_in, C_out): a stride-``factor`` transposed
    convolution followed by the FIR filter, padded once. (B, H, W, C_in) -> (B, H*factor, W*factor, C_out)."""
    conv_size = w.shape[0]
    x = jax.lax.conv_transpose(x, w, strides=(factor, factor), padding="VALID", dimension_numbers=_NHWC)
    k = _filter_1d(k, gain=factor**2)
    p = (len(k) - factor) - (conv_size - 1)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k=(1, 3, 3, 1), factor: int = 2):
    """The FIR filter followed by a stride-``factor`` convolution by ``w``, padded once.
    (B, H, W, C_in) -> (B, H//factor, W//factor, C_out)."""
    conv_size = w.shape[0]
    k = _filter_1d(k, gain=1.0)
    p = (len(k) - factor) + (conv_size - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return jax.lax.conv_general_dilated(x, w, window_strides=(factor, factor), padding="VALID", dimension_numbers=_NHWC)


def naive_upsample_2d(x, factor: int = 2):
    """Nearest-neighbour upsampling: each pixel becomes a factor x factor block."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x, factor: int = 2):
    """Mean over factor x factor blocks (H and W divisible by factor)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


class Conv2d(nn.Module):
    """A square convolution, optionally fused with FIR up- or downsampling by 2 (StyleGAN2).

    Parameters: ``weight`` (kernel, kernel, C_in, fmaps) and ``bias`` (fmaps,).
    """

    fmaps: int
    kernel: int
    up: bool = False
    down: bool = False
    resample_kernel: Sequence[int] = (1, 3, 3, 1)
    use_bias: bool = True
    kernel_init: Callable | None = None

    @nn.compact
    def __call__(self, x):
        if self.up and self.down:
            raise ValueError("Conv2d resamples up or down, not both")
        w = self.param("weight", self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
        w = w.astype(x.dtype)
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            x = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME", dimension_numbers=_NHWC)
        if self.use_bias:
            x = x + self.param("bias", nn.initializers.zeros, (self.fmaps,)).astype(x.dtype)
        return x
