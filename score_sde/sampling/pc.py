"""Predictor-corrector sampling (Algorithm 1 of the paper)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.sampling import correctors
from score_sde.sampling._common import Counted, check_eps, check_shape, constrain
from score_sde.sampling.correctors import get_corrector
from score_sde.sampling.predictors import get_predictor
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn

Array = jax.Array


def pc_sampler(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float | None = None,
    sharding=None,
) -> tuple[Array, Array]:
    """Samples `shape` = (B, ...) from the reverse SDE of `sde` with a predictor and a corrector, each a
    registered name or a function of the predictor's (corrector's) signature (e.g. one wrapped by
    score_sde.conditional.replacement; a `jax.tree_util.Partial` keeps the arrays it holds out of the compiled code).

    Time grid t_0 = T > ... > t_{N-1} = eps (N = sde.N, as the official code). In the order of Algorithm 1,
    step i runs the predictor from t_i, then `n_steps` corrector steps at the time it reached, t_{i+1}; the
    last predictor step (from t = eps) is not followed by correctors. (The official code runs the correctors
    before the predictor at the same t_i, which adds correctors on the prior sample at t = T.)
    `denoise`: return the last step's mean, without its noise. `eps` defaults to `sde.sampling_eps`.
    `sharding`: a NamedSharding of the batch (over an Explicit mesh, call inside `jax.set_mesh(mesh)`); the
    samples are the same as without it.

    Jitted; score_fn is an argument (a `Partial` from score_sde.score keeps network weights out of the
    compiled code). Returns (samples (B, ...), nfe): the score evaluations made, counted as they run.
    """
    # Unknown names fail here, naming the choices.
    predict = get_predictor(predictor) if isinstance(predictor, str) else predictor
    correct = get_corrector(corrector) if isinstance(corrector, str) else corrector
    if n_steps < 0:
        raise ValueError(f"n_steps (corrector steps per time step) must be >= 0, got {n_steps}")
    eps = check_eps(sde.sampling_eps if eps is None else eps, sde)
    return _pc_sampler(
        key,
        as_pytree(score_fn),
        sde,
        check_shape(shape),
        as_pytree(predict),
        as_pytree(correct),
        snr,
        int(n_steps) if correct is not correctors.none else 0,
        bool(probability_flow),
        bool(denoise),
        eps,
        sharding,
    )


@functools.partial(jax.jit, static_argnums=(3, 7, 8, 9, 10, 11))
def _pc_sampler(key, score_fn, sde, shape, predict, correct, snr, n_steps, probability_flow, denoise, eps, sharding):
    score = Counted(score_fn)
    batch = shape[0]
    init_key, loop_key = jax.random.split(key)
    x = constrain(sde.prior_sampling(init_key, shape), sharding)
    timesteps = jnp.linspace(sde.T, eps, sde.N)

    def corrector_step(j, carry):
        x, x_mean, nfe, t, key = carry
        before = score.calls
        x, x_mean = correct(jax.random.fold_in(key, j), x, t, sde=sde, score_fn=score, snr=snr)
        return constrain(x, sharding), x_mean, nfe + (score.calls - before), t, key

    def step(i, carry):
        x, x_mean, nfe = carry
        predictor_key, corrector_key = jax.random.split(jax.random.fold_in(loop_key, i))
        before = score.calls
        x, x_mean = predict(
            predictor_key,
            x,
            jnp.full((batch,), timesteps[i]),
            sde=sde,
            score_fn=score,
            probability_flow=probability_flow,
        )
        nfe = nfe + (score.calls - before)
        x = constrain(x, sharding)
        if n_steps > 0:
            t_next = jnp.full((batch,), timesteps[jnp.minimum(i + 1, sde.N - 1)])
            count = jnp.where(i < sde.N - 1, n_steps, 0)
            x, x_mean, nfe, _, _ = jax.lax.fori_loop(0, count, corrector_step, (x, x_mean, nfe, t_next, corrector_key))
        return x, x_mean, nfe

    x, x_mean, nfe = jax.lax.fori_loop(0, sde.N, step, (x, x, jnp.int32(0)))
    return (x_mean if denoise else x), nfe
