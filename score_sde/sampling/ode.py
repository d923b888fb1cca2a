"""Probability-flow ODE sampling: dx/dt = f(x, t) - g(t)^2 score(x, t) / 2, integrated from T down to eps.

Samplers "ode:euler" and "ode:heun" (fixed steps on the given grid, a loop on the device) and "ode:rk45"
(= "ode:dopri5"), "ode:tsit5", "ode:bosh3" (adaptive Runge-Kutta pairs of diffrax inside jit, between the
grid's end points); `ode_sampler` is their front end from a prior sample. `integrate` is shared with the
likelihood.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, check_eps, constrain, in_auto_axes, padded_grid
from score_sde.sampling.grids import check_grid
from score_sde.sampling.predictors import reverse_diffusion
from score_sde.sampling.samplers import register_sampler, sample
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


def fixed_step(f: Callable, y0, ts: Array, method: str, n=None):
    """Euler or Heun (the explicit trapezoidal rule) for dy/dt = f(t, y) over the first n steps of the grid ts
    (default: all), y a pytree. Traceable. Returns (y(ts[n]), nfe), nfe the evaluations of f as an int32
    scalar, counted as they run."""
    counted = Counted(lambda y, t: f(t, y), "the ODE's vector field")

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

    return jax.lax.fori_loop(0, ts.shape[0] - 1 if n is None else n, step, (y0, jnp.int32(0)))


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
    norm is the RMS over all of y (as scipy's), so one step size is shared by the whole batch; the fixed-step
    ones take `num_steps` uniform steps.
    """
    method = check_method(method, num_steps)
    if method in FIXED_STEP:
        return fixed_step(f, y0, jnp.linspace(t0, t1, num_steps + 1), method)
    counted = Counted(lambda y, t: f(t, y), "the ODE's vector field")
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


def _probability_flow(solve: Callable, score_fn, sde, x, t_end, key, denoise, sharding):
    """``solve(f, x) -> (x, nfe)`` on the probability-flow ODE dx/dt = f(t, x) of `sde`, then the optional
    denoising step at t_end (a reverse-diffusion step without its noise)."""
    batch = x.shape[0]
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift(t, x):
        return constrain(rsde.sde(x, jnp.full((batch,), t))[0], sharding)

    x, nfe = in_auto_axes(lambda x, *_: solve(drift, x), sharding, constrain(x, sharding))
    x = constrain(x, sharding)
    if denoise:
        score = Counted(score_fn)
        _, x = reverse_diffusion(key, x, jnp.full((batch,), t_end), sde=sde, score_fn=score)
        nfe = nfe + score.calls
    return x, nfe


@functools.partial(jax.jit, static_argnums=(2, 6, 7, 8))
def _fixed(key, score_fn, sde, x, ts, n, method, denoise, sharding):
    solve = lambda f, x: fixed_step(f, x, ts, method, n)  # noqa: E731
    return _probability_flow(solve, score_fn, sde, x, ts[n], key, denoise, sharding)


@functools.partial(jax.jit, static_argnums=(2, 4, 5, 6, 7, 8, 9, 10, 11))
def _adaptive(key, score_fn, sde, x, method, t0, t1, rtol, atol, max_steps, denoise, sharding):
    solver = dict(method=method, rtol=rtol, atol=atol, max_steps=max_steps)
    solve = lambda f, x: integrate(f, x, t0, t1, **solver)  # noqa: E731
    return _probability_flow(solve, score_fn, sde, x, t1, key, denoise, sharding)


def _register_fixed(method: str, evaluations: int) -> None:
    def fixed(key: Array, score_fn: ScoreFn, sde: SDE, x: Array, ts, *, denoise: bool = False, sharding=None):
        return _fixed(key, as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), method, bool(denoise), sharding)

    fixed.__doc__ = (
        f"{method.capitalize()} on the probability-flow ODE over the grid ts ({evaluations} evaluation(s) per "
        "step); ``denoise``: one more, a noise-free reverse-diffusion step at ts[-1]."
    )
    register_sampler(
        f"ode:{method}",
        steps_for_nfe=lambda nfe, denoise=False: (nfe - denoise) // evaluations,
        min_nfe=evaluations,
        nfe_options=("denoise",),
    )(fixed)


def _register_adaptive(name: str) -> None:
    def adaptive(
        key: Array,
        score_fn: ScoreFn,
        sde: SDE,
        x: Array,
        ts,
        *,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        denoise: bool = False,
        max_steps: int = 4096,
        sharding=None,
    ):
        if isinstance(ts, jax.core.Tracer):
            raise ValueError(f"ode:{name} needs concrete (not traced) end points ts[0], ts[-1]")
        ts = check_grid(np.asarray(ts), sde)
        options = (float(ts[0]), float(ts[-1]), float(rtol), float(atol), int(max_steps), bool(denoise), sharding)
        return _adaptive(key, as_pytree(score_fn), sde, x, name, *options)

    adaptive.__doc__ = (
        f"Adaptive {ADAPTIVE[name].__name__} (diffrax, on the device) on the probability-flow ODE from ts[0] to "
        "ts[-1] with tolerances rtol, atol; ``denoise``: a noise-free reverse-diffusion step at ts[-1] (1 NFE)."
    )
    register_sampler(f"ode:{name}", adaptive=True, tolerance=("rtol", "atol"))(adaptive)


for _method, _evaluations in (("euler", 1), ("heun", 2)):
    _register_fixed(_method, _evaluations)
for _name in ADAPTIVE:
    _register_adaptive(_name)


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
    """Samples `shape` = (B, ...) by integrating the probability-flow ODE of `sde` from T to eps: the sampler
    "ode:<method>" from a prior sample.

    method: adaptive "RK45" (= "dopri5"), "tsit5" or "bosh3" with tolerances rtol, atol; or fixed-step
    "euler" or "heun" with `num_steps` uniform steps. `z`: start from this latent (B, ...) instead of a
    prior sample. `denoise`: finish with one reverse-diffusion step at eps without noise (1 more NFE).
    `eps` defaults to `sde.sampling_eps`. Jitted. Returns (samples, nfe), nfe counted as the solver runs.
    """
    method = check_method(method, num_steps)
    eps = check_eps(sde.sampling_eps if eps is None else eps, sde)
    options = dict(denoise=denoise)
    if method in ADAPTIVE:
        options.update(rtol=rtol, atol=atol, max_steps=max_steps)
    run = functools.partial(sample, f"ode:{method}", key, score_fn, sde, shape, eps=eps, z=z, sharding=sharding)
    return run(steps=num_steps, **options)
