"""From a network to a score function score_fn(x, t), for each parameterisation of the paper and for EDM's.

    model_fn = get_model_fn(model, variables)                     # model_fn(x, labels[, class_labels]) -> output
    score_fn = get_score_fn(sde, model_fn, continuous=True)       # score_fn(x, t[, y]) -> grad_x log p_t(x[ | y])

Both are `jax.tree_util.Partial` objects: pytrees whose leaves are the network variables (and dropout key),
so they can be passed into jitted samplers, the likelihood and losses as ordinary arguments without being
baked into the compiled code; a jitted function recompiles only for a different network or SDE. A
class-conditional network's score takes the class labels y (B,) as a third argument (the null label, or
none, for the unconditional score); `conditional.classifier_free_guided` makes a guided score_fn(x, t) of it.

Parameterisations (as the official models/utils.py `get_score_fn`):
  VE, continuous:   labels = sigma(t);                       score = output
  VE, discrete:     labels = round((T - t)(N - 1)) (int32),  score = output   (index 0 = largest sigma)
  VP, continuous:   labels = 999 t;                          score = -output / std(t)
  VP, discrete:     labels = (N - 1) t (float);              score = -output / sqrt(1 - alphabar_i),
                    i = int(labels) (the DDPM step, index 0 = smallest noise)
  sub-VP (always the continuous form): labels = 999 t;       score = -output / std(t)
  EDM's SDE (sigma(t) = t), continuous: as VE;               labels = sigma(t) = t
  EDM's preconditioning (any SDE): the network is a denoiser D(x / m; sigma = s / m) (preconditioning.py),
                    score = (m D - x) / s^2 (Tweedie's formula)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from score_sde.preconditioning import EDMPreconditioning
from score_sde.sde import EDMSDE, SDE, VESDE, VPSDE, batch_mul, check_time, subVPSDE

Array = jax.Array
# model_fn(x, labels) -> output, or model_fn(x, labels, class_labels) for a class-conditional network.
ModelFn = Callable[..., Array]


class _ModelApply:
    """`model.apply` as a static, hashable function: equal for the same module object and train flag.

    Flax modules holding a ConfigDict are not hashable by value, so identity is what jit can key on.
    """

    __slots__ = ("model", "train")

    def __init__(self, model, train: bool):
        self.model, self.train = model, train

    def __eq__(self, other):
        return type(other) is _ModelApply and other.model is self.model and other.train == self.train

    def __hash__(self):
        return hash((id(self.model), self.train))

    def __call__(self, variables, dropout_key, x, labels, class_labels=None):
        inputs = (x, labels) if class_labels is None else (x, labels, class_labels)
        if self.train:
            out = self.model.apply(variables, *inputs, train=True, rngs={"dropout": dropout_key})
        else:
            out = self.model.apply(variables, *inputs, train=False)
        if out.shape != x.shape:
            raise ValueError(f"the network returned shape {out.shape} for input of shape {x.shape}")
        return out


def get_model_fn(model, variables: dict[str, Any], *, train: bool = False, dropout_key: Array | None = None):
    """model_fn(x, labels[, class_labels]) -> output of a Flax module `model` with `variables` ({"params": ...}).

    With `train`, dropout is on and draws from `dropout_key` (required). Take gradients with respect to the
    parameters by building model_fn inside the differentiated function.
    """
    if train and dropout_key is None:
        raise ValueError("get_model_fn(train=True) needs a dropout_key")
    return Partial(_ModelApply(model, train), variables, dropout_key if train else None)


def as_pytree(fn: Callable) -> Partial:
    """A callable as a pytree for jit: a Partial as it is (its leaves traced), else a leafless Partial whose
    function is static (a jitted consumer then compiles once per function object)."""
    return fn if isinstance(fn, Partial) else Partial(fn)


@dataclasses.dataclass(frozen=True)
class _NetworkScore:
    """The static part of a network's score function: the SDE and whether the network is continuous."""

    sde: SDE
    continuous: bool

    def __post_init__(self):
        if not isinstance(self.sde, (VESDE, VPSDE, subVPSDE, EDMSDE)):
            raise NotImplementedError(
                f"get_score_fn: no network parameterisation of the paper for {type(self.sde).__name__}; use EDM's "
                "preconditioning (config.model.formulation='edm', any SDE) or write score_fn(x, t) for it directly "
                "(every sampler and the likelihood take any score_fn)"
            )
        if isinstance(self.sde, EDMSDE) and not self.continuous:
            raise ValueError(
                "EDM's SDE has no discrete chain: it needs continuous training (config.training.continuous)"
            )

    def __call__(self, model_fn: ModelFn, x: Array, t: Array, y: Array | None = None) -> Array:
        sde = self.sde
        _check_times(sde, x, t)
        net = model_fn if y is None else (lambda x, labels: model_fn(x, labels, y))
        if isinstance(sde, (VESDE, EDMSDE)):
            if self.continuous:
                labels = sde.marginal_coeffs(t)[1]
            else:  # index into SMLD's sigmas sorted from largest (label 0) to smallest
                labels = jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)
            return net(x, labels)
        if isinstance(sde, subVPSDE) or self.continuous:
            # Continuously trained VP-type networks take t scaled to the [0, 999] range of DDPM's steps.
            std = sde.marginal_coeffs(t)[1]
            return batch_mul(-1.0 / std, net(x, t * 999))
        labels = t * (sde.N - 1)
        std = sde.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
        return batch_mul(-1.0 / std, net(x, labels))


