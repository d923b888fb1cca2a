"""The one signature every sampler shares, and the table of samplers by name.

A sampler is a function

    sampler(key, score_fn, sde, x, ts, *, sharding=None, **options) -> (samples, nfe)

x (B, ...) is the state at time ts[0] (a prior sample, or a given latent x_T), ts a strictly decreasing grid
t_0 > t_1 > ... > t_n (see grids.py); it returns the samples at t_n (B, ...) and the network evaluations made,
an int32 scalar counted as the sampler runs (wrap score_fn in `_common.Counted`). `key` feeds its randomness
(unused by deterministic ones). ``sharding`` is a NamedSharding of the batch (`_common.constrain`). It must
be traceable (jitted inside, score_fn a jit argument via `score.as_pytree`).

Registered with ``@register_sampler("name", steps_for_nfe=..., min_nfe=...)``; variants of one method are
registered under their own names ("dpm_solver++:3m", "edm:heun"), e.g. with functools.partial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from score_sde.registry import Registry

SamplerFn = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A registered sampler: ``fn`` with the signature above; ``steps_for_nfe(nfe)`` the number of grid
    intervals whose run makes at most ``nfe`` network evaluations; ``min_nfe`` the smallest budget it can run
    with; ``adaptive`` when it chooses its own steps (it then uses only the grid's end points)."""

    name: str
    fn: SamplerFn
    steps_for_nfe: Callable[[int], int]
    min_nfe: int = 1
    adaptive: bool = False

    def steps(self, nfe: int) -> int:
        """Grid intervals for a budget of ``nfe`` evaluations, or ValueError if it is below `min_nfe`."""
        if int(nfe) < self.min_nfe:
            raise ValueError(f"sampler {self.name!r} needs an NFE budget of at least {self.min_nfe}, got {nfe}")
        return int(self.steps_for_nfe(int(nfe)))


SAMPLERS: Registry[Sampler] = Registry("sampler")


def register_sampler(
    name: str, *, steps_for_nfe: Callable[[int], int] = lambda nfe: nfe, min_nfe: int = 1, adaptive: bool = False
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: ``fn`` becomes the sampler ``name`` (case-insensitive), reachable from compare, sample and
    ``config.sampling.method``. Returns ``fn`` unchanged."""

    def register(fn: SamplerFn) -> SamplerFn:
        SAMPLERS.register(name)(Sampler(name.lower(), fn, steps_for_nfe, int(min_nfe), bool(adaptive)))
        return fn

    return register


def get_sampler(name: str, source: str | None = "the sampler") -> Sampler:
    """The sampler registered as ``name``; an unknown name raises ValueError listing the known ones."""
    return SAMPLERS.lookup(name, source)
