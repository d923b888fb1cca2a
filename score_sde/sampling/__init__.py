"""Samplers: every one takes a plain score_fn(x, t) and returns (samples, nfe).

    x, nfe = pc_sampler(key, score_fn, sde, shape, predictor="reverse_diffusion", corrector="langevin")
    x, nfe = ode_sampler(key, score_fn, sde, shape, method="RK45", rtol=1e-5, atol=1e-5)
    sampling_fn = get_sampling_fn(config, sde, shape, inverse_scaler, eps); x, nfe = sampling_fn(key, score_fn)

New predictors and correctors register by name (see predictors.py and correctors.py).
"""

from __future__ import annotations

from collections.abc import Callable

from score_sde.sampling.correctors import CORRECTORS, get_corrector, register_corrector
from score_sde.sampling.grids import GRIDS, check_grid, register_grid, time_grid
from score_sde.sampling.ode import integrate, ode_sampler
from score_sde.sampling.pc import pc_sampler
from score_sde.sampling.predictors import PREDICTORS, get_predictor, register_predictor
from score_sde.sampling.samplers import SAMPLERS, Sampler, get_sampler, register_sampler
from score_sde.sde import SDE

__all__ = [
    "CORRECTORS",
    "GRIDS",
    "PREDICTORS",
    "SAMPLERS",
    "Sampler",
    "check_grid",
    "get_sampler",
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
]


def get_sampling_fn(
    config, sde: SDE, shape, inverse_scaler: Callable = lambda x: x, eps: float | None = None, sharding=None
) -> Callable:
    """sampling_fn(key, score_fn) -> (inverse_scaler(samples), nfe) as config.sampling says.

    Mirrors the official sampling.get_sampling_fn. config.sampling.method is 'pc' (predictor, corrector,
    snr, n_steps_each, probability_flow, noise_removal) or 'ode' (noise_removal, and optionally
    ode_method (default 'RK45'), rtol and atol (1e-5), ode_steps for the fixed-step methods).
    `shape` is the global batch (B, H, W, C); `eps` defaults to sde.sampling_eps.
    """
    s = config.sampling
    method = str(s.method).lower()
    if method == "pc":
        kwargs = dict(
            predictor=s.predictor,
            corrector=s.corrector,
            snr=s.snr,
            n_steps=s.n_steps_each,
            probability_flow=s.probability_flow,
            denoise=s.noise_removal,
        )
        get_predictor(s.predictor), get_corrector(s.corrector)
        sampler = pc_sampler
    elif method == "ode":
        kwargs = dict(
            method=s.get("ode_method", "RK45"),
            rtol=s.get("rtol", 1e-5),
            atol=s.get("atol", 1e-5),
            num_steps=s.get("ode_steps", None),
            denoise=s.noise_removal,
        )
        sampler = ode_sampler
    else:
        raise ValueError(f"config.sampling.method={s.method!r} is not 'pc' or 'ode'")

    def sampling_fn(key, score_fn):
        x, nfe = sampler(key, score_fn, sde, shape, eps=eps, sharding=sharding, **kwargs)
        return inverse_scaler(x), nfe

    return sampling_fn
