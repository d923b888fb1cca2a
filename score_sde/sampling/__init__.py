"""Samplers: every one takes a plain score_fn(x, t) and returns (samples, nfe).

    x, nfe = pc_sampler(key, score_fn, sde, shape, predictor="reverse_diffusion", corrector="langevin")
    x, nfe = ode_sampler(key, score_fn, sde, shape, method="RK45", rtol=1e-5, atol=1e-5)
    x, nfe = get_sampler("dpm_solver++:3m").fn(key, score_fn, sde, x_T, time_grid("logsnr", sde, 10))
    sampling_fn = get_sampling_fn(config, sde, shape, inverse_scaler, eps); x, nfe = sampling_fn(key, score_fn)

New predictors and correctors register by name (see predictors.py and correctors.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from score_sde.sampling import adaptive_sde, ddim, edm, ipndm  # noqa: F401  (they register their samplers)
from score_sde.sampling.correctors import CORRECTORS, get_corrector, register_corrector
from score_sde.sampling.dpm_solver import dpm_solver, dpm_solver_pp, dpm_solver_pp_sde
from score_sde.sampling.grids import GRIDS, check_grid, register_grid, time_grid
from score_sde.sampling.ode import integrate, ode_sampler
from score_sde.sampling.pc import pc_sampler
from score_sde.sampling.predictors import PREDICTORS, get_predictor, register_predictor
from score_sde.sampling.samplers import (
    CONFIG_KEYS,
    SAMPLERS,
    Sampler,
    get_sampler,
    grid_name,
    options_from,
    register_sampler,
    sample,
)
from score_sde.sampling.unipc import unipc
from score_sde.sde import SDE

__all__ = [
    "CONFIG_KEYS",
    "CORRECTORS",
    "GRIDS",
    "PREDICTORS",
    "SAMPLERS",
    "Sampler",
    "check_grid",
    "dpm_solver",
    "dpm_solver_pp",
    "dpm_solver_pp_sde",
    "get_sampler",
    "grid_name",
    "register_grid",
    "register_sampler",
    "time_grid",
    "get_corrector",
    "get_predictor",
    "get_sampling_fn",
    "integrate",
    "ode_sampler",
    "pc_sampler",
    "register_corrector",
    "register_predictor",
    "options_from",
    "sample",
    "unipc",
]


def get_sampling_fn(
    config, sde: SDE, shape, inverse_scaler: Callable = lambda x: x, eps: float | None = None, sharding=None
) -> Callable:
    """sampling_fn(key, score_fn) -> (inverse_scaler(samples), nfe) as config.sampling says; its ``description``
    names the sampler, its grid and steps.

    config.sampling.method names any registered sampler (`SAMPLERS`: "pc", "ode:rk45", "ddim", "edm:heun",
    ...); "ode" is the official configs' probability-flow sampler, "ode:<sampling.ode_method>". Its options come
    from the config.sampling entries of the same names (`samplers.options_from`: "pc" reads predictor,
    corrector, snr, n_steps_each, probability_flow, noise_removal; "ode:*" rtol, atol, noise_removal; "ddim"
    eta; ...), those set to None or absent keeping the sampler's default. The grid is `sampling.schedule`
    ("auto", the default: the sampler's published grid, `Sampler.grid`; "uniform" in configs saved before it)
    with `sampling.steps` intervals, or as many as a budget of `sampling.nfe` network
    evaluations allows; "pc" defaults to the SDE's N steps (config.model.num_scales, as the paper) and "ode:*"
    to `sampling.ode_steps`. Adaptive samplers need no steps. `shape` is the global batch (B, H, W, C); `eps`
    defaults to sde.sampling_eps. Configs saved before any of these entries existed still work.
    """
    s = config.sampling
    name, source = str(s.method).lower(), "config.sampling.method"
    if name == "ode":
        name, source = f"ode:{str(s.get('ode_method', 'RK45')).lower()}", "config.sampling.ode_method (as ode:NAME)"
    sampler = get_sampler(name, source)
    options = options_from(sampler, s)
    if sampler.name == "pc":  # unknown names fail here, not at the first sampling
        chosen = {**sampler.options, **options}
        get_predictor(chosen["predictor"]), get_corrector(chosen["corrector"])
    schedule = grid_name(sampler, s.get("schedule", None) or "uniform")  # (absent in configs saved before "auto")
    GRIDS.lookup(schedule, "config.sampling.schedule")
    steps, nfe = s.get("steps", None), s.get("nfe", None)
    if steps is None and nfe is None and not sampler.adaptive:  # (the official configs' ode_steps: fixed-step only)
        steps = sde.N - 1 if sampler.name == "pc" else s.get("ode_steps", None) if name.startswith("ode:") else None
    if sampler.adaptive and (steps is not None or nfe is not None):
        sampler.steps(nfe or steps)  # refused, naming the sampler
    if not sampler.adaptive:
        if steps is None and nfe is None:
            raise ValueError(
                f"config.sampling.method={name!r} needs config.sampling.nfe (a budget of network evaluations) "
                "or config.sampling.steps (grid intervals)"
            )
        if steps is None:
            sampler.steps(int(nfe), **options)  # a budget too small fails here

    def sampling_fn(key, score_fn):
        run = functools.partial(sample, sampler, key, score_fn, sde, shape, schedule=schedule, eps=eps)
        x, nfe_made = run(steps=steps, nfe=nfe, sharding=sharding, **options)
        return inverse_scaler(x), nfe_made

    size = "" if sampler.adaptive else f", {steps} steps" if steps is not None else f", an NFE budget of {nfe}"
    sampling_fn.description = f"{name} on the {schedule} grid{size}"  # what `score-sde sample` prints
    return sampling_fn
