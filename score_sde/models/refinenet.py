"""Blocks of the RefineNet of NCSN (Song & Ermon, 2019) and NCSNv2 (Song & Ermon, 2020).

A dilated ResNet encoder (`ResidualBlock`) and a RefineNet decoder (`RefineBlock`: residual conv units,
multi-resolution fusion, chained residual pooling). NCSN's conditional variants (``Cond*``) normalise with
``ConditionalInstanceNorm2dPlus`` on the noise-level index y before each convolution; they are the same
modules given a ``normalizer``, under the official class names (which name the parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.models.layers import same_conv
from score_sde.models.up_or_down_sampling import naive_downsample_2d


def ncsn_conv(
    x,
    features: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    bias: bool = True,
    dilation: int = 1,
    init_scale: float = 1.0,
):
    """'SAME' convolution with PyTorch's default initialisation, U(+-sqrt(scale / fan_in)) for kernel and bias
    (NCSN / NCSNv2). Creates ``Conv_<k>`` in the calling module."""
    scale = 1e-10 if init_scale == 0 else init_scale
    fan_in = kernel_size * kernel_size * x.shape[-1]
    bound = (scale / fan_in) ** 0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return same_conv(
        x,
        features,
        kernel_size,
        stride=stride,
        dilation=dilation,
        bias=bias,
        kernel_init=nn.initializers.variance_scaling(scale / 3, "fan_in", "uniform"),
        bias_init=bias_init,
    )


def normalize(normalizer, x, y=None):
    """``normalizer()`` applied to x, conditioned on y when given, in the dtype of x."""
    return (normalizer()(x) if y is None else normalizer()(x, y)).astype(x.dtype)


class CRPBlock(nn.Module):
    """Chained residual pooling: n_stages times, path = conv(pool5x5(path)); x += path.

    Max pooling; the conditional variant normalises the path then mean-pools (padding counted as zeros).
    """

    features: int
    n_stages: int
    act: Callable = nn.relu
    normalizer: Callable | None = None

    @nn.compact
    def __call__(self, x, y=None):
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            if self.normalizer is None:
                path = nn.max_pool(path, (5, 5), strides=(1, 1), padding="SAME")
            else:
                path = nn.avg_pool(normalize(self.normalizer, path, y), (5, 5), strides=(1, 1), padding="SAME")
            path = ncsn_conv(path, self.features, bias=False)
            x = path + x
        return x


class CondCRPBlock(CRPBlock):
    """`CRPBlock` of NCSN (normalizer required)."""


class RCUBlock(nn.Module):
    """Residual conv units: n_blocks times, x += (act -> conv3x3) applied n_stages times (normalising first in
    the conditional variant)."""

    features: int
    n_blocks: int
    n_stages: int
    act: Callable = nn.relu
    normalizer: Callable | None = None

    @nn.compact
    def __call__(self, x, y=None):
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                if self.normalizer is not None:
                    x = normalize(self.normalizer, x, y)
                x = ncsn_conv(self.act(x), self.features, bias=False)
            x = x + residual
        return x


class CondRCUBlock(RCUBlock):
    """`RCUBlock` of NCSN (normalizer required)."""


class MSFBlock(nn.Module):
    """Multi-resolution fusion: sum over inputs of conv3x3(x_i) resized to ``shape`` (H, W)."""

    shape: Sequence[int]
    features: int
    interpolation: str = "bilinear"
    normalizer: Callable | None = None

    @nn.compact
    def __call__(self, xs, y=None):
        methods = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}
        if self.interpolation not in methods:
            raise ValueError(f"config.model.interpolation={self.interpolation!r} is not one of {sorted(methods)}")
        total = 0.0
        for x in xs:
            if self.normalizer is not None:
                x = normalize(self.normalizer, x, y)
            h = ncsn_conv(x, self.features)
            total = total + jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), methods[self.interpolation])
        return total


class CondMSFBlock(MSFBlock):
    """`MSFBlock` of NCSN (normalizer required)."""


class RefineBlock(nn.Module):
    """One RefineNet stage: RCUs on each input, fusion to ``output_shape`` (unless ``start``: one input), CRP,
    output RCUs (3 blocks if ``end`` else 1)."""

    output_shape: Sequence[int]
    features: int
    act: Callable = nn.relu
    interpolation: str = "bilinear"
    start: bool = False
    end: bool = False
    normalizer: Callable | None = None

    @nn.compact
    def __call__(self, xs, y=None):
        conditional = self.normalizer is not None
        rcu = CondRCUBlock if conditional else RCUBlock
        msf = CondMSFBlock if conditional else MSFBlock
        crp = CondCRPBlock if conditional else CRPBlock
        common = dict(act=self.act, normalizer=self.normalizer)
        hs = [rcu(features=x.shape[-1], n_blocks=2, n_stages=2, **common)(x, y) for x in xs]
        if self.start:
            h = hs[0]
        else:
            h = msf(
                shape=tuple(self.output_shape),
                features=self.features,
                interpolation=self.interpolation,
                normalizer=self.normalizer,
            )(hs, y)
        h = crp(features=self.features, n_stages=2, **common)(h, y)
        return rcu(features=self.features, n_blocks=3 if self.end else 1, n_stages=2, **common)(h, y)


class CondRefineBlock(RefineBlock):
    """`RefineBlock` of NCSN (normalizer required)."""


class ConvMeanPool(nn.Module):
    """A 'SAME' convolution (Flax's default initialisation) then 2x2 mean pooling."""

    output_dim: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        return naive_downsample_2d(nn.Conv(self.output_dim, (k, k), padding="SAME", dtype=x.dtype)(x))


class ResidualBlock(nn.Module):
    """Pre-activation residual block of the ResNet encoder: norm-act-conv-norm-act-conv plus a shortcut.

    ``resample='down'`` halves the resolution (conv then mean pool) when ``dilation`` is 1; with dilation > 1
    it keeps the resolution and only changes the channels (NCSNv2's dilated stages).
    ``normalization`` is a factory, ``normalization()(x)``, or ``normalization()(x, y)`` when y is given.
    """

    output_dim: int
    normalization: Callable
    resample: str | None = None
    act: Callable = nn.elu
    dilation: int = 1

    @nn.compact
    def __call__(self, x, y=None):
        in_dim = x.shape[-1]
        h = self.act(normalize(self.normalization, x, y))
        if self.resample == "down":
            h = ncsn_conv(h, in_dim, dilation=self.dilation)
            h = self.act(normalize(self.normalization, h, y))
            if self.dilation > 1:
                h = ncsn_conv(h, self.output_dim, dilation=self.dilation)
                shortcut = ncsn_conv(x, self.output_dim, dilation=self.dilation)
            else:
                h = ConvMeanPool(self.output_dim)(h)
                shortcut = ConvMeanPool(self.output_dim, kernel_size=1)(x)
        elif self.resample is None:
            if self.output_dim == in_dim:
                shortcut = x
            elif self.dilation > 1:
                shortcut = ncsn_conv(x, self.output_dim, dilation=self.dilation)
            else:
                shortcut = ncsn_conv(x, self.output_dim, 1)
            h = ncsn_conv(h, self.output_dim, dilation=self.dilation)
            h = self.act(normalize(self.normalization, h, y))
            h = ncsn_conv(h, self.output_dim, dilation=self.dilation)
        else:
            raise ValueError(f"resample={self.resample!r} is not 'down' or None")
        return h + shortcut


class ConditionalResidualBlock(ResidualBlock):
    """`ResidualBlock` of NCSN, normalising conditionally on the noise-level index y."""
