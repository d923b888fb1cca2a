"""Layers of the U-Nets (DDPM, and NCSN++ / DDPM++): initialisers, convolutions, time embeddings, self-attention,
resampling, residual blocks.

Every layer computes in the dtype of its input (parameters are float32 and cast at use), so a network
casts its input once to choose float32 or bfloat16 compute. Class names are those of the official code:
Flax names submodules ``<ClassName>_<k>``, so they fix the parameter tree of the released checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.models import up_or_down_sampling as updown

# ---------------------------------------------------------------------------------------------------------
# Initialisers and convolutions


def default_init(scale: float = 1.0):
    """DDPM's initialiser: uniform with variance ``scale / fan_avg``. A scale of 0 becomes 1e-10 (almost-zero
    init of the last layer of a residual branch, yet nonzero)."""
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def same_conv(
    x, features: int, kernel_size: int, *, stride: int, dilation: int = 1, bias: bool, kernel_init, bias_init
):
    """'SAME' square convolution computing in the dtype of x. Creates ``Conv_<k>`` in the calling module."""
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding="SAME",
        use_bias=bias,
        kernel_dilation=(dilation, dilation),
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=x.dtype,
    )(x)


def ddpm_conv(x, features: int, kernel_size: int = 3, *, stride: int = 1, bias: bool = True, init_scale: float = 1.0):
    """'SAME' convolution with DDPM's initialisation (bias zero). Creates ``Conv_<k>`` in the calling module."""
    return same_conv(
        x,
        features,
        kernel_size,
        stride=stride,
        bias=bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
    )


def conv3x3(x, features, **kwargs):
    return ddpm_conv(x, features, 3, **kwargs)


def conv1x1(x, features, **kwargs):
    return ddpm_conv(x, features, 1, **kwargs)


def check_unet_input(x, num_resolutions: int) -> None:
    """A U-Net halves H and W ``num_resolutions - 1`` times: they must be divisible by 2 that many times."""
    factor = 2 ** (num_resolutions - 1)
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(
            f"images of shape {x.shape[1:]} (B, H, W, C expected): H and W must be divisible by "
            f"{factor} = 2 ** (len(config.model.ch_mult) - 1)"
        )


def group_norm(x, num_groups: int, epsilon: float = 1e-6):
    """Flax GroupNorm (``GroupNorm_<k>``), computing in the dtype of x (statistics in float32)."""
    return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=x.dtype)(x)


