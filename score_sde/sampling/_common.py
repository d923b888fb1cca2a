"""Pieces shared by the samplers and the likelihood: evaluation counting, argument checks, sharding."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling.grids import check_grid
from score_sde.sde import SDE

Array = jax.Array


class Counted:
    """Wraps f(x, ...) -> array shaped like x; counts the calls made while tracing and checks the shape.

    A loop body adds `calls` after minus `calls` before to a counter it carries, so the number of
    evaluations is accumulated by the compiled computation as it runs, iteration by iteration.
    """

    def __init__(self, fn: Callable, name: str = "score_fn"):
        self.fn, self.name, self.calls = fn, name, 0

    def __call__(self, x, *args):
        self.calls += 1
        out = self.fn(x, *args)
        if jax.tree.structure(out) != jax.tree.structure(x) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x))
        ):
            raise ValueError(
                f"{self.name} returned shape {jax.tree.map(lambda a: a.shape, out)} "
                f"for input of shape {jax.tree.map(lambda a: a.shape, x)}"
            )
        return out


def check_order(order, orders, solver: str) -> int:
    """``order`` as an int, or ValueError naming the orders ``solver`` has: an order is one of those integers
    (2.5, "3" or True are refused, not truncated or converted)."""
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or int(order) not in orders:
        raise ValueError(f"{solver} has orders {list(orders)}, got order={order!r}")
    return int(order)


def check_eps(eps: float, sde: SDE) -> float:
    eps = float(eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps (the smallest time) must lie in (0, T={sde.T}), got {eps}")
    return eps


def padded(values, fill) -> np.ndarray:
    """values (n,) padded with `fill` to max(256, the next power of two): the compiled samplers take the grid and
    the per-step tables at this length and loop over their first n entries, so that grids of up to 256 steps (a
    comparison at several NFE) share one compilation."""
    values = np.asarray(values)
    length = max(256, 1 << (len(values) - 1).bit_length())
    return np.concatenate([values, np.full(length - len(values), fill, values.dtype)])


def padded_grid(ts, sde: SDE, x: Array) -> tuple[Array, int]:
    """The time grid ``ts``, checked (`grids.check_grid`), padded with its last time (`padded`) as an array of
    x's dtype, and its number of intervals n."""
    ts = check_grid(ts, sde)
    return jnp.asarray(padded(ts, ts[-1]), x.dtype), len(ts) - 1


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"{name} must be (batch, ...) with positive sizes, got {shape}")
    return shape


def _is_explicit(sharding) -> bool:
    mesh = getattr(sharding, "mesh", None)
    return mesh is not None and any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def constrain(x: Array, sharding) -> Array:
    """Pins x (B, ...) to `sharding` (a NamedSharding of the batch), or leaves it to the compiler if None.

    Meshes with Auto axes work anywhere; one with Explicit axes (jax.make_mesh's default) needs the caller
    to have entered it (`with jax.set_mesh(mesh):`).
    """
    if sharding is None:
        return x
    if not _is_explicit(sharding):
        return jax.lax.with_sharding_constraint(x, sharding)
    if jax.sharding.get_abstract_mesh().are_all_axes_auto:  # inside `auto_axes` (see in_auto_axes)
        return jax.lax.with_sharding_constraint(x, sharding.spec)
    return jax.sharding.reshard(x, sharding)


def in_auto_axes(fn: Callable, sharding, y0, *batched):
    """fn(y0, *batched) -> (y1 shaped like y0, scalar), with the mesh's axes in Auto mode when `sharding` is
    over an Explicit mesh: for code (diffrax's solvers) that allocates loop buffers without sharding types.
    The leaves of y0, `batched` and y1 have the batch first (sharded arrays must be passed in, not closed
    over); y1 comes back batch-sharded, the scalar replicated."""
    if sharding is None or not _is_explicit(sharding):
        return fn(y0, *batched)
    mesh, batch_spec = sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[:1])
    out_sharding = (
        jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, batch_spec), y0),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
    )
    return jax.sharding.auto_axes(fn, out_sharding=out_sharding)(y0, *batched)
