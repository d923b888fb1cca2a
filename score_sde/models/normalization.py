"""Normalisation layers of NCSN / NCSNv2 (``config.model.normalization``).

Statistics are per image and channel, over the spatial axes, computed in float32; the result is in the
dtype of the input. Parameters have the shape (1, 1, 1, C), as in the official code.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

_EPS = 1e-5


def _one_plus_normal(key, shape, dtype=jnp.float32):
    """1 + N(0, 0.02^2): scales that start near identity."""
    return 1.0 + nn.initializers.normal(0.02)(key, shape, dtype)


def _per_channel(module, name, init, channels):
    return module.param(name, init, (1, 1, 1, channels))


def _standardize(x):
    """(x - mean) / sqrt(var + eps) per image and channel, and the channel means (B, C)."""
    means = jnp.mean(x, axis=(1, 2))
    return (x - means[:, None, None, :]) / jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + _EPS), means


def _standardize_means(means):
    """The channel means standardised across channels (the "++" of InstanceNorm++), (B, C)."""
    return (means - jnp.mean(means, axis=-1, keepdims=True)) / jnp.sqrt(jnp.var(means, axis=-1, keepdims=True) + _EPS)


class VarianceNorm2d(nn.Module):
    """x / std(x) per image and channel, times a learnt scale (no centring, no bias)."""

    @nn.compact
    def __call__(self, x):
        xf = x.astype(jnp.float32)
        h = xf / jnp.sqrt(jnp.var(xf, axis=(1, 2), keepdims=True) + _EPS)
        return (h * _per_channel(self, "scale", _one_plus_normal, x.shape[-1])).astype(x.dtype)


class InstanceNorm2d(nn.Module):
    """Instance normalisation with a learnt scale and bias."""

    @nn.compact
    def __call__(self, x):
        h, _ = _standardize(x.astype(jnp.float32))
        c = x.shape[-1]
        h = h * _per_channel(self, "scale", nn.initializers.ones, c) + _per_channel(
            self, "bias", nn.initializers.zeros, c
        )
        return h.astype(x.dtype)


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon, 2019): instance normalisation that keeps the relative channel means,
    gamma * (h + alpha * standardised means) + beta."""

    @nn.compact
    def __call__(self, x):
        h, means = _standardize(x.astype(jnp.float32))
        c = x.shape[-1]
        alpha = _per_channel(self, "alpha", _one_plus_normal, c)
        gamma = _per_channel(self, "gamma", _one_plus_normal, c)
        beta = _per_channel(self, "beta", nn.initializers.zeros, c)
        h = h + _standardize_means(means)[:, None, None, :] * alpha
        return (gamma * h + beta).astype(x.dtype)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose gamma, alpha, beta are looked up from the class / noise-level index y (NCSN).

    One embedding table ``Embed_0`` (num_classes, 3C) holds [gamma | alpha | beta], initialised to
    [1 + N(0, 0.02^2) | 1 + N(0, 0.02^2) | 0].
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, y):
        c = x.shape[-1]

        def init(key, shape, dtype=jnp.float32):
            return jnp.concatenate(
                [_one_plus_normal(key, (shape[0], 2 * c), dtype), jnp.zeros((shape[0], c), dtype)], -1
            )

        gamma, alpha, beta = jnp.split(nn.Embed(self.num_classes, 3 * c, embedding_init=init)(y), 3, axis=-1)
        h, means = _standardize(x.astype(jnp.float32))
        h = h + _standardize_means(means)[:, None, None, :] * alpha[:, None, None, :]
        return (gamma[:, None, None, :] * h + beta[:, None, None, :]).astype(x.dtype)


_UNCONDITIONAL = {
    "InstanceNorm": InstanceNorm2d,
    "InstanceNorm++": InstanceNorm2dPlus,
    "VarianceNorm": VarianceNorm2d,
    "GroupNorm": nn.GroupNorm,
}


def get_normalization(config: ml_collections.ConfigDict, conditional: bool = False):
    """A factory of the normalisation module ``config.model.normalization`` names.

    Unconditional modules are called as ``norm()(x)``; the conditional one (only 'InstanceNorm++', with one
    embedding row per noise level, ``config.model.num_scales``) as ``norm()(x, y)``.
    """
    name = config.model.normalization
    if conditional:
        if name != "InstanceNorm++":
            raise ValueError(f"config.model.normalization={name!r}: the conditional network needs 'InstanceNorm++'")
        return functools.partial(ConditionalInstanceNorm2dPlus, num_classes=config.model.num_scales)
    if name not in _UNCONDITIONAL:
        raise ValueError(f"config.model.normalization={name!r} is not one of {sorted(_UNCONDITIONAL)}")
    return _UNCONDITIONAL[name]
