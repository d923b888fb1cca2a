"""Correctors: one step of score-based MCMC that leaves p_t invariant (Langevin dynamics) at time t.

A corrector is a function

    corrector(key, x, t, *, sde, score_fn, snr) -> (x_next, x_next_mean)

making ONE step; the PC sampler runs it n_steps times per time step. It must call score_fn directly (not
inside a loop of its own), so the samplers can count its evaluations. Register a new one by name with
``@register_corrector("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.registry import Registry
from score_sde.sde import SDE, VPSDE, ScoreFn, batch_mul, subVPSDE

Array = jax.Array
Corrector = Callable[..., tuple[Array, Array]]

CORRECTORS: Registry[Corrector] = Registry("corrector")
register_corrector = CORRECTORS.register  # ``@register_corrector("name")``
get_corrector = CORRECTORS.lookup


def _alpha(sde: SDE, t: Array) -> Array:
    """The official step-size factor: DDPM's alpha_i = 1 - beta_i for VP-type SDEs, 1 otherwise."""
    if isinstance(sde, (VPSDE, subVPSDE)):
        return sde.alphas[sde._timestep(t)]
    return jnp.ones_like(t)


def _langevin_step(x, score, noise, step_size):
    x_mean = x + batch_mul(step_size, score)
    return x_mean + batch_mul(jnp.sqrt(2.0 * step_size), noise), x_mean


def _mean_norm(v: Array) -> Array:
    return jnp.mean(jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1))


@register_corrector("langevin")
def langevin(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, snr: float):
    """Langevin step with step size 2 alpha (snr ||z|| / ||score||)^2 (Algorithms 4 and 5 of the paper).

    The norms are averaged over the whole batch, across devices when it is sharded (as the official pmean).
    """
    score = score_fn(x, t)
    noise = jax.random.normal(key, x.shape)
    step_size = (snr * _mean_norm(noise) / _mean_norm(score)) ** 2 * 2.0 * _alpha(sde, t)
    return _langevin_step(x, score, noise, step_size)


@register_corrector("ald")
def ald(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, snr: float):
    """Annealed Langevin dynamics of NCSN: step size 2 alpha (snr std(t))^2."""
    std = sde.marginal_coeffs(t)[1]
    noise = jax.random.normal(key, x.shape)
    return _langevin_step(x, score_fn(x, t), noise, (snr * std) ** 2 * 2.0 * _alpha(sde, t))


@register_corrector("none")
def none(key: Array, x: Array, t: Array, *, sde: SDE, score_fn: ScoreFn, snr: float):
    """No corrector (predictor-only sampling)."""
    return x, x
