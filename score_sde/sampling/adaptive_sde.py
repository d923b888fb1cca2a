"""The adaptive-step SDE solver of Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman and Mitliagkas (2021),
"Gotta Go Fast When Generating Data with Score-Based Models" (their Algorithm 1), for any SDE.

On the reverse SDE dx = [f - g^2 score] dt + g dw-bar, from t to t - h with one Gaussian z per step:

    K1 = -h [f - g^2 score](x, t) + g(t) sqrt(h) z                          (Euler-Maruyama: x' = x + K1)
    K2 = -h [f - g^2 score](x + K1, t - h) + g(t - h) sqrt(h) z
    x'' = x + (K1 + K2) / 2                                                 (stochastic improved Euler)

The local error estimate is E = x'' - x' = (K2 - K1) / 2, its norm the RMS over each sample of
E / delta, delta = max(abstol, reltol max(|x'|, |x'_prev|)) (x'_prev the previous accepted x'). The step
is accepted when the norm is <= 1, keeping x'' ("extrapolation"); either way the next step size is
min(t - eps, safety h norm^-exponent). Each sample has its own t and h, so a sample's path does not depend
on the rest of the batch; the loop (a lax.while_loop on the device) runs until every sample reaches eps,
two evaluations of the whole batch per iteration (the NFE counted). As the authors' code (AlexiaJM/
score_sde_fast_sampling), the defaults are safety = exponent = 0.9 and h_init = 0.01; abstol = 0.0078 is
theirs for data in [-1, 1] (0.0039 for [0, 1]); reltol = 0.05 lies in the 0.01-0.1 they compared.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, constrain
from score_sde.sampling.grids import check_grid
from score_sde.sampling.samplers import register_sampler
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array


@register_sampler("adaptive_sde", adaptive=True, tolerance=("reltol",))
def adaptive_sde(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    abstol: float = 0.0078,
    reltol: float = 0.05,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    max_iterations: int = 10_000,
    sharding=None,
):
    """The adaptive SDE solver from x at ts[0] down to ts[-1] (only the end points are used). Returns
    (samples, nfe), nfe = 2 x the iterations the slowest sample needed; a sample that has not reached ts[-1]
    within ``max_iterations`` iterations is NaN."""
    if isinstance(ts, jax.core.Tracer):
        raise ValueError("adaptive_sde needs concrete (not traced) end points ts[0], ts[-1]")
    ts = check_grid(np.asarray(ts), sde)
    if min(abstol, reltol, h_init, safety, exponent) <= 0 or max_iterations < 1:
        raise ValueError(
            "adaptive_sde needs positive abstol, reltol, h_init, safety, exponent and max_iterations; got "
            f"{dict(abstol=abstol, reltol=reltol, h_init=h_init, safety=safety, exponent=exponent)}, "
            f"max_iterations={max_iterations}"
        )
    options = (float(abstol), float(reltol), float(h_init), float(safety), float(exponent), int(max_iterations))
    return _adaptive_sde(key, as_pytree(score_fn), sde, x, float(ts[0]), float(ts[-1]), options, sharding)


@functools.partial(jax.jit, static_argnums=(2, 4, 5, 6, 7))
def _adaptive_sde(key, score_fn, sde, x, t_start, t_end, options, sharding):
    abstol, reltol, h_init, safety, exponent, max_iterations = options
    score = Counted(score_fn)
    rsde = sde.reverse(score)
    batch = x.shape[0]

    def increment(x, t, h, z):
        drift, diffusion = rsde.sde(x, t)
        return batch_mul(-h, drift) + batch_mul(diffusion * jnp.sqrt(h), z)

    def running(carry):
        _, _, t, _, iteration, _ = carry
        # 1e-6 as the authors' loop: t lands on t_end up to the round-off of t - h.
        return jnp.any(t - t_end > 1e-6) & (iteration < max_iterations)

    def step(carry):
        x, x_prev, t, h, iteration, nfe = carry
        before = score.calls
        z = jax.random.normal(jax.random.fold_in(key, iteration), x.shape, x.dtype)
        k1 = increment(x, t, h, z)
        k2 = increment(constrain(x + k1, sharding), t - h, h, z)
        x_euler, x_heun = x + k1, x + 0.5 * (k1 + k2)
        delta = jnp.maximum(abstol, reltol * jnp.maximum(jnp.abs(x_euler), jnp.abs(x_prev)))
        error = jnp.sqrt(jnp.mean(jnp.square((x_heun - x_euler) / delta).reshape(batch, -1), axis=1))
        accept = error <= 1.0
        per_sample = accept.reshape(accept.shape + (1,) * (x.ndim - 1))
        x, x_prev = jnp.where(per_sample, x_heun, x), jnp.where(per_sample, x_euler, x_prev)
        t = jnp.where(accept, t - h, t)
        # A finished sample (h = 0) keeps h = 0 (its error is 0, and 0^-exponent would be inf).
        grown = safety * h * jnp.where(h > 0, error, 1.0) ** -exponent
        h = jnp.minimum(jnp.maximum(t - t_end, 0.0), jnp.where(h > 0, grown, 0.0))
        return constrain(x, sharding), constrain(x_prev, sharding), t, h, iteration + 1, nfe + (score.calls - before)

    x = constrain(x, sharding)
    # Per-sample times and step sizes, split over the devices as the batch is.
    t = constrain(jnp.full((batch,), t_start, x.dtype), sharding)
    h = constrain(jnp.full((batch,), min(h_init, t_start - t_end), x.dtype), sharding)
    carry = (x, x, t, h, jnp.int32(0), jnp.int32(0))
    x, _, t, _, _, nfe = jax.lax.while_loop(running, step, carry)
    # Samples still short of t_end after max_iterations come back as NaN (which the sampling commands refuse).
    unfinished = (t - t_end > 1e-6).reshape(t.shape + (1,) * (x.ndim - 1))
    return jnp.where(unfinished, jnp.nan, x), nfe
