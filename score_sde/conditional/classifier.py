"""Time-dependent classifiers log p_t(y | x_t) for classifier guidance, from the noise-conditional Wide-ResNet
(models/wideresnet.py) and its official input conventions, and the loss that trains one.

The official classifier (CIFAR-10, VE SDE, data in [0, 1]) takes the noisy image standardised by the
CIFAR-10 channel statistics and the noise level sigma(t) (run_lib / models/utils.get_logit_fn,
controllable_generation.py: `sde.marginal_prob(x, t)[1]`). Here the same network sees, for any SDE,

    x_t / m(t)  (the variance-exploding form of x_t = m x_0 + s z)  and  sigma = s(t) / m(t),

put on the [0, 1] pixel scale ((x + 1) / 2 and sigma / 2 for data in [-1, 1]) and standardised per channel by
config.model.input_mean and input_std. For the VE SDE on [0, 1] data this is exactly the official input;
a classifier trained with `classifier_loss` sees the same input in training and in guidance.

    log_prob_fn = network_log_prob_fn(model, params, classifier_config)   # log_prob_fn(x, t, y) -> (B,)
    check_compatible(classifier_config, score_model_config)               # same SDE, image shape, data range
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from score_sde import sde as sde_lib
from score_sde.sde import SDE, batch_mul

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InputConventions:
    """How x_t of `sde` becomes the classifier's input: static, hashable (a jit key)."""

    sde: SDE
    centered: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def from_config(config) -> InputConventions:
        mean, std = tuple(map(float, config.model.input_mean)), tuple(map(float, config.model.input_std))
        channels = int(config.data.num_channels)
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"config.model.input_mean {mean} and input_std {std} must give one value per channel "
                f"(config.data.num_channels={channels}), the stds positive"
            )
        return InputConventions(sde_lib.get_sde(config), bool(config.data.centered), mean, std)

    def inputs(self, x: Array, t: Array) -> tuple[Array, Array]:
        """(network input shaped like x, noise levels (B,)) for x_t (B, H, W, C) at times t (B,)."""
        mean_coeff, std = self.sde.marginal_coeffs(t)
        x, sigma = batch_mul(1.0 / mean_coeff, x), std / mean_coeff
        if self.centered:
            x, sigma = (x + 1.0) / 2.0, sigma / 2.0
        return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std), sigma


class _NetworkClassifier:
    """log p_t(y | x) of a Flax classifier of ``num_classes`` classes; static, equal for the same module object,
    conventions and classes."""

    __slots__ = ("model", "conventions", "num_classes")

    def __init__(self, model, conventions: InputConventions, num_classes: int | None = None):
        self.model, self.conventions, self.num_classes = model, conventions, num_classes

    def __eq__(self, other):
        return (
            type(other) is _NetworkClassifier
            and other.model is self.model
            and (other.conventions, other.num_classes) == (self.conventions, self.num_classes)
        )

    def __hash__(self):
        return hash((id(self.model), self.conventions, self.num_classes))

    def logits(self, params, x: Array, t: Array) -> Array:
        inputs, sigmas = self.conventions.inputs(x, t)
        return self.model.apply({"params": params}, inputs, sigmas, train=False)

    def __call__(self, params, x, t, y):
        log_probs = jax.nn.log_softmax(self.logits(params, x, t), axis=-1)
        return jnp.take_along_axis(log_probs, jnp.asarray(y)[:, None], axis=-1)[:, 0]


def network_log_prob_fn(model, params, config) -> Partial:
    """log_prob_fn(x, t, y) -> log p_t(y | x_t) (B,) of the classifier `model` with `params`, trained as
    `config` (its own config: SDE, data range, input statistics) says. A jit-able pytree (the parameters
    are its leaves). It knows its classes (config.model.num_classes), so guidance refuses labels outside them."""
    return Partial(
        _NetworkClassifier(model, InputConventions.from_config(config), int(config.model.num_classes)), params
    )


def classifier_loss(
    model, conventions: InputConventions, params, key: Array, images: Array, labels: Array, *, eps=1e-5
):
    """Cross-entropy of the labels (B,) given x_t ~ p_t(x_t | x_0 = images) at t ~ U(eps, T), mean over the batch."""
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (images.shape[0],), minval=eps, maxval=conventions.sde.T)
    mean, std = conventions.sde.marginal_prob(images, t)
    x_t = mean + batch_mul(std, jax.random.normal(z_key, images.shape))
    logits = _NetworkClassifier(model, conventions).logits(params, x_t, t).astype(jnp.float32)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1))


def _sde_key(config) -> tuple:
    sde = sde_lib.get_sde(config)
    fields = {f.name: getattr(sde, f.name) for f in dataclasses.fields(sde) if f.name != "N"}
    return type(sde).__name__, fields


def check_compatible(classifier_config, config) -> None:
    """Raises ValueError unless the classifier was trained for the score model's SDE (its kind and parameters;
    the number of steps may differ), image shape and data range."""
    mine, theirs = _sde_key(classifier_config), _sde_key(config)
    if mine != theirs:
        raise ValueError(
            f"the classifier was trained for the SDE {mine[0]}{mine[1]}, the score model for {theirs[0]}{theirs[1]}"
        )
    for key in ("image_size", "num_channels", "centered"):
        a, b = classifier_config.data[key], config.data[key]
        if a != b:
            raise ValueError(f"the classifier was trained with data.{key}={a!r}, the score model with data.{key}={b!r}")


def check_labels(labels, num_classes: int, whose: str = "the classifier") -> np.ndarray:
    """The labels as int32, or ValueError naming one outside [0, num_classes) (the classes of ``whose``)."""
    labels = np.asarray(labels)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)] if np.issubdtype(labels.dtype, np.integer) else labels
        raise ValueError(f"class label {bad.flat[0]} is outside {whose}'s classes 0..{num_classes - 1}")
    return labels.astype(np.int32)
