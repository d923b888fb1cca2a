"""Probability-flow ODE sampling: dx/dt = f(x, t) - g(t)^2 score(x, t) / 2, integrated from T down to eps.

Adaptive Runge-Kutta solvers run on the device inside jit (diffrax); fixed-step Euler and Heun run as a
plain loop. `integrate` is shared with the likelihood.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

from score_sde.sampling._common import Counted, check_eps, check_shape, constrain, in_auto_axes
from score_sde.sampling.predictors import reverse_diffusion
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn

Array = jax.Array

# Adaptive embedded Runge-Kutta pairs. "RK45" is Dormand-Prince 5(4), scipy's (and the official code's) RK45.
ADAPTIVE = {"rk45": diffrax.Dopri5, "dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5, "bosh3": diffrax.Bosh3}
FIXED_STEP = ("euler", "heun")


def check_method(method: str, num_steps: int | None) -> str:
    m = method.lower()
    if m in ADAPTIVE:
        return m
    if m in FIXED_STEP:
        if num_steps is None or num_steps < 1:
            raise ValueError(f"the fixed-step ODE method {method!r} needs num_steps >= 1, got {num_steps}")
        return m
    raise ValueError(f"unknown ODE method {method!r}; choose one of {sorted(ADAPTIVE) + list(FIXED_STEP)}")


def integrate(
    f: Callable,
    y0,
    t0: float,
    t1: float,
    *,
    method: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    max_steps: int = 4096,
):
    """Solves dy/dt = f(t, y) from t0 to t1 (either direction) for a pytree y. Traceable (call under jit).

    Returns (y(t1), nfe), nfe the evaluations of f as an int32 scalar. For the adaptive methods the error
    norm is the RMS over all of y (as scipy's), so one step size is shared by the whole batch.
    """
    method = check_method(method, num_steps)
    counted = Counted(lambda y, t: f(t, y), "the ODE's vector field")
    if method in FIXED_STEP:
        ts = jnp.linspace(t0, t1, num_steps + 1)

        def step(i, carry):
            y, nfe = carry
            before = counted.calls
            t, h = ts[i], ts[i + 1] - ts[i]
            k1 = counted(y, t)
            if method == "euler":
                y = jax.tree.map(lambda a, b: a + h * b, y, k1)
            else:
                k2 = counted(jax.tree.map(lambda a, b: a + h * b, y, k1), ts[i + 1])
                y = jax.tree.map(lambda a, b, c: a + 0.5 * h * (b + c), y, k1, k2)
            return y, nfe + (counted.calls - before)

        return jax.lax.fori_loop(0, num_steps, step, (y0, jnp.int32(0)))

    solver = ADAPTIVE[method]()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: counted(y, t)),
        solver,
        t0=t0,
        t1=t1,
        # An explicit first step (1% of the interval) instead of diffrax's probing, whose evaluations
        # would not be counted; the controller adapts it after one step.
        dt0=0.01 * (t1 - t0),
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    # diffrax counts the steps it tries (accepted and rejected); each costs the tableau's stages, less the
    # first when it reuses the previous step's last evaluation (FSAL), which the solver evaluates once at t0.
    tableau = solver.tableau
    stages = len(tableau.c) + 1
    nfe = (stages - 1) * sol.stats["num_steps"] + 1 if tableau.fsal else stages * sol.stats["num_steps"]
    return jax.tree.map(lambda y: y[0], sol.ys), jnp.asarray(nfe, jnp.int32)


def ode_sampler(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    denoise: bool = False,
    eps: float | None = None,
    z: Array | None = None,
    sharding=None,
    max_steps: int = 4096,
) -> tuple[Array, Array]:
    """Samples `shape` = (B, ...) by integrating the probability-flow ODE of `sde` from T to eps.

    method: adaptive "RK45" (= "dopri5"), "tsit5" or "bosh3" with tolerances rtol, atol; or fixed-step
    "euler" or "heun" with `num_steps` uniform steps. `z`: start from this latent (B, ...) instead of a
    prior sample. `denoise`: finish with one reverse-diffusion step at eps without noise (1 more NFE).
    `eps` defaults to `sde.sampling_eps`. Jitted. Returns (samples, nfe), nfe counted as the solver runs.
    """
    method = check_method(method, num_steps)
    eps = check_eps(sde.sampling_eps if eps is None else eps, sde)
    shape = check_shape(shape)
    if z is not None and z.shape != shape:
        raise ValueError(f"z has shape {z.shape}, but shape={shape}")
    return _ode_sampler(
        key,
        as_pytree(score_fn),
        sde,
        shape,
        method,
        float(rtol),
        float(atol),
        None if num_steps is None else int(num_steps),
        bool(denoise),
        eps,
        z,
        sharding,
        int(max_steps),
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8, 9, 11, 12))
def _ode_sampler(key, score_fn, sde, shape, method, rtol, atol, num_steps, denoise, eps, z, sharding, max_steps):
    batch = shape[0]
    prior_key, denoise_key = jax.random.split(key)
    x = sde.prior_sampling(prior_key, shape) if z is None else z
    x = constrain(x, sharding)
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift(t, x):
        return constrain(rsde.sde(x, jnp.full((batch,), t))[0], sharding)

    x, nfe = in_auto_axes(
        lambda x, *_: integrate(
            drift, x, sde.T, eps, method=method, rtol=rtol, atol=atol, num_steps=num_steps, max_steps=max_steps
        ),
        sharding,
        x,
    )
    x = constrain(x, sharding)
    if denoise:
        score = Counted(score_fn)
        _, x = reverse_diffusion(denoise_key, x, jnp.full((batch,), eps), sde=sde, score_fn=score)
        nfe = nfe + score.calls
    return x, nfe
