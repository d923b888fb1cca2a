"""iPNDM, the improved pseudo-numerical multistep method of Zhang and Chen (DEIS, ICLR 2023), for any SDE.

In EDM's variables (x~ = x / m, sigma = s / m; see edm.py) the probability-flow ODE is dx~/dsigma = eps, and
iPNDM is an Adams-Bashforth method on it: with the noise predictions eps_i, eps_{i-1}, ... of one evaluation
per step,

    x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) sum_j b_j eps_{i-j},

(DEIS writes it as the DDIM transfer of the combined eps, which is the same update.)

"ipndm" is the published method (DEIS's code, qsh-zh/deis): the coefficients b of Adams-Bashforth with equal
steps, of order k = min(i + 1, order): (1), (3, -1) / 2, (23, -16, 5) / 12, (55, -59, 37, -9) / 24, whatever
the grid. It measures below its nominal order for orders 3 and 4, for two reasons: (1) its warm start, whose
first step is Euler (local error O(h^2), not spread over the steps), bounds the global order by 2 on any
grid; (2) the equal-step coefficients are Taylor-consistent only on a grid uniform in sigma (on any other the
local error is O(h^3)). Measured on VE, VP and sub-VP (tests/test_core_fast_samplers.py, 40-160 steps):
order 3 and 4 converge at 1.4-2.1.

"ipndm_v" is the corrected form, of order ``order`` on any grid: variable-step Adams-Bashforth coefficients
b_j = int_0^1 L_j(u) du for the Lagrange basis L_j on the previous points u_j = (sigma_{i-j} - sigma_i) /
(sigma_{i+1} - sigma_i) (equal to the published ones on a grid uniform in sigma; Zhou et al. 2024 call this
variant iPNDM-v), and a start whose local error is O(h^order): the first order - 2 steps by Heun (order 3) or
Kutta's third-order method (order 4), at 1 (order 3) or 4 (order 4) evaluations more in all. Measured at
40-160 steps: order 3 at 2.7-2.9, order 4 at 3.4-4.0 (approaching from below). Below about 70 NFE the
published form is the more accurate of the two (benchmarks/results/fast_samplers_cpu.md: its start costs
evaluations, and its first, large steps are taken at a low order either way).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, check_order, constrain, padded_grid
from score_sde.sampling.samplers import register_sampler
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array

ORDERS = (1, 2, 3, 4)
# Adams-Bashforth with equal steps, row k - 1 the coefficients of order k on eps_i, eps_{i-1}, ...
_EQUAL_STEP = np.array([[24, 0, 0, 0], [36, -12, 0, 0], [46, -32, 10, 0], [55, -59, 37, -9]]) / 24


@register_sampler("ipndm", grid="karras")
def ipndm(key: Array, score_fn: ScoreFn, sde: SDE, x: Array, ts, *, order: int = 4, sharding=None):
    """The published iPNDM (equal-step Adams-Bashforth coefficients) of ``order`` 1-4; one evaluation per step."""
    order = check_order(order, ORDERS, "ipndm")
    return _ipndm(as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), order, False, sharding)


def _ipndm_v_nfe(steps: int, order: int) -> int:
    """Evaluations of n steps: one each, plus the Runge-Kutta start's (1 for order 3, 2 on each of the first two
    steps for order 4)."""
    return steps + {3: min(steps, 1), 4: 2 * min(steps, 2)}.get(order, 0)


def _ipndm_v_steps(nfe: int, order: int = 4) -> int:
    return max((n for n in range(nfe + 1) if _ipndm_v_nfe(n, order) <= nfe), default=0)


@register_sampler("ipndm_v", steps_for_nfe=_ipndm_v_steps, nfe_options=("order",), grid="karras")
def ipndm_v(key: Array, score_fn: ScoreFn, sde: SDE, x: Array, ts, *, order: int = 4, sharding=None):
    """iPNDM corrected to its nominal ``order`` (1-4) on any grid: variable-step Adams-Bashforth coefficients
    (of the grid's sigmas), the first order - 2 steps by a Runge-Kutta method of order ``order`` - 1. One
    evaluation per step, 1 more for order 3 and 4 more for order 4."""
    order = check_order(order, ORDERS, "ipndm_v")
    return _ipndm(as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), order, True, sharding)


def _variable_step(u: Array, k: Array, order: int) -> Array:
    """b_j = int_0^1 prod_{l != j, l < k} (v - u_l) / (u_j - u_l) dv for j < k, 0 beyond; u (order,), u_0 = 0.

    Each basis polynomial is built factor by factor as its coefficients in v (degree < order), the factors of
    inactive points (l >= k) left out."""
    weights = []
    for j in range(order):
        poly = [jnp.ones_like(u[0])] + [jnp.zeros_like(u[0])] * (order - 1)
        for l in range(order):
            if l == j:
                continue
            active = l < k
            scale = 1.0 / jnp.where(active, u[j] - u[l], 1.0)
            times_v = [jnp.zeros_like(u[0])] + poly[:-1]
            poly = [jnp.where(active, (tv - u[l] * p) * scale, p) for tv, p in zip(times_v, poly)]
        weights.append(jnp.where(j < k, sum(c / (q + 1) for q, c in enumerate(poly)), 0.0))
    return jnp.stack(weights)


@functools.partial(jax.jit, static_argnums=(1, 5, 6, 7))
def _ipndm(score_fn, sde, x, ts, n, order, variable, sharding):
    score = Counted(score_fn)
    sigmas = jnp.exp(-sde.log_snr(ts))
    equal_step = jnp.asarray(_EQUAL_STEP[:, :order], x.dtype)

    def vec(t):
        return jnp.full(x.shape[:1], t, x.dtype)

    def eps_at(x_tilde, t):  # dx~/dsigma = eps(m x~, t)
        m, s = sde.marginal_coeffs(t)
        return batch_mul(-s, score(constrain(batch_mul(m, x_tilde), sharding), t))

    def runge_kutta(x_tilde, eps, i, h):
        """Steps 0 .. order - 3 of "ipndm_v": Heun (order 3) or Kutta's third-order method (order 4) from the
        first evaluation eps, so that their local error is O(h^order); returns (increment, evaluations)."""
        before = score.calls
        if order == 3:
            second = eps_at(x_tilde + h * eps, vec(ts[i + 1]))
            increment = 0.5 * h * (eps + second)
        else:
            middle = vec(sde.t_of_log_snr(-jnp.log(sigmas[i] + 0.5 * h)))
            second = eps_at(x_tilde + 0.5 * h * eps, middle)
            third = eps_at(x_tilde + h * (2.0 * second - eps), vec(ts[i + 1]))
            increment = h / 6.0 * (eps + 4.0 * second + third)
        return increment, jnp.int32(score.calls - before)

    def step(i, carry):
        x, history, nfe = carry  # history: eps_{i-1}, eps_{i-2}, ..., order - 1 arrays shaped like x
        t, t_next = vec(ts[i]), vec(ts[i + 1])
        x_tilde = batch_mul(1.0 / sde.marginal_coeffs(t)[0], x)
        before = score.calls
        eps = eps_at(x_tilde, t)
        nfe = nfe + (score.calls - before)
        k = jnp.minimum(i + 1, order)
        h = sigmas[i + 1] - sigmas[i]
        if variable:
            b = _variable_step((sigmas[jnp.maximum(i - jnp.arange(order), 0)] - sigmas[i]) / h, k, order)
        else:
            b = equal_step[k - 1]
        increment = h * (b[0] * eps + sum(b[j] * history[j - 1] for j in range(1, order)))
        if variable and order > 2:
            rk = functools.partial(runge_kutta, x_tilde, eps, i, h)
            increment, extra = jax.lax.cond(i < order - 2, rk, lambda: (increment, jnp.int32(0)))
            nfe = nfe + extra
        x = batch_mul(sde.marginal_coeffs(t_next)[0], x_tilde + increment)
        history = ((eps,) + history)[: order - 1]
        return constrain(x, sharding), history, nfe

    x = constrain(x, sharding)
    history = (jnp.zeros_like(x),) * (order - 1)
    x, _, nfe = jax.lax.fori_loop(0, n, step, (x, history, jnp.int32(0)))
    return x, nfe
