"""The one signature every sampler shares, the table of samplers by name, and `sample`, which runs one by name.

A sampler is a function

    sampler(key, score_fn, sde, x, ts, *, sharding=None, **options) -> (samples, nfe)

x (B, ...) is the state at time ts[0] (a prior sample, or a given latent x_T), ts a strictly decreasing grid
t_0 > t_1 > ... > t_n (see grids.py); it returns the samples at t_n (B, ...) and the network evaluations made,
an int32 scalar counted as the sampler runs (wrap score_fn in `_common.Counted`). `key` feeds its randomness
(unused by deterministic ones). ``sharding`` is a NamedSharding of the batch (`_common.constrain`). It must
be traceable (jitted inside, score_fn a jit argument via `score.as_pytree`). Its options are keyword-only
arguments with defaults; `sample` and the config (`config.sampling.<option>`) pass them by name.

Registered with ``@register_sampler("name", steps_for_nfe=..., min_nfe=...)``; variants of one method are
registered under their own names ("dpm_solver++:3m", "edm:heun").

    x, nfe = sample("edm:heun", key, score_fn, sde, (64, 32, 32, 3), nfe=35)   # on its Karras grid ("auto")
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax

from score_sde.registry import Registry
from score_sde.sampling._common import check_shape, constrain
from score_sde.sampling.grids import time_grid

SamplerFn = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered sampler: ``fn`` with the signature above; ``steps_for_nfe(nfe, **nfe_options)`` the number
    of grid intervals whose run makes at most ``nfe`` network evaluations, given the options named in
    ``nfe_options`` that change the count (a PC sampler's corrector); ``min_nfe`` the smallest budget it can
    run with; ``adaptive`` when it chooses its own steps (it then uses only the grid's end points), and
    ``tolerance`` the options that a comparison's tolerance sets for it (rtol and atol of an ODE solver);
    ``grid`` its published time grid, the one ``schedule="auto"`` (the default) gives it."""

    name: str
    fn: SamplerFn
    steps_for_nfe: Callable[..., int]
    min_nfe: int = 1
    adaptive: bool = False
    nfe_options: tuple[str, ...] = ()
    tolerance: tuple[str, ...] = ()
    grid: str = "uniform"

    @property
    def options(self) -> dict[str, Any]:
        """Its options (keyword-only arguments but ``sharding``) and their defaults."""
        return _options(self.fn)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """ValueError naming an option the sampler does not have, and the ones it has."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"sampler {self.name!r} has no option {unknown}; its options: {sorted(self.options)}")

    def steps(self, nfe: int, **options) -> int:
        """Grid intervals for a budget of ``nfe`` evaluations (given the sampler's options), or ValueError if
        the budget is below what one step costs, or the sampler is adaptive."""
        if self.adaptive:
            raise ValueError(f"sampler {self.name!r} chooses its own steps: give it tolerances, not an NFE budget")
        counted = {k: options[k] for k in self.nfe_options if k in options}
        if int(nfe) < self.min_nfe or self.steps_for_nfe(int(nfe), **counted) < 1:
            smallest = next((n for n in range(1, 10_000) if self.steps_for_nfe(n, **counted) >= 1), None)
            given = f" with {counted}" if counted else ""
            raise ValueError(
                f"sampler {self.name!r}{given} needs an NFE budget of at least {max(self.min_nfe, smallest or 0)}, "
                f"got {nfe}"
            )
        return int(self.steps_for_nfe(int(nfe), **counted))


@functools.cache
def _options(fn: Callable) -> dict[str, Any]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name != "sharding"}


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register_sampler(
    name: str,
    *,
    steps_for_nfe: Callable[..., int] = lambda nfe: nfe,
    min_nfe: int = 1,
    adaptive: bool = False,
    nfe_options: tuple[str, ...] = (),
    tolerance: tuple[str, ...] = (),
    grid: str = "uniform",
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: ``fn`` becomes the sampler ``name`` (case-insensitive), reachable from compare, sample and
    ``config.sampling.method``; ``grid`` is the time grid it runs on unless the user names one. Returns ``fn``
    unchanged."""

    def register(fn: SamplerFn) -> SamplerFn:
        sampler = Sampler(name.lower(), fn, steps_for_nfe, int(min_nfe), bool(adaptive), nfe_options, tolerance, grid)
        SAMPLERS.register(name)(sampler)
        return fn

    return register


def get_sampler(name: str, source: str | None = None) -> Sampler:
    """The sampler registered as ``name``; an unknown name raises ValueError listing the known ones."""
    return SAMPLERS.lookup(name, source)


def grid_name(sampler: Sampler, schedule: str) -> str:
    """The time grid ``schedule`` names for ``sampler``: "auto" is its published one (`Sampler.grid`)."""
    return sampler.grid if str(schedule).lower() == "auto" else str(schedule)


# Options that config.sampling (as the official configs) holds under another name.
CONFIG_KEYS = {"n_steps": "n_steps_each", "denoise": "noise_removal"}


def options_from(sampler: Sampler, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``sampler`` that ``values`` (config.sampling, or a comparison's options) set: each from
    the entry of its name (of its `CONFIG_KEYS` name); entries that are None or absent leave the default, and
    entries the sampler has no option for are ignored."""
    found = {name: values.get(CONFIG_KEYS.get(name, name), None) for name in sampler.options}
    return {name: value for name, value in found.items() if value is not None}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _start(key, sde, shape, sharding, z):
    return constrain(sde.prior_sampling(key, shape) if z is None else z, sharding)


def sample(
    sampler: str | Sampler,
    key: jax.Array,
    score_fn,
    sde,
    shape: tuple[int, ...],
    *,
    steps: int | None = None,
    nfe: int | None = None,
    schedule="auto",
    eps: float | None = None,
    z: jax.Array | None = None,
    sharding=None,
    **options,
) -> tuple[jax.Array, jax.Array]:
    """Samples `shape` = (B, ...) with the sampler ``sampler`` (a name or a `Sampler`) from T down to ``eps``
    (default sde.sampling_eps) on the grid ``schedule``: "auto" (the sampler's published grid, `Sampler.grid`) or
    another grid name, with ``steps`` intervals, or as many as a
    budget of ``nfe`` evaluations allows (`Sampler.steps`), or an explicit array of times in [eps, T] (a sampler
    called directly takes any grid in (0, T]). Adaptive samplers
    use only the grid's end points. Starts from a prior sample drawn with the first half of ``split(key)`` (so
    every sampler given the same key starts from the same noise), or from ``z``; the sampler gets the second
    half. ``options`` are the sampler's. Returns (samples, nfe), the evaluations counted as they ran."""
    sampler = get_sampler(sampler) if isinstance(sampler, str) else sampler
    sampler.check_options(options)
    shape = check_shape(shape)
    if z is not None and z.shape != shape:
        raise ValueError(f"z has shape {z.shape}, but shape={shape}")
    if isinstance(schedule, str):
        schedule = grid_name(sampler, schedule)
    if not isinstance(schedule, str):
        ts = time_grid(schedule, sde, eps=eps)
    elif sampler.adaptive:
        if steps is not None or nfe is not None:
            sampler.steps(nfe or steps)  # refused, naming the sampler
        ts = time_grid("uniform", sde, 1, eps)
    elif steps is None and nfe is None:
        raise ValueError(f"sampler {sampler.name!r} needs a number of steps or an NFE budget")
    else:
        ts = time_grid(schedule, sde, steps if steps is not None else sampler.steps(nfe, **options), eps)
    prior_key, key = jax.random.split(key)
    x = _start(prior_key, sde, shape, sharding, z)
    return sampler.fn(key, score_fn, sde, x, ts, sharding=sharding, **options)
