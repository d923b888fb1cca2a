"""DDIM (Song, Meng and Ermon, ICLR 2021), for any SDE through its perturbation kernel N(m(t) x_0, s(t)^2 I).

From t to t' < t, with the noise prediction eps = -s(t) score(x, t) and the data prediction
x0 = (x - s(t) eps) / m(t) of one score evaluation (eq. 12 of the paper, its alpha_t = m^2 there):

    x' = m' x0 + sqrt(s'^2 - c^2) eps + c z,    c = eta s' sqrt(1 - exp(2 (lambda - lambda'))),

lambda = log(m / s) the half log-SNR. c is the std of the forward process's posterior q(x_t' | x_t, x_0)
times eta: eta = 0 is the deterministic DDIM, the Euler step of the probability-flow ODE in EDM's variables
(x / m against sigma = s / m; DPM-Solver-1), exact for a point-mass data law; eta = 1 is DDPM's ancestral step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from score_sde.sampling._common import Counted, constrain, padded_grid
from score_sde.sampling.samplers import register_sampler
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array


@register_sampler("ddim", grid="quadratic")
def ddim(key: Array, score_fn: ScoreFn, sde: SDE, x: Array, ts, *, eta: float = 0.0, sharding=None):
    """DDIM over the grid ts, one evaluation per step; ``eta`` in [0, 1] scales the noise (0: deterministic)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM's eta must lie in [0, 1] (0 deterministic, 1 DDPM's ancestral step), got {eta}")
    return _ddim(key, as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), float(eta), sharding)


@functools.partial(jax.jit, static_argnums=(2, 6, 7))
def _ddim(key, score_fn, sde, x, ts, n, eta, sharding):
    score = Counted(score_fn)

    def step(i, carry):
        x, nfe = carry
        t, t_next = (jnp.full(x.shape[:1], ts[j]) for j in (i, i + 1))
        (m, s), (m_next, s_next) = sde.marginal_coeffs(t), sde.marginal_coeffs(t_next)
        before = score.calls
        eps = batch_mul(-s, score(x, t))
        # x' = m' (x / m - sigma eps) + sqrt(s'^2 - c^2) eps + c z, written so that no x0 = x / m - sigma eps
        # is formed: at t = T of a VP SDE, 1 / m is 150 and would amplify the round-off of x.
        c = eta * s_next * jnp.sqrt(-jnp.expm1(2.0 * (sde.log_snr(t) - sde.log_snr(t_next))))
        x = batch_mul(m_next / m, x) + batch_mul(jnp.sqrt(s_next**2 - c**2) - m_next * s / m, eps)
        if eta > 0:
            x = x + batch_mul(c, jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype))
        return constrain(x, sharding), nfe + (score.calls - before)

    return jax.lax.fori_loop(0, n, step, (constrain(x, sharding), jnp.int32(0)))
