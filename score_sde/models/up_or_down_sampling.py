"""FIR up- and down-sampling of NHWC images, as in StyleGAN2 (Karras et al., 2020), used by NCSN++.

A resampling kernel is given in 1-D (``fir_kernel``, e.g. ``(1, 3, 3, 1)``); its outer product, normalised
to sum 1, is the 2-D filter. Upsampling inserts zeros between pixels then filters (the filter is scaled by
``factor**2`` so constant images stay constant); downsampling filters then keeps every ``factor``-th pixel.
`Conv2d` fuses such a resampling with a 3x3 convolution. Pixels outside the image are zero.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _filter_2d(k: Sequence[float], gain: float) -> np.ndarray:
  k = np.asarray(k, dtype=np.float64)
  if k.ndim == 1:
    k = np.outer(k, k)
  return (k / k.sum() * gain).astype(np.float32)


def upfirdn2d(x: jnp.ndarray, k: np.ndarray, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
  """Upsample (insert ``up - 1`` zeros after each pixel), pad, convolve with the 2-D filter ``k``, downsample.

  x: (B, H, W, C); ``pad = (before, after)`` on both spatial axes. Returns
  (B, (H*up + before + after - kh) // down + 1, ...) in the dtype of x. Each channel is filtered alone.
  """
  channels = x.shape[-1]
  # A true convolution (as upfirdn defines it) is a correlation with the flipped filter.
  w = jnp.asarray(k[::-1, ::-1], x.dtype)[:, :, None, None]
  w = jnp.tile(w, (1, 1, 1, channels))
  # lhs_dilation puts zeros only between pixels; upfirdn also puts them after the last one.
  padding = [(pad[0], pad[1] + up - 1)] * 2
  return jax.lax.conv_general_dilated(x, w, window_strides=(down, down), padding=padding, lhs_dilation=(up, up),
                                      dimension_numbers=_NHWC, feature_group_count=channels)


def upsample_2d(x, k=(1, 3, 3, 1), factor: int = 2):
  """(B, H, W, C) -> (B, H*factor, W*factor, C), FIR-filtered."""
  k = _filter_2d(k, gain=factor**2)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k=(1, 3, 3, 1), factor: int = 2):
  """(B, H, W, C) -> (B, H//factor, W//factor, C), FIR-filtered."""
  k = _filter_2d(k, gain=1.)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x, w, k=(1, 3, 3, 1), factor: int = 2):
  """Upsampling fused with a convolution by ``w`` (kh, kw, C_in, C_out): a stride-``factor`` transposed
  convolution followed by the FIR filter, padded once. (B, H, W, C_in) -> (B, H*factor, W*factor, C_out)."""
  conv_size = w.shape[0]
  x = jax.lax.conv_transpose(x, w, strides=(factor, factor), padding='VALID', dimension_numbers=_NHWC)
  k = _filter_2d(k, gain=factor**2)
  p = (k.shape[0] - factor) - (conv_size - 1)
  return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k=(1, 3, 3, 1), factor: int = 2):
  """The FIR filter followed by a stride-``factor`` convolution by ``w``, padded once.
  (B, H, W, C_in) -> (B, H//factor, W//factor, C_out)."""
  conv_size = w.shape[0]
  k = _filter_2d(k, gain=1.)
  p = (k.shape[0] - factor) + (conv_size - 1)
  x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
  return jax.lax.conv_general_dilated(x, w, window_strides=(factor, factor), padding='VALID',
                                      dimension_numbers=_NHWC)


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
  kernel_init: Optional[Callable] = None

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ValueError('Conv2d resamples up or down, not both')
    w = self.param('weight', self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    w = w.astype(x.dtype)
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1), padding='SAME', dimension_numbers=_NHWC)
    if self.use_bias:
      x = x + self.param('bias', nn.initializers.zeros, (self.fmaps,)).astype(x.dtype)
    return x
