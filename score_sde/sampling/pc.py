"""Predictor-corrector sampling (Algorithm 1 of the paper): the sampler "pc" and its front end `pc_sampler`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, check_eps, constrain
from score_sde.sampling.correctors import CORRECTORS, get_corrector
from score_sde.sampling.grids import check_grid
from score_sde.sampling.predictors import PREDICTORS, get_predictor
from score_sde.sampling.samplers import register_sampler, sample
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn

Array = jax.Array


def _lookup(step, lookup):
    """A predictor or corrector given by name (looked up, naming the choices if unknown) or as a function."""
    return lookup(step) if isinstance(step, str) else step


def _pc_steps(nfe: int, predictor="reverse_diffusion", corrector="langevin", n_steps: int = 1) -> int:
    """Grid intervals n within ``nfe``: a predictor step at each of the n + 1 times, n_steps corrector steps
    after each but the last: NFE = p (n + 1) + c n_steps n (p, c: 1 unless the step is "none")."""
    p = _lookup(predictor, get_predictor) is not PREDICTORS["none"]
    c = n_steps * (_lookup(corrector, get_corrector) is not CORRECTORS["none"])
    return (nfe - p) // (p + c) if p + c else 0


@register_sampler("pc", steps_for_nfe=_pc_steps, min_nfe=1, nfe_options=("predictor", "corrector", "n_steps"))
def pc(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    predictor="reverse_diffusion",
    corrector="langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    sharding=None,
) -> tuple[Array, Array]:
    """The paper's PC sampler from x at ts[0] = T: at each of the N = len(ts) times a predictor step, then
    `n_steps` corrector steps at the time it reached (none after the last step, from t = eps = ts[-1]).

    The predictors step by dt = T/N and the discrete chains (SMLD's sigmas, DDPM's betas) are the SDE's with N
    steps, so the grid must be the uniform one from T (``schedule="uniform"``); any other is refused. The SDE's
    N is set to len(ts). ``predictor`` and ``corrector`` are registered names or functions with the signatures
    of predictors.py and correctors.py. ``denoise``: return the last step's mean, without its noise.
    """
    predict, correct = _lookup(predictor, get_predictor), _lookup(corrector, get_corrector)
    if n_steps < 0:
        raise ValueError(f"n_steps (corrector steps per time step) must be >= 0, got {n_steps}")
    if isinstance(ts, jax.core.Tracer):
        raise ValueError("the PC sampler needs a concrete (not traced) time grid: its length is the SDE's N")
    ts = check_grid(np.asarray(ts), sde)
    if ts[0] != sde.T or not np.allclose(ts, np.linspace(sde.T, ts[-1], len(ts)), rtol=0, atol=1e-6 * sde.T):
        raise ValueError(
            "the PC sampler runs on the uniform grid from T only (schedule 'uniform'): its predictors step by "
            f"dt = T/N along the SDE's discrete chain; got times {ts}"
        )
    eps = check_eps(ts[-1], sde)
    if sde.N != len(ts):
        sde = dataclasses.replace(sde, N=len(ts))
    # Predictor and corrector are pytree arguments (a registered function is a leafless Partial, static in
    # effect): a wrapped one holding arrays (conditional/replacement.py) is traced, not baked into the code.
    n_steps = int(n_steps) if correct is not CORRECTORS["none"] else 0
    run = functools.partial(_pc, n_steps=n_steps)
    return run(
        key,
        as_pytree(score_fn),
        sde,
        x,
        snr,
        bool(probability_flow),
        bool(denoise),
        eps,
        sharding,
        as_pytree(predict),
        as_pytree(correct),
    )


@functools.partial(jax.jit, static_argnums=(2, 5, 6, 7, 8), static_argnames=("n_steps",))
def _pc(key, score_fn, sde, x, snr, probability_flow, denoise, eps, sharding, predict, correct, *, n_steps):
    score = Counted(score_fn)
    batch = x.shape[0]
    timesteps = jnp.linspace(sde.T, eps, sde.N)
    corrects = n_steps > 0

    def corrector_step(j, carry):
        x, x_mean, nfe, t, key = carry
        before = score.calls
        x, x_mean = correct(jax.random.fold_in(key, j), x, t, sde=sde, score_fn=score, snr=snr)
        return constrain(x, sharding), x_mean, nfe + (score.calls - before), t, key

    def step(i, carry):
        x, x_mean, nfe = carry
        predictor_key, corrector_key = jax.random.split(jax.random.fold_in(key, i))
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
        if corrects:
            t_next = jnp.full((batch,), timesteps[jnp.minimum(i + 1, sde.N - 1)])
            count = jnp.where(i < sde.N - 1, n_steps, 0)
            x, x_mean, nfe, _, _ = jax.lax.fori_loop(0, count, corrector_step, (x, x_mean, nfe, t_next, corrector_key))
        return x, x_mean, nfe

    x = constrain(x, sharding)
    x, x_mean, nfe = jax.lax.fori_loop(0, sde.N, step, (x, x, jnp.int32(0)))
    return (x_mean if denoise else x), nfe


def pc_sampler(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    predictor="reverse_diffusion",
    corrector="langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float | None = None,
    sharding=None,
) -> tuple[Array, Array]:
    """Samples `shape` = (B, ...) from the reverse SDE of `sde` with a predictor and a corrector, each a
    registered name or a function (see predictors.py, correctors.py): the sampler "pc" from a prior sample.

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
    _lookup(predictor, get_predictor), _lookup(corrector, get_corrector)
    eps = check_eps(sde.sampling_eps if eps is None else eps, sde)
    options = dict(predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps)
    options.update(probability_flow=probability_flow, denoise=denoise)
    return sample("pc", key, score_fn, sde, shape, steps=sde.N - 1, eps=eps, sharding=sharding, **options)
