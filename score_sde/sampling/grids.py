"""Time grids t_0 = T > t_1 > ... > t_n = eps for the samplers, each a function of (sde, number of steps, eps).

    ts = time_grid("karras", sde, num_steps=18, eps=sde.sampling_eps)   # numpy float64, (num_steps + 1,)
    ts = time_grid(np.array([1.0, 0.5, 0.1, 1e-3]), sde)                # an explicit grid, checked

Every grid is defined through the SDE's perturbation kernel only (its log-SNR lambda(t) = log(m(t) / s(t)) and
the inverse `SDE.t_of_log_snr`), so a new SDE class gets all of them. Register another with
``@register_grid("name")``: a function (sde, num_steps, eps) -> decreasing times (num_steps + 1,).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from score_sde.registry import Registry
from score_sde.sde import SDE

Grid = Callable[[SDE, int, float], np.ndarray]

GRIDS: Registry[Grid] = Registry("time grid")
register_grid = GRIDS.register  # ``@register_grid("name")``


def _log_snr(sde: SDE, t: float) -> float:
    return float(sde.log_snr(jnp.asarray([t], jnp.float32))[0])


def _times(sde: SDE, log_snrs: np.ndarray) -> np.ndarray:
    """Times of the given log-SNRs (float32 inversion: exact to a few 1e-7)."""
    return np.asarray(sde.t_of_log_snr(jnp.asarray(log_snrs, jnp.float32)), np.float64)


@register_grid("uniform")
def uniform(sde: SDE, num_steps: int, eps: float) -> np.ndarray:
    """Uniform in t (the paper's PC and Euler grids): t_i = T + i (eps - T) / n."""
    return np.linspace(sde.T, eps, num_steps + 1)


@register_grid("logsnr")
def logsnr(sde: SDE, num_steps: int, eps: float) -> np.ndarray:
    """Uniform in log-SNR (DPM-Solver's "logSNR" grid): lambda_i = lambda(T) + i (lambda(eps) - lambda(T)) / n."""
    return _times(sde, np.linspace(_log_snr(sde, sde.T), _log_snr(sde, eps), num_steps + 1))


@register_grid("karras")
def karras(sde: SDE, num_steps: int, eps: float, rho: float = 7.0) -> np.ndarray:
    """EDM's schedule (Karras et al. 2022, eq. 5) in sigma = s / m = exp(-lambda):
    sigma_i = (sigma_max^(1/rho) + i / n (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7."""
    sigma_max, sigma_min = np.exp(-_log_snr(sde, sde.T)), np.exp(-_log_snr(sde, eps))
    ramp = np.linspace(0.0, 1.0, num_steps + 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return _times(sde, -np.log(sigmas))


@register_grid("quadratic")
def quadratic(sde: SDE, num_steps: int, eps: float) -> np.ndarray:
    """Uniform in sqrt(t) (DPM-Solver's "time_quadratic", after DDIM's quadratic grid): t_i = (sqrt(T) + i / n
    (sqrt(eps) - sqrt(T)))^2, denser near the data."""
    return np.linspace(np.sqrt(sde.T), np.sqrt(eps), num_steps + 1) ** 2


# A grid's last time may lie this far (relative) below eps: grids mapped from sigma or log-SNR in float32 land a
# rounding error (a few ulp) below it.
EPS_RTOL = 1e-6


def check_grid(ts, sde: SDE, eps: float | None = None) -> np.ndarray:
    """ts as float64 numpy, or ValueError naming the problem: not 1-D with at least 2 points, not strictly
    decreasing, or outside [eps, T] (to a relative `EPS_RTOL` at eps; outside (0, T] when eps is None, as for a
    sampler called directly)."""
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"a time grid must be 1-D with at least 2 times (T > ... > eps), got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"the time grid has non-finite times: {ts}")
    if np.any(np.diff(ts) >= 0):
        i = int(np.argmax(np.diff(ts) >= 0))
        raise ValueError(f"the time grid must be strictly decreasing, but t_{i} = {ts[i]} <= t_{i + 1} = {ts[i + 1]}")
    low_ok = ts[-1] >= eps * (1 - EPS_RTOL) if eps is not None else ts[-1] > 0
    if ts[0] > sde.T or not low_ok:
        bounds = f"[{eps}, {sde.T}]" if eps is not None else f"(0, {sde.T}]"
        raise ValueError(f"the time grid must lie in {bounds}, got times from {ts[0]} down to {ts[-1]}")
    return ts


def time_grid(grid, sde: SDE, num_steps: int | None = None, eps: float | None = None) -> np.ndarray:
    """The decreasing times (num_steps + 1,) of the grid registered as ``grid`` (a name) from T down to ``eps``
    (default sde.sampling_eps), or ``grid`` itself when it is an array of times, then checked to lie in [eps, T]
    (num_steps unused)."""
    eps = sde.sampling_eps if eps is None else float(eps)
    if not isinstance(grid, str):
        return check_grid(grid, sde, eps)
    fn = GRIDS.lookup(grid)
    if num_steps is None or int(num_steps) < 1:
        raise ValueError(f"the time grid {grid!r} needs num_steps >= 1, got {num_steps}")
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps (the smallest time) must lie in (0, T={sde.T}), got {eps}")
    ts = np.array(fn(sde, int(num_steps), eps), np.float64)
    ts[0], ts[-1] = sde.T, eps  # exactly, whatever the round-off of the grid's formula
    return check_grid(ts, sde, eps)