def _check_times(sde: SDE, x: Array, t: Array) -> None:
    if jnp.shape(t) != x.shape[:1]:
        raise ValueError(f"score_fn: t must have shape (batch,) = {x.shape[:1]}, got {jnp.shape(t)}")
    check_time(t, sde)


@dataclasses.dataclass(frozen=True)
class _DenoiserScore:
    """The score of a preconditioned denoiser D (EDM's formulation) under any SDE: with x_t = m x_0 + s z, the
    denoiser sees x_t / m = x_0 + sigma z at sigma = s / m, and D = E[x_0 | x_t] gives
    score = (m D - x_t) / s^2."""

    sde: SDE
    preconditioning: EDMPreconditioning

    def __call__(self, model_fn: ModelFn, x: Array, t: Array, y: Array | None = None) -> Array:
        _check_times(self.sde, x, t)
        mean_coeff, std = self.sde.marginal_coeffs(t)
        denoised = self.preconditioning.denoise(model_fn, batch_mul(1.0 / mean_coeff, x), std / mean_coeff, y)
        return batch_mul(1.0 / std**2, batch_mul(mean_coeff, denoised) - x)


def data_prediction(score_fn: Callable[[Array, Array], Array], sde: SDE, x: Array, t: Array) -> Array:
    """Tweedie's denoised estimate x0(x, t) = E[x_0 | x_t = x] = (x + s(t)^2 score(x, t)) / m(t), shaped like x.

    What the data-prediction solvers (DDIM, DPM-Solver++, UniPC, EDM) need, from any parameterisation's score.
    """
    mean_coeff, std = sde.marginal_coeffs(t)
    return batch_mul(1.0 / mean_coeff, x + batch_mul(std**2, score_fn(x, t)))


def noise_prediction(score_fn: Callable[[Array, Array], Array], sde: SDE, x: Array, t: Array) -> Array:
    """The noise estimate eps(x, t) = E[z | x_t = x] = -s(t) score(x, t) for x_t = m x_0 + s z, shaped like x."""
    return batch_mul(-sde.marginal_coeffs(t)[1], score_fn(x, t))


def get_score_fn(
    sde: SDE, model_fn: ModelFn, *, continuous: bool, preconditioning: EDMPreconditioning | None = None
) -> Partial:
    """score_fn(x, t) -> score of the network `model_fn` trained on `sde`; x (B, ...), t (B,) in [0, T]. For a
    class-conditional network, score_fn(x, t, y) with class labels y (B,) (the null label: unconditional).

    `continuous`: the network was trained in continuous time (config.training.continuous); otherwise it is
    one of the discrete SMLD (VE) or DDPM (VP) models conditioned on the noise-level index. With
    `preconditioning` the network is EDM's preconditioned denoiser (config.model.formulation='edm'), for any SDE.
    """
    if preconditioning is not None:
        if not continuous:
            raise ValueError("EDM's preconditioning is continuous in sigma: it needs config.training.continuous")
        return Partial(_DenoiserScore(sde, preconditioning), as_pytree(model_fn))
    return Partial(_NetworkScore(sde, bool(continuous)), as_pytree(model_fn))
