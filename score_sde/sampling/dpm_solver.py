"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b): exponential integrators of the
probability-flow ODE in the half log-SNR lambda = log(m / s), for any SDE through its kernel m(t), s(t) only.

For x_t = m(t) x_0 + s(t) z, the probability-flow ODE has the exact solution from s to t (h = lambda_t - lambda_s)
    x_t = (m_t / m_s) x_s - m_t int_{lambda_s}^{lambda_t} e^{-lambda} eps(x_lambda) dlambda     (DPM-Solver eq. 3.4)
        = (s_t / s_s) x_s + s_t int_{lambda_s}^{lambda_t} e^{lambda} x0(x_lambda) dlambda       (DPM-Solver++ eq. 8)
with the noise prediction eps = -s score and the data prediction x0 = (x + s^2 score) / m (`score.noise_prediction`,
`score.data_prediction`); the solvers integrate the linear part exactly and a low-order expansion of eps or x0 in
lambda. Every sampler here has the signature of samplers.py and runs as one compiled loop on the device:

  dpm_solver     singlestep DPM-Solver-1, -2, -3 (noise prediction), DPM-Solver-fast's orders for an NFE budget
  dpm_solver_pp  multistep DPM-Solver++(2M), (3M) as published, and (3M) corrected (data prediction)
  dpm_solver_pp_sde  SDE-DPM-Solver++(2M), the stochastic multistep solver of the reverse SDE

The time grid ts = (t_0 > ... > t_n) costs one network evaluation per interval for all of them (n NFE).

**The published DPM-Solver++(3M) is second order.** Its update (the authors' `multistep_dpm_solver_third_update`,
also diffusers' and k-diffusion's) weights the second difference D2 = (D1_0 - D1_1) / (r0 + r1), which approximates
h^2 x0'' / 2, by the coefficient of h^2 x0'' in the exact integral, m_t (h^2 - 2h + 2 - 2 e^{-h}) / (2 h^2): half
the Taylor-consistent weight. Its local error is then m_t h^3 x0'' / 12 + O(h^4) and the end point converges at
order 2 (measured on the mixture over 40-320 log-SNR steps: 2.14 VE, 1.83 VP, 1.92 sub-VP). It stays registered
as "dpm_solver++:3m" (published FIDs were made with it); "dpm_solver++:3m_corrected" doubles that weight and also
makes the warm-up's first (DDIM) step second order, which a third-order multistep method needs: that step's local
error O(h^2) alone caps the order at 2 where x0 still moves at t_0 (VE: 2.35 with the weight corrected only). It
converges at order 3 (3.16 VE, 3.19 VP, 3.23 sub-VP). See tests/test_core_dpm_solver.py. Its error is the smaller
one only beyond about 80 steps there: at 10-40 steps the published form's is 1.3-2.5 times smaller.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, check_order, constrain, padded, padded_grid
from score_sde.sampling.samplers import register_sampler
from score_sde.score import as_pytree, data_prediction, noise_prediction
from score_sde.sde import SDE, ScoreFn

Array = jax.Array

# Multistep solvers take lower orders at their last steps (1 at the last, at most 2 at the one before) on grids of
# fewer steps than this, as the authors' code does (diffusers: below 15), for stability at very few steps.
LOWER_ORDER_FINAL_BELOW = 10


# --- shared by the exponential integrators (also unipc.py) ------------------------------------------------


def kernel(sde: SDE, ts: Array) -> tuple[Array, Array, Array]:
    """m(t), s(t) and lambda(t) = log(m / s) at every grid time, each shaped like ts."""
    mean_coeff, std = sde.marginal_coeffs(ts)
    return mean_coeff, std, sde.log_snr(ts)


