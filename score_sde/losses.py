"""Denoising score matching losses: continuous-time (any SDE), the discrete SMLD and DDPM ones, and EDM's loss of
a preconditioned denoiser; and the label dropout that trains a class-conditional network for classifier-free
guidance.

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

from score_sde.preconditioning import EDMPreconditioning
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


def edm_loss(
    model_fn: ModelFn,
    key: Array,
    x: Array,
    *,
    preconditioning: EDMPreconditioning,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    reduce_mean: bool = False,
) -> Array:
    """EDM's loss (Karras et al. 2022, eq. 8 and Table 1) of the denoiser D = preconditioning of model_fn:

    lambda(sigma) || D(y + n; sigma) - y ||^2,  ln sigma ~ N(P_mean, P_std^2),  n ~ N(0, sigma^2 I),
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out(sigma)^2,

    i.e. the network F's output against the target (y - c_skip (y + n)) / c_out, of unit variance for data of
    standard deviation sigma_data. It needs no SDE: D is a function of the noise level, and score.get_score_fn
    makes the score of any SDE from it.
    """
    sigma_key, n_key = jax.random.split(key)
    sigma = jnp.exp(P_mean + P_std * jax.random.normal(sigma_key, (x.shape[0],)))
    n = batch_mul(sigma, jax.random.normal(n_key, x.shape))
    denoised = preconditioning.denoise(model_fn, x + n, sigma)
    weight = (sigma**2 + preconditioning.sigma_data**2) / (sigma * preconditioning.sigma_data) ** 2
    return jnp.mean(weight * _reduce(jnp.square(denoised - x), reduce_mean))


def drop_labels(key: Array, labels: Array, p: float, null_label: int) -> Array:
    """Label dropout (Ho & Salimans 2022): each label (B,) replaced by ``null_label`` with probability p, so
    that one network learns the conditional and the unconditional score."""
    return jnp.where(jax.random.uniform(key, jnp.shape(labels)) < p, null_label, labels)


def get_loss_fn(
    sde: SDE,
    *,
    continuous: bool = True,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    eps: float = 1e-5,
    preconditioning: EDMPreconditioning | None = None,
    P_mean: float = -1.2,
    P_std: float = 1.2,
) -> LossFn:
    """loss(model_fn, key, x) -> scalar, chosen as the official get_step_fn does from config.training.

    continuous: DSM for any SDE; otherwise SMLD for a VESDE, DDPM for a VPSDE (no likelihood weighting).
    With ``preconditioning`` (config.model.formulation='edm'): EDM's loss, with P_mean and P_std.
    """
    if preconditioning is not None:
        if not continuous or likelihood_weighting:
            raise ValueError(
                "EDM's loss (config.model.formulation='edm') needs config.training.continuous=True and "
                "config.training.likelihood_weighting=False (it weights by lambda(sigma))"
            )
        if not P_std >= 0:
            raise ValueError(f"config.training.P_std must be >= 0, got {P_std}")
        return functools.partial(
            edm_loss, preconditioning=preconditioning, P_mean=float(P_mean), P_std=float(P_std), reduce_mean=reduce_mean
        )
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
