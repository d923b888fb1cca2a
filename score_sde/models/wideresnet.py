"""The noise-conditional Wide-ResNet classifier of the paper's class-conditional CIFAR-10 samples (Sec. 5).

It classifies noisy images x(t) of the VE SDE: log p_t(y | x(t)), whose gradient in x is added to the score
for controllable generation. WRN-28-10 (Zagoruyko & Komodakis, 2016) with GroupNorm instead of BatchNorm
and every block conditioned on a Gaussian Fourier embedding of log(sigma).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde.models.layers import GaussianFourierProjection
from score_sde.models.utils import compute_dtype, register_model

# Per-channel statistics of the CIFAR-10 training images in [0, 1], used by `standardize_cifar10`.
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)

# Kaiming normal initialisation, fan-out mode (gain 2), for the convolutions.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _final_dense_init(key, shape, dtype=jnp.float32):
    """U(-1/sqrt(num_outputs), 1/sqrt(num_outputs)), as in AutoAugment's Wide-ResNet."""
    return jax.random.uniform(key, shape, dtype, -1.0) / np.sqrt(shape[1])


def standardize_cifar10(x):
    """CIFAR-10 images in [0, 1], (B, H, W, 3) -> standardised per channel: the classifier's input."""
    return (x - jnp.asarray(CIFAR10_MEAN)) / jnp.asarray(CIFAR10_STD)


def _norm_act(x, name: str, relu: bool = True):
    h = nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, dtype=x.dtype, name=name)(x)
    return jax.nn.relu(h) if relu else h


def _shortcut_add(block_x, orig_x):
    """block_x + orig_x, mean-pooling and zero-padding the channels of orig_x when the shapes differ."""
    if block_x.shape[-1] != orig_x.shape[-1]:
        stride = orig_x.shape[-2] // block_x.shape[-2]
        orig_x = nn.avg_pool(orig_x, (stride, stride), (stride, stride))
        orig_x = jnp.pad(orig_x, [(0, 0)] * 3 + [(0, block_x.shape[-1] - orig_x.shape[-1])])
    return block_x + orig_x


class WideResnetBlock(nn.Module):
    """Pre-activation residual block: GN-relu-conv3x3 (strided), + Dense(swish(temb)), GN-relu-conv3x3."""

    channels: int
    strides: Sequence[int] = (1, 1)
    activate_before_residual: bool = False

    @nn.compact
    def __call__(self, x, temb):
        if self.activate_before_residual:
            x = _norm_act(x, "init_bn")
            block_x = x
        else:
            block_x = _norm_act(x, "init_bn")
        block_x = nn.Conv(
            self.channels,
            (3, 3),
            tuple(self.strides),
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_init,
            dtype=x.dtype,
            name="conv1",
        )(block_x)
        block_x = block_x + nn.Dense(self.channels, dtype=x.dtype)(nn.swish(temb))[:, None, None, :]
        block_x = _norm_act(block_x, "bn_2")
        block_x = nn.Conv(
            self.channels, (3, 3), padding="SAME", use_bias=False, kernel_init=_conv_init, dtype=x.dtype, name="conv2"
        )(block_x)
        return _shortcut_add(block_x, x)


class WideResnetGroup(nn.Module):
    """``blocks_per_group`` blocks; the first one strides and (in the first group) activates before the shortcut."""

    blocks_per_group: int
    channels: int
    strides: Sequence[int] = (1, 1)
    activate_before_residual: bool = False

    @nn.compact
    def __call__(self, x, temb):
        for i in range(self.blocks_per_group):
            x = WideResnetBlock(
                self.channels,
                self.strides if i == 0 else (1, 1),
                activate_before_residual=self.activate_before_residual and i == 0,
            )(x, temb)
        return x


class WideResnet(nn.Module):
    """Noise-conditional Wide-ResNet classifier.

    ``__call__(x, sigmas, train=False) -> logits (B, num_outputs)`` float32: x (B, H, W, C) images standardised
    per channel (`standardize_cifar10` of [0, 1] images); sigmas (B,) the VE noise level of x. The network
    further standardises each image. ``train`` changes nothing (no dropout or batch statistics); it is there
    for the common call signature.
    """

    blocks_per_group: int
    channel_multiplier: int
    num_outputs: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, sigmas, train: bool = False):
        del train
        size = np.prod(x.shape[1:])
        x = (x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)) / jnp.maximum(
            jnp.std(x, axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(size)
        )
        dtype = jnp.dtype(self.dtype)
        temb = GaussianFourierProjection(embedding_size=128, scale=16)(jnp.log(sigmas)).astype(dtype)
        temb = nn.Dense(128 * 4, dtype=dtype)(temb)
        temb = nn.Dense(128 * 4, dtype=dtype)(nn.swish(temb))

        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, kernel_init=_conv_init, dtype=dtype, name="init_conv")(
            x.astype(dtype)
        )
        k = self.channel_multiplier
        x = WideResnetGroup(self.blocks_per_group, 16 * k, activate_before_residual=True)(x, temb)
        x = WideResnetGroup(self.blocks_per_group, 32 * k, (2, 2))(x, temb)
        x = WideResnetGroup(self.blocks_per_group, 64 * k, (2, 2))(x, temb)
        x = _norm_act(x, "pre-pool-bn")
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_outputs, kernel_init=_final_dense_init, dtype=dtype)(x).astype(jnp.float32)


def cifar10_classifier_config() -> ml_collections.ConfigDict:
    """The config of the official CIFAR-10 classifier (WRN-28-10, 10 classes), for `get_model` and the converter."""
    return ml_collections.ConfigDict(
        {
            "model": dict(
                name="wideresnet_noise_conditional",
                blocks_per_group=4,
                channel_multiplier=10,
                num_classes=10,
                dtype="float32",
            ),
            "data": dict(dataset="CIFAR10", image_size=32, num_channels=3),
        }
    )


@register_model("wideresnet_noise_conditional")
def _wideresnet(config: ml_collections.ConfigDict) -> WideResnet:
    m = config.model
    return WideResnet(
        blocks_per_group=m.blocks_per_group,
        channel_multiplier=m.channel_multiplier,
        num_outputs=m.num_classes,
        dtype=jnp.dtype(compute_dtype(config)).name,
    )
