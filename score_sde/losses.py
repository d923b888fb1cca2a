"""Denoising score matching losses: continuous-time (any SDE) and the discrete SMLD and DDPM ones.

Every loss is a pure function loss(model_fn, key, x) -> scalar, the mean over the batch x (B, ...).
Parameters enter only through model_fn, so the training code differentiates with respect to them by
building model_fn inside the function it differentiates:

    loss_fn = get_loss_fn(sde, continuous=True, reduce_mean=False, likelihood_weighting=False)
    def objective(params, key, x):
        key, dropout_key = jax.random.split(key)
        model_fn = get_model_fn(model, {"params": params}, train=True, dropout_key=dropout_key)
        return loss_fn(model_fn, key, x)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.score import ModelFn, get_score_fn
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, batch_mul

Array = jax.Array
LossFn = Callable[[ModelFn, Array, Array], Array]


def _reduce(v: Array, reduce_mean: bool) -> Array:
    """Per-example reduction over data dimensions: mean, or half the sum (as the official code)."""
    v = v.reshape(v.shape[0], -1)
    return jnp.mean(v, axis=-1) if reduce_mean else 0.5 * jnp.sum(v, axis=-1)


def dsm_loss(
    score_fn: ScoreFn,
    key: Array,
    x: Array,
    *,
    sde: SDE,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
) -> Array:
    """Continuous denoising score matching, eq. (7) of the paper, with t ~ U(eps, T), x_t = m x + s z:

    lambda(t) || score(x_t, t) + z / s ||^2,  lambda = s^2 (default) or g(t)^2 (likelihood weighting,
    Song et al. 2021b, which makes the loss an upper bound on the negative log-likelihood).
    """
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}")
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x.shape[0],), minval=eps, maxval=sde.T)
    z = jax.random.normal(z_key, x.shape)
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + batch_mul(std, z), t)
    if score.shape != x.shape:
        raise ValueError(f"score_fn returned shape {score.shape} for data of shape {x.shape}")
    if likelihood_weighting:
        g2 = sde.sde(jnp.zeros_like(x), t)[1] ** 2
        losses = _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2
    else:
        losses = _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
    return jnp.mean(losses)


def _continuous_loss(model_fn: ModelFn, key: Array, x: Array, *, sde: SDE, **kwargs) -> Array:
    return dsm_loss(get_score_fn(sde, model_fn, continuous=True), key, x, sde=sde, **kwargs)


def smld_loss(model_fn: ModelFn, key: Array, x: Array, *, sde: VESDE, reduce_mean: bool = False) -> Array:
    """NCSN's loss, with a uniform noise level index i (0 = largest sigma):

    sigma_i^2 || s(x + sigma_i z, i) + z / sigma_i ||^2
    """
    i_key, z_key = jax.random.split(key)
    labels = jax.random.randint(i_key, (x.shape[0],), 0, sde.N)
    sigmas = sde.discrete_sigmas[::-1][labels]
    noise = batch_mul(sigmas, jax.random.normal(z_key, x.shape))
    score = model_fn(x + noise, labels)
    target = -batch_mul(1.0 / sigmas**2, noise)
    return jnp.mean(_reduce(jnp.square(score - target), reduce_mean) * sigmas**2)


def ddpm_loss(model_fn: ModelFn, key: Array, x: Array, *, sde: VPSDE, reduce_mean: bool = True) -> Array:
    """DDPM's loss: a uniform step i, || eps_theta(sqrt(abar_i) x + sqrt(1 - abar_i) z, i) - z ||^2."""
    i_key, z_key = jax.random.split(key)
    labels = jax.random.randint(i_key, (x.shape[0],), 0, sde.N)
    z = jax.random.normal(z_key, x.shape)
    perturbed = batch_mul(sde.sqrt_alphas_cumprod[labels], x) + batch_mul(sde.sqrt_1m_alphas_cumprod[labels], z)
    return jnp.mean(_reduce(jnp.square(model_fn(perturbed, labels) - z), reduce_mean))


def get_loss_fn(
    sde: SDE,
    *,
    continuous: bool = True,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
) -> LossFn:
    """loss(model_fn, key, x) -> scalar, chosen as the official get_step_fn does from config.training.

    continuous: DSM for any SDE; otherwise SMLD for a VESDE, DDPM for a VPSDE (no likelihood weighting).
    """
    if continuous:
        return functools.partial(
            _continuous_loss, sde=sde, reduce_mean=reduce_mean, likelihood_weighting=likelihood_weighting, eps=eps
        )
    if likelihood_weighting:
        raise ValueError("likelihood_weighting is only defined for continuous training (config.training.continuous)")
    if isinstance(sde, VESDE):
        return functools.partial(smld_loss, sde=sde, reduce_mean=reduce_mean)
    if isinstance(sde, VPSDE):
        return functools.partial(ddpm_loss, sde=sde, reduce_mean=reduce_mean)
    raise ValueError(
        f"discrete training (config.training.continuous=False) is defined for VESDE and VPSDE, not {type(sde).__name__}"
    )
