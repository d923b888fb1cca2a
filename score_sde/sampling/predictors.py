"""Predictors: one step of a numerical solver of the reverse-time SDE, from time t towards t - T/N.

A predictor is a function

    predictor(key, x, t, *, sde, score_fn, probability_flow) -> (x_next, x_next_mean)

with x (B, ...), t (B,); x_next_mean is the step without its noise (used for the final denoising). It must
call score_fn directly (not inside a loop of its own), so the samplers can count its evaluations.
Register a new one by name with ``@register_predictor("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.registry import Registry
from score_sde.sde import SDE, VESDE, VPSDE, ScoreFn, batch_mul

Array = jax.Array
Predictor = Callable[..., tuple[Array, Array]]

PREDICTORS: Registry[Predictor] = Registry("predictor")
register_predictor = PREDICTORS.register  # ``@register_predictor("name")``
get_predictor = PREDICTORS.lookup


@register_predictor("euler_maruyama")
def euler_maruyama(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
    """x <- x - [f - g^2 score] dt + g sqrt(dt) z with dt = T/N (no noise for the probability-flow ODE)."""
    dt = -sde.T / sde.N
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    x_mean = x + drift * dt
    return x_mean + batch_mul(diffusion * np.sqrt(-dt), jax.random.normal(key, x.shape)), x_mean


@register_predictor("reverse_diffusion")
def reverse_diffusion(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
    """The reverse of the SDE's own one-step discretisation (eq. (46) of the paper): x <- x - rev_f + rev_G z."""
    f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
    x_mean = x - f
    return x_mean + batch_mul(G, jax.random.normal(key, x.shape)), x_mean


@register_predictor("ancestral_sampling")
def ancestral_sampling(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
    """Ancestral sampling of the discrete SMLD (VE) or DDPM (VP) chain (eqs. (47) and (48) of the paper)."""
    if probability_flow:
        raise ValueError("the ancestral_sampling predictor has no probability-flow form")
    i = sde._timestep(t)
    score = score_fn(x, t)
    noise = jax.random.normal(key, x.shape)
    if isinstance(sde, VESDE):
        sigmas = sde.discrete_sigmas
        sigma = sigmas[i]
        adjacent_sigma = jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])
        x_mean = x + batch_mul(sigma**2 - adjacent_sigma**2, score)
        std = jnp.sqrt(adjacent_sigma**2 * (sigma**2 - adjacent_sigma**2) / sigma**2)
    elif isinstance(sde, VPSDE):
        beta = sde.discrete_betas[i]
        x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score))
        std = jnp.sqrt(beta)
    else:
        raise NotImplementedError(
            f"ancestral_sampling needs a VESDE or VPSDE (a discrete chain), not {type(sde).__name__}"
        )
    return x_mean + batch_mul(std, noise), x_mean


@register_predictor("none")
def none(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
    """No predictor (corrector-only sampling)."""
    return x, x