def dynamic_threshold(x0: Array, ratio: float, max_value: float, data_range: tuple[float, float]) -> Array:
    """Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3) of a data prediction x0 (B, ...).

    In units where the data range is [-1, 1] (`data_range` = the (low, high) the score model was trained on, e.g.
    (0, 1) for score_sde's uncentred data): s = the `ratio` quantile of |x0| per example, clipped to
    [1, max_value]; x0 is clipped to [-s, s] and divided by s. max_value = inf is Imagen's rule; diffusers caps s
    at its `sample_max_value` (default 1: plain clipping to the data range).
    """
    low, high = data_range
    center, half = 0.5 * (low + high), 0.5 * (high - low)
    y = (x0 - center) / half
    flat = jnp.abs(y).reshape(y.shape[0], -1)
    s = jnp.clip(jnp.quantile(flat, ratio, axis=1), 1.0, max_value)
    s = s.reshape((-1,) + (1,) * (y.ndim - 1))
    return center + half * jnp.clip(y, -s, s) / s


def check_threshold(threshold_ratio: float, threshold_max: float, data_range) -> tuple[float, float, tuple]:
    low, high = (float(v) for v in data_range)
    if not 0.0 < threshold_ratio <= 1.0:
        raise ValueError(f"threshold_ratio (a quantile) must lie in (0, 1], got {threshold_ratio}")
    if not threshold_max >= 1.0:
        raise ValueError(f"threshold_max must be >= 1 (in units of the data range's half-width), got {threshold_max}")
    if not low < high:
        raise ValueError(f"data_range must be (low, high) with low < high, got {data_range}")
    return float(threshold_ratio), float(threshold_max), (low, high)


def denoiser(score_fn: ScoreFn, sde: SDE, threshold) -> Counted:
    """x0(x, t) for a scalar time t, thresholded when `threshold` = (ratio, max_value, data_range); counted."""

    def x0(x, t):
        out = data_prediction(score_fn, sde, x, jnp.full(x.shape[:1], t, x.dtype))
        return out if threshold is None else dynamic_threshold(out, *threshold)

    return Counted(x0)


def multistep_orders(num_steps: int, order: int, lower_order_final: bool) -> tuple[int, ...]:
    """Order of each step of a multistep solver: min(order, i + 1) (the warm-up: step i has only i + 1 model values),
    and on grids of fewer than LOWER_ORDER_FINAL_BELOW steps also min(., num_steps - i) when `lower_order_final`."""
    final = lower_order_final and num_steps < LOWER_ORDER_FINAL_BELOW
    return tuple(min(order, i + 1, num_steps - i if final else order) for i in range(num_steps))


def prepare(score_fn, sde: SDE, x, ts):
    """The arguments every sampler checks: x (B, ...) floating, ts a valid grid. Returns the score_fn as a pytree,
    the grid padded (`padded`, with its last time) in x's dtype, and its number of intervals n."""
    if jnp.ndim(x) < 1 or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"x must be a floating array (B, ...), got {jnp.result_type(x)} of shape {jnp.shape(x)}")
    return as_pytree(score_fn), *padded_grid(ts, sde, x)


# --- DPM-Solver: singlestep, noise prediction ---------------------------------------------------------------

# Stage points of a k-th order step in fractions of its lambda-interval h (the paper's r1 = 1/2 for DPM-Solver-2,
# r1 = 1/3, r2 = 2/3 for DPM-Solver-3), ending with the step's end point (1).
_FRACTIONS = {1: (0.0, 1.0), 2: (0.0, 0.5, 1.0), 3: (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)}


