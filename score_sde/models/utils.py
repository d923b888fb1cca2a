"""What every network shares: the name registry, noise levels, activations and the compute dtype.

All read an ``ml_collections.ConfigDict`` with the official field names (``config.model.*``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde.registry import Registry

_MODELS: Registry[Callable[[ml_collections.ConfigDict], nn.Module]] = Registry("network")
# Class (or factory) decorator: ``get_model`` builds it when ``config.model.name == name``.
register_model = _MODELS.register


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module named by ``config.model.name`` (one of the official names, e.g. 'ncsnpp', 'ddpm')."""
    return _MODELS.lookup(config.model.name, "config.model.name")(config)


def get_sigmas(config: ml_collections.ConfigDict) -> jnp.ndarray:
    """The ``num_scales`` noise levels of SMLD, geometric from ``sigma_max`` down to ``sigma_min``: (N,) float32.

    Index i is the i-th noise level of the discrete models (0 = largest).
    """
    m = config.model
    return jnp.asarray(np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), m.num_scales)), jnp.float32)


_ACTIVATIONS = {
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.2),
    "swish": nn.swish,
}


def get_act(config: ml_collections.ConfigDict) -> Callable:
    """The activation ``config.model.nonlinearity`` names: 'elu', 'relu', 'lrelu' (slope 0.2) or 'swish'."""
    name = config.model.nonlinearity.lower()
    if name not in _ACTIVATIONS:
        raise ValueError(f"config.model.nonlinearity={name!r} is not one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def num_classes(config: ml_collections.ConfigDict, model: nn.Module | None = None) -> int:
    """The classes a score network is conditioned on, ``config.model.num_classes``: 0 (absent in configs saved
    before it existed) for an unconditional one, K for one conditioned on K classes (and the null label K, see
    layers.add_class_embedding). Given the network ``model`` of a K > 0 config, checks that it takes class labels
    (``__call__(x, labels, class_labels, ...)``)."""
    value = config.model.get("num_classes", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"config.model.num_classes must be an integer >= 0 (0: unconditional), got {value!r}")
    if value and model is not None and "class_labels" not in inspect.signature(type(model).__call__).parameters:
        raise ValueError(
            f"config.model.num_classes={value}: the network {config.model.name!r} takes no class labels "
            "(NCSN++, DDPM++ and DDPM do)"
        )
    return value


REMATS = ("none", "blocks", "full")


def remat(config: ml_collections.ConfigDict) -> str:
    """``config.training.remat``: 'none' (absent in configs saved before it existed), 'blocks' or 'full'."""
    value = str(config.get("training", {}).get("remat", "none")).lower()
    if value not in REMATS:
        raise ValueError(f"config.training.remat={value!r} is not one of {REMATS}")
    return value


_POLICIES = {"blocks": jax.checkpoint_policies.dots_saveable, "full": jax.checkpoint_policies.nothing_saveable}


def checkpointed(block: type[nn.Module], config: ml_collections.ConfigDict, static_argnums=()) -> type[nn.Module]:
    """``block`` itself, or with config.training.remat the block recomputed in the backward pass (activation
    checkpointing, `nn.remat`): 'blocks' keeps its convolutions' and matrix products' outputs
    (`jax.checkpoint_policies.dots_saveable`) and recomputes only the cheap normalisations, activations and
    dropout; 'full' keeps only the block's input and recomputes all of it. The class keeps its name, so the
    parameter tree, and every checkpoint, are the same either way. ``static_argnums``: the call's non-array
    arguments (the train flag), self counting as 0."""
    if remat(config) == "none":
        return block
    wrapped = nn.remat(block, policy=_POLICIES[remat(config)], static_argnums=static_argnums)
    wrapped.__name__ = wrapped.__qualname__ = block.__name__
    return wrapped


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
    """The dtype the network computes in, ``config.model.dtype`` ('float32' when absent, or 'bfloat16').

    Parameters stay float32 whatever this is: every layer computes in the dtype of its input, and the
    networks cast their input to this dtype and their output back to float32.
    """
    name = config.model.get("dtype", "float32")
    if name not in _DTYPES:
        raise ValueError(f"config.model.dtype={name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]