def ncsnpp_groups(channels: int) -> int:
    """The GroupNorm groups of NCSN++ / DDPM++ blocks: min(channels // 4, 32)."""
    return min(channels // 4, 32)


class DDPMGroups:
    """Mixin for the blocks of DDPM, which normalise with 32 groups whatever the number of channels: the
    NCSN++ block it precedes (``class AttnBlock(DDPMGroups, AttnBlockpp)``) with DDPM's GroupNorms."""

    @staticmethod
    def num_groups(channels: int) -> int:
        return 32


def add_skip(x, h, skip_rescale: bool):
    """x + h, divided by sqrt(2) with ``skip_rescale`` so that the variance stays that of one branch."""
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class NIN(nn.Module):
    """A per-pixel linear map ("network in network"): x @ W + b over the last axis. Parameters W (C_in, units), b."""

    num_units: int
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
        b = self.param("b", nn.initializers.zeros, (self.num_units,))
        return x @ w.astype(x.dtype) + b.astype(x.dtype)


# ---------------------------------------------------------------------------------------------------------
# Time / noise-level embeddings


def get_timestep_embedding(timesteps, embedding_dim: int, max_positions: int = 10000):
    """Sinusoidal embedding of (B,) time steps (Transformer / DDPM): (B, embedding_dim) float32.

    Frequencies ``max_positions ** (-i / (half - 1))`` for i < half = embedding_dim // 2; sines then cosines.
    """
    half = embedding_dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(max_positions) / (half - 1)))
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, [(0, 0), (0, 1)])
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar (Tancik et al., 2020): [sin(2 pi W s), cos(2 pi W s)], W ~ N(0, scale^2).

    W is a parameter (so it is saved) but never trained. (B,) -> (B, 2 * embedding_size).
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, s):
        w = jax.lax.stop_gradient(self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,)))
        proj = s[:, None] * w[None, :] * (2 * math.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def add_class_embedding(temb, class_labels, num_classes: int):
    """temb (B, E) plus a learnt embedding (``Embed_<k>``, (num_classes + 1, E)) of the class labels (B,) int:
    class conditioning as EDM and ADM add it to the noise-level embedding. Label ``num_classes`` is the "null"
    label, whose network is the unconditional one (classifier-free guidance trains both, Ho & Salimans 2022);
    ``class_labels=None`` means it for every example. An unconditional network (num_classes = 0) is unchanged
    and refuses labels."""
    if num_classes == 0:
        if class_labels is not None:
            raise ValueError("class labels given to an unconditional network (config.model.num_classes = 0)")
        return temb
    if temb is None:
        raise ValueError("config.model.num_classes > 0 needs a noise-level embedding (config.model.conditional)")
    if class_labels is None:
        class_labels = jnp.full(temb.shape[:1], num_classes, jnp.int32)
    if jnp.shape(class_labels) != temb.shape[:1]:
        raise ValueError(f"class labels must have shape (batch,) = {temb.shape[:1]}, got {jnp.shape(class_labels)}")
    embedding = nn.Embed(num_classes + 1, temb.shape[-1], embedding_init=nn.initializers.normal(1.0))
    return temb + embedding(jnp.asarray(class_labels, jnp.int32)).astype(temb.dtype)


# ---------------------------------------------------------------------------------------------------------
# Self-attention over all pixels


class AttnBlockpp(nn.Module):
    """Single-head self-attention over the H*W pixels, with a residual connection (NCSN++).

    GroupNorm, then 1x1 projections q, k, v (NIN_0..2), softmax(q k^T / sqrt(C)) v, output projection NIN_3.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups = staticmethod(ncsnpp_groups)

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        h = group_norm(x, self.num_groups(c))
        q, k, v = (NIN(c)(h).reshape(b, height * width, 1, c) for _ in range(3))
        h = jax.nn.dot_product_attention(q, k, v, scale=c**-0.5).reshape(b, height, width, c)
        h = NIN(c, init_scale=self.init_scale)(h)
        return add_skip(x, h, self.skip_rescale)


class AttnBlock(DDPMGroups, AttnBlockpp):
    """DDPM's self-attention block: AttnBlockpp with 32 groups in its GroupNorm (and its defaults)."""


# ---------------------------------------------------------------------------------------------------------
# Resampling


class _Resample(nn.Module):
    """The options of `Upsample` and `Downsample`; ``out_ch`` defaults to the input channels."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)


class Upsample(_Resample):
    """2x upsampling: nearest-neighbour then an optional 3x3 conv, or (``fir``) FIR upsampling, fused with the
    conv when ``with_conv``."""

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = updown.naive_upsample_2d(x)
            return conv3x3(h, out_ch) if self.with_conv else h
        if not self.with_conv:
            return updown.upsample_2d(x, self.fir_kernel)
        return updown.Conv2d(
            out_ch, kernel=3, up=True, resample_kernel=tuple(self.fir_kernel), kernel_init=default_init()
        )(x)


class Downsample(_Resample):
    """2x downsampling: a stride-2 3x3 conv or 2x2 mean, or (``fir``) FIR downsampling, fused with the conv when
    ``with_conv``."""

    @nn.compact
    def __call__(self, x):
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            return conv3x3(x, out_ch, stride=2) if self.with_conv else updown.naive_downsample_2d(x)
        if not self.with_conv:
            return updown.downsample_2d(x, self.fir_kernel)
        return updown.Conv2d(
            out_ch, kernel=3, down=True, resample_kernel=tuple(self.fir_kernel), kernel_init=default_init()
        )(x)


class Combine(nn.Module):
    """Merges the input pyramid into the features (NCSN++ ``input_skip``): 1x1 conv of x to y's channels, then
    concatenated with y ('cat') or added to it ('sum')."""

    method: str = "cat"

    @nn.compact
    def __call__(self, x, y):
        h = conv1x1(x, y.shape[-1])
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"config.model.progressive_combine={self.method!r} is not 'cat' or 'sum'")


# ---------------------------------------------------------------------------------------------------------
# Residual blocks


def _time_bias(temb, act, out_ch: int, dtype):
    """Per-channel bias from the time embedding: Dense(act(temb)), shaped (B, 1, 1, out_ch)."""
    return nn.Dense(out_ch, kernel_init=default_init(), dtype=dtype)(act(temb))[:, None, None, :]


class ResnetBlockDDPMpp(nn.Module):
    """DDPM's residual block with NCSN++'s options: GN-act-conv, + time bias, GN-act-dropout-conv, + shortcut.

    The shortcut is a 1x1 map (NIN) or, with ``conv_shortcut``, a 3x3 conv when the channels change.
    """

    act: Callable
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups = staticmethod(ncsnpp_groups)

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        in_ch = x.shape[-1]
        out_ch = self.out_ch or in_ch
        h = self.act(group_norm(x, self.num_groups(in_ch)))
        h = conv3x3(h, out_ch)
        if temb is not None:
            h = h + _time_bias(temb, self.act, out_ch, x.dtype)
        h = self.act(group_norm(h, self.num_groups(out_ch)))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if in_ch != out_ch:
            x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
        return add_skip(x, h, self.skip_rescale)


class ResnetBlockDDPM(DDPMGroups, ResnetBlockDDPMpp):
    """DDPM's residual block (Ho et al., 2020): ResnetBlockDDPMpp with 32 groups (and its defaults)."""


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN's residual block, which can also resample by 2 (``up`` / ``down``, FIR or naive) both branches.

    The shortcut is a 1x1 conv when the channels change or the block resamples.
    """

    act: Callable
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0

    def _resample(self, x):
        if self.up:
            return updown.upsample_2d(x, self.fir_kernel) if self.fir else updown.naive_upsample_2d(x)
        if self.down:
            return updown.downsample_2d(x, self.fir_kernel) if self.fir else updown.naive_downsample_2d(x)
        return x

    @nn.compact
    def __call__(self, x, temb=None, train: bool = False):
        in_ch = x.shape[-1]
        out_ch = self.out_ch or in_ch
        h = self.act(group_norm(x, ncsnpp_groups(in_ch)))
        h, x = self._resample(h), self._resample(x)
        h = conv3x3(h, out_ch)
        if temb is not None:
            h = h + _time_bias(temb, self.act, out_ch, x.dtype)
        h = self.act(group_norm(h, ncsnpp_groups(out_ch)))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale)
        if in_ch != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch)
        return add_skip(x, h, self.skip_rescale)