def dpm_solver_fast_orders(num_evals: int, order: int) -> tuple[int, ...]:
    """DPM-Solver-fast's orders of the steps that spend exactly `num_evals` evaluations (DPM-Solver sec. 3.4):
    order 3: K = num_evals // 3 + 1 steps, all third order but the last two (2, 1) or the last one (1 or 2) as
    num_evals % 3 is 0, 1 or 2; order 2: second-order steps and a last first-order one if num_evals is odd."""
    n = int(num_evals)
    if order == 3:
        k = n // 3 + 1
        return {0: (3,) * (k - 2) + (2, 1), 1: (3,) * (k - 1) + (1,), 2: (3,) * (k - 1) + (2,)}[n % 3]
    if order == 2:
        return (2,) * (n // 2) + (1,) * (n % 2)
    return (1,) * n


def dpm_solver(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    order: int = 3,
    orders=None,
    sharding=None,
) -> tuple[Array, Array]:
    """Singlestep DPM-Solver-`order` (1, 2 or 3; Lu et al. 2022, Algorithms 1 and 2, noise prediction) from x at
    ts[0] to ts[-1]. Deterministic (`key` unused). Returns (samples shaped like x, nfe = len(ts) - 1).

    The grid's n intervals are its n network evaluations: the steps' orders are DPM-Solver-fast's for n
    evaluations (`dpm_solver_fast_orders`, e.g. order 3 and n = 10: 3, 3, 3, 1), or `orders` (a sequence summing
    to n). A k-th order step runs from grid point j to j + k: its k - 1 inner stages sit at the paper's fractions
    of its lambda-interval, at times from `SDE.t_of_log_snr` (on the "logsnr" grid, the grid points it skips). The
    authors' code does the same on its time-uniform and quadratic grids, but there places the stages at the skipped
    grid points, and on its logSNR grid spaces the K steps uniformly instead (a grid through those K + 1 times,
    with any points between them, reproduces that). DPM-Solver-k converges at order k (DPM-Solver Theorem 3.2;
    measured 1.00-1.02, 2.02-2.05, 3.08-3.14 on VE, VP, sub-VP). DPM-Solver-fast's last first-order step (n % 3 of
    0 or 1) makes the end point second order: its error, h^2 times how fast eps still moves at ts[-1], is invisible
    at eps = 1e-3 (order 3.11 for every n % 3), measured 2.01 against 3.10 (n % 3 = 2) at eps = 0.1 on the VP SDE.

    DPM-Solver-1 is DDIM: x_t = (m_t / m_s) x_s - s_t (e^h - 1) eps_s.
    DPM-Solver-2 (r1 = 1/2): u = (m_1 / m_s) x_s - s_1 (e^{r1 h} - 1) eps_s, then
        x_t = (m_t / m_s) x_s - s_t (e^h - 1) eps_s - s_t (e^h - 1) / (2 r1) (eps(u) - eps_s).
    DPM-Solver-3 (r1 = 1/3, r2 = 2/3): u1 as u; D1 = eps(u1) - eps_s;
        u2 = (m_2 / m_s) x_s - s_2 (e^{r2 h} - 1) eps_s - s_2 r2 / r1 ((e^{r2 h} - 1) / (r2 h) - 1) D1;
        x_t = (m_t / m_s) x_s - s_t (e^h - 1) eps_s - s_t / r2 ((e^h - 1) / h - 1) (eps(u2) - eps_s).
    """
    order = check_order(order, (1, 2, 3), "DPM-Solver")
    score_fn, ts, n = prepare(score_fn, sde, x, ts)
    if orders is None:
        orders = dpm_solver_fast_orders(n, order)
    else:
        orders = tuple(check_order(k, (1, 2, 3), "DPM-Solver (each of its steps)") for k in orders)
    if sum(orders) != n:
        raise ValueError(f"DPM-Solver: orders must be 1, 2 or 3 and sum to the grid's {n} intervals, got {orders}")
    return _dpm_solver(score_fn, sde, x, ts, _stage_table(orders), n, sharding)


def _stage_table(orders: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per stage (one network evaluation each; `padded`): its step's start and end grid indices, its own fraction
    of the step and the fraction of the point it computes next, whether it opens a step, and which update it
    makes: 0 first-order (opens a step), 1 DPM-Solver-2's final, 2 DPM-Solver-3's inner or final (Taylor-like)."""
    bounds = np.cumsum((0,) + orders)
    rows = []
    for k, order in enumerate(orders):
        fractions = _FRACTIONS[order]
        for p in range(order):
            kind = 0 if p == 0 else (1 if order == 2 else 2)
            rows.append((bounds[k], bounds[k + 1], fractions[p], fractions[p + 1], p == 0, kind))
    fills = (bounds[-1], bounds[-1], 0.0, 1.0, False, 0)
    names = ("start", "end", "here", "next", "opens", "kind")
    return {name: padded(column, fill) for name, column, fill in zip(names, zip(*rows), fills)}


@functools.partial(jax.jit, static_argnums=(1, 6))
def _dpm_solver(score_fn, sde, x, ts, table, num_stages, sharding):
    dtype = x.dtype
    lam = sde.log_snr(ts)
    t_s, t_t = ts[table["start"]], ts[table["end"]]
    lam_s = lam[table["start"]]
    h = lam[table["end"]] - lam_s
    here, nxt = table["here"].astype(dtype), table["next"].astype(dtype)
    # Stage times: the grid's own times at fractions 0 and 1, t(lambda_s + r h) in between.
    t_here = jnp.where(here == 0.0, t_s, sde.t_of_log_snr(lam_s + here * h))
    t_next = jnp.where(nxt == 1.0, t_t, sde.t_of_log_snr(lam_s + nxt * h))
    m_s = sde.marginal_coeffs(t_s)[0]
    m_n, s_n = sde.marginal_coeffs(t_next)
    a = m_n / m_s
    b = -s_n * jnp.expm1(nxt * h)
    safe_here = jnp.where(here == 0.0, 1.0, here)
    c = jnp.select(
        [table["kind"] == 1, table["kind"] == 2],
        [
            -s_n * jnp.expm1(nxt * h) / (2.0 * safe_here),
            -s_n * nxt / safe_here * (jnp.expm1(nxt * h) / (nxt * h) - 1.0),
        ],
        0.0,
    )
    eps_fn = Counted(lambda u, t: noise_prediction(score_fn, sde, u, jnp.full(u.shape[:1], t, dtype)))
    opens = table["opens"]

    def stage(j, carry):
        # u: the point this stage evaluates at; x_s, eps_s: the current step's start and its noise prediction.
        u, x_s, eps_s, nfe = carry
        before = eps_fn.calls
        eps = eps_fn(u, t_here[j])
        x_s, eps_s = jnp.where(opens[j], u, x_s), jnp.where(opens[j], eps, eps_s)
        u = a[j] * x_s + b[j] * eps_s + c[j] * (eps - eps_s)
        return constrain(u, sharding), x_s, eps_s, nfe + (eps_fn.calls - before)

    x = constrain(x, sharding)
    x, _, _, nfe = jax.lax.fori_loop(0, num_stages, stage, (x, x, jnp.zeros_like(x), jnp.int32(0)))
    return x, nfe


# --- DPM-Solver++: multistep, data prediction ----------------------------------------------------------------


def dpm_solver_pp(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    order: int = 2,
    corrected: bool = False,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    thresholding: bool = False,
    threshold_ratio: float = 0.995,
    threshold_max: float = np.inf,
    data_range=(-1.0, 1.0),
    sharding=None,
) -> tuple[Array, Array]:
    """Multistep DPM-Solver++(`order`M) (Lu et al. 2022b, Algorithm 2 for 2M; 3M as in the authors' code), order
    1, 2 or 3, from x at ts[0] to ts[-1]: one data prediction x0_i per step (n NFE), reused by the next steps.
    Deterministic (`key` unused). Returns (samples shaped like x, nfe).

    Step i, from t_i to t_{i+1}, with h = lambda_{i+1} - lambda_i, r0 = h_{i-1} / h, r1 = h_{i-2} / h, phi_1 =
    e^{-h} - 1, phi_2 = phi_1 / h + 1, phi_3 = phi_2 / h - 1/2, D1_0 = (x0_i - x0_{i-1}) / r0, D1_1 =
    (x0_{i-1} - x0_{i-2}) / r1:
      1:  x_{i+1} = (s_{i+1} / s_i) x_i - m_{i+1} phi_1 x0_i                                     (= DDIM)
      2M: ... - m_{i+1} phi_1 D1_0 / 2 (solver_type "midpoint", published), + m_{i+1} phi_2 D1_0 ("heun")
      3M: ... + m_{i+1} phi_2 D1 - w m_{i+1} phi_3 D2, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
          D2 = (D1_0 - D1_1) / (r0 + r1); w = 1 as published (order 2, see the module docstring), w = 2 with
          `corrected` (order 3), which also corrects the first step with the second's evaluation, as UniC does:
          x_1 += m_1 phi_2(h_0) (x0_1 - x0_0), the trapezoidal rule of the exponential integrator (no extra NFE).
    The first steps take lower orders (step i has i + 1 model values), and with `lower_order_final` so do the last
    two on grids of fewer than LOWER_ORDER_FINAL_BELOW steps. `thresholding`: Imagen's dynamic thresholding of
    each x0 (`dynamic_threshold`, with `threshold_ratio`, `threshold_max` and the model's `data_range`).
    """
    order = check_order(order, (1, 2, 3), "DPM-Solver++ (multistep)")
    if corrected and order != 3:
        raise ValueError(f"DPM-Solver++: corrected=True changes the third-order (3M) update only, got order={order}")
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"DPM-Solver++: solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    threshold = check_threshold(threshold_ratio, threshold_max, data_range) if thresholding else None
    score_fn, ts, n = prepare(score_fn, sde, x, ts)
    orders = padded(multistep_orders(n, order, lower_order_final), 1)
    return _dpm_solver_pp(score_fn, sde, x, ts, orders, n, order, bool(corrected), solver_type, threshold, sharding)


def _pp_updates(solver_type: str, corrected: bool):
    """The DPM-Solver++ updates of orders 1, 2, 3 as functions of (x_i, [x0_i, x0_{i-1}, x0_{i-2}], coefficients)."""

    def first(x, x0, c):
        return c["ratio"] * x - c["m"] * c["phi_1"] * x0[0]

    def second(x, x0, c):
        d1_0 = (x0[0] - x0[1]) / c["r0"]
        if solver_type == "midpoint":
            return first(x, x0, c) - 0.5 * c["m"] * c["phi_1"] * d1_0
        return first(x, x0, c) + c["m"] * c["phi_2"] * d1_0

    def third(x, x0, c):
        r0, r1 = c["r0"], c["r1"]
        d1_0, d1_1 = (x0[0] - x0[1]) / r0, (x0[1] - x0[2]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)  # ~ h^2 x0'' / 2
        weight = 2.0 if corrected else 1.0
        return first(x, x0, c) + c["m"] * c["phi_2"] * d1 - weight * c["m"] * c["phi_3"] * d2

    return [first, second, third]


def multistep_coefficients(m, s, lam, i) -> dict[str, Array]:
    """Step i's scalars: s_{i+1} / s_i, m_{i+1}, h, r0, r1 (ratios to earlier steps, 1 where there is none), phis."""
    h = lam[i + 1] - lam[i]
    h_0 = jnp.where(i >= 1, lam[i] - lam[jnp.maximum(i - 1, 0)], h)
    h_1 = jnp.where(i >= 2, lam[jnp.maximum(i - 1, 0)] - lam[jnp.maximum(i - 2, 0)], h)
    phi_1 = jnp.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    return dict(
        ratio=s[i + 1] / s[i], m=m[i + 1], h=h, r0=h_0 / h, r1=h_1 / h, phi_1=phi_1, phi_2=phi_2, phi_3=phi_2 / h - 0.5
    )


def push(history: Array, x0: Array) -> Array:
    """The newest model value first: [x0, history[0], ..., history[-2]]."""
    return jnp.concatenate([x0[None], history[:-1]], axis=0)


@functools.partial(jax.jit, static_argnums=(1, 6, 7, 8, 9, 10))
def _dpm_solver_pp(score_fn, sde, x, ts, step_order, num_steps, order, corrected, solver_type, threshold, sharding):
    m, s, lam = kernel(sde, ts)
    x0_fn = denoiser(score_fn, sde, threshold)
    updates = _pp_updates(solver_type, corrected)[:order]

    def step(i, carry):
        x, history, nfe = carry
        before = x0_fn.calls
        history = push(history, x0_fn(x, ts[i]))
        if corrected:  # the first step made second order with x0_1 (see the docstring)
            h0 = lam[1] - lam[0]
            fix = m[1] * (jnp.expm1(-h0) / h0 + 1.0) * (history[0] - history[1])
            x = jnp.where(i == 1, x + fix, x)
        c = multistep_coefficients(m, s, lam, i)
        x = jax.lax.switch(step_order[i] - 1, updates, x, history, c)
        return constrain(x, sharding), history, nfe + (x0_fn.calls - before)

    x = constrain(x, sharding)
    history = jnp.stack([jnp.zeros_like(x)] * order)
    x, _, nfe = jax.lax.fori_loop(0, num_steps, step, (x, history, jnp.int32(0)))
    return x, nfe


# --- SDE-DPM-Solver++(2M): multistep, data prediction, stochastic ---------------------------------------------


def dpm_solver_pp_sde(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    thresholding: bool = False,
    threshold_ratio: float = 0.995,
    threshold_max: float = np.inf,
    data_range=(-1.0, 1.0),
    sharding=None,
) -> tuple[Array, Array]:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b; diffusers' "sde-dpmsolver++", k-diffusion's sample_dpmpp_2m_sde with
    eta = 1): the reverse SDE solved exactly in its linear part and in its noise, x0 linear in lambda, from x at
    ts[0] to ts[-1]; one data prediction per step (n NFE). Returns (samples shaped like x, nfe).

    Step i: x_{i+1} = (s_{i+1} / s_i) e^{-h} x_i + m_{i+1} (1 - e^{-2h}) x0_i + m_{i+1} c D1_0
                      + s_{i+1} sqrt(1 - e^{-2h}) z_i,
    D1_0 = (x0_i - x0_{i-1}) / r0 (none at the first step), c = (1 - e^{-2h}) / 2 for solver_type "midpoint" (the
    published form, with DPM-Solver++'s D_i = (1 + 1/(2 r0)) x0_i - 1/(2 r0) x0_{i-1}; the default of diffusers and
    k-diffusion), c = 1 - (1 - e^{-2h}) / (2h) for "heun" (their Taylor-consistent variant).
    z_i = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype). `lower_order_final`, `thresholding` and
    its options as for `dpm_solver_pp`.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"DPM-Solver++(2M) SDE: solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    threshold = check_threshold(threshold_ratio, threshold_max, data_range) if thresholding else None
    score_fn, ts, n = prepare(score_fn, sde, x, ts)
    orders = padded(multistep_orders(n, 2, lower_order_final), 1)
    return _dpm_solver_pp_sde(key, score_fn, sde, x, ts, orders, n, solver_type, threshold, sharding)


@functools.partial(jax.jit, static_argnums=(2, 7, 8, 9))
def _dpm_solver_pp_sde(key, score_fn, sde, x, ts, step_order, num_steps, solver_type, threshold, sharding):
    m, s, lam = kernel(sde, ts)
    x0_fn = denoiser(score_fn, sde, threshold)

    def step(i, carry):
        x, history, nfe = carry
        before = x0_fn.calls
        history = push(history, x0_fn(x, ts[i]))
        c = multistep_coefficients(m, s, lam, i)
        h = c["h"]
        decay = -jnp.expm1(-2.0 * h)  # 1 - e^{-2h}
        d1_0 = (history[0] - history[1]) / c["r0"]
        slope = 0.5 * decay if solver_type == "midpoint" else 1.0 - decay / (2.0 * h)
        noise = constrain(jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype), sharding)
        x_next = c["ratio"] * jnp.exp(-h) * x + c["m"] * decay * history[0] + s[i + 1] * jnp.sqrt(decay) * noise
        x_next = jnp.where(step_order[i] == 2, x_next + c["m"] * slope * d1_0, x_next)
        return constrain(x_next, sharding), history, nfe + (x0_fn.calls - before)

    x = constrain(x, sharding)
    history = jnp.stack([jnp.zeros_like(x)] * 2)
    x, _, nfe = jax.lax.fori_loop(0, num_steps, step, (x, history, jnp.int32(0)))
    return x, nfe


def register(name: str, fn, min_nfe: int) -> None:
    """Registers a sampler whose grid intervals are its network evaluations (steps_for_nfe = the identity)."""
    register_sampler(name, steps_for_nfe=lambda nfe: nfe, min_nfe=min_nfe, grid="logsnr")(fn)


for _order in (1, 2, 3):
    register(f"dpm_solver:{_order}", functools.partial(dpm_solver, order=_order), 1)
register("dpm_solver++:2m", functools.partial(dpm_solver_pp, order=2), 2)
register("dpm_solver++:3m", functools.partial(dpm_solver_pp, order=3), 3)
register("dpm_solver++:3m_corrected", functools.partial(dpm_solver_pp, order=3, corrected=True), 3)
register("dpm_solver++:2m_sde", dpm_solver_pp_sde, 2)
