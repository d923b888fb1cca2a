"""DPM-Solver, DPM-Solver++ and UniPC against exact answers, on the exact scores of a 2-D Gaussian mixture (and of a
point mass) diffused by the VE, VP and sub-VP SDEs:

- convergence orders of the end point against analytic.probability_flow (float64), fitted over 40-320 steps;
- identities: DPM-Solver-1 = DPM-Solver++(1) = DDIM on any grid; exactness for a point-mass data law;
- the moments of SDE-DPM-Solver++(2M)'s samples;
- the end points of two published implementations: the authors' code (DPM-Solver, DPM-Solver++(3M), UniPC;
  outputs stored by tests/data/solvers/make_reference.py, float64) and diffusers (live, float32).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback
from jax.sharding import NamedSharding, PartitionSpec

from score_sde import analytic
from score_sde.sampling import (
    SAMPLERS,
    dpm_solver,
    dpm_solver_pp,
    dpm_solver_pp_sde,
    get_sampler,
    time_grid,
    unipc,
)
from score_sde.sampling.dpm_solver import dpm_solver_fast_orders, dynamic_threshold
from score_sde.score import noise_prediction
from score_sde.sde import VESDE, VPSDE, subVPSDE

from support import REPO, convergence_order

MIXTURE = analytic.example_mixture()
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE()}
EPS = 1e-3
STEPS = (40, 57, 80, 113, 160, 226, 320)
N_POINTS = 64


@dataclasses.dataclass(frozen=True)
class Case:
    """A registered sampler with options; `per_step` grid intervals per step (singlestep DPM-Solver-k: k)."""

    name: str
    options: tuple = ()
    per_step: int = 1

    def run(self, sde, x, num_steps, eps=EPS, **options):
        ts = time_grid("logsnr", sde, self.per_step * num_steps, eps)
        if self.per_step > 1:
            options["orders"] = (self.per_step,) * num_steps
        score_fn = analytic.score_fn(MIXTURE, sde)
        return get_sampler(self.name).fn(None, score_fn, sde, x, ts, **dict(self.options), **options)


@pytest.fixture(scope="module")
def flow_reference():
    """Per (SDE, eps): x_T (N_POINTS, 2) from the prior and the exact probability-flow end points (float64)."""
    cache = {}

    def get(sde_name, eps=EPS):
        if (sde_name, eps) not in cache:
            sde = SDES[sde_name]
            x_T = np.asarray(sde.prior_sampling(jax.random.key(0), (N_POINTS, 2)), np.float64)
            cache[sde_name, eps] = x_T, analytic.probability_flow(MIXTURE, sde, x_T, sde.T, eps)
        return cache[sde_name, eps]

    return get


def measured_order(case, sde_name, reference, eps=EPS, **options):
    """The fitted order of the end-point error (tests/support.convergence_order), in float64: float32 round-off
    (1e-7 relative, of values ~ 3) would floor the third-order errors, which fall to 3e-8 at 320 steps."""
    x_T, exact = reference
    with jax.enable_x64(True):
        errors = [
            np.linalg.norm(
                np.asarray(case.run(SDES[sde_name], jnp.asarray(x_T), n, eps, **options)[0]) - exact, axis=-1
            )
            for n in STEPS
        ]
    return convergence_order(STEPS, errors)


# The fitted orders lie within 0.35 of the theoretical ones on every SDE (the largest deviation seen is 0.23, from
# the next order's terms at 40-320 steps); a broken coefficient costs a whole order. UniPC is run here without its
# lower-order final steps (see test_lower_order_final_steps_are_second_order): UniPC-p (UniP-p + UniC) is of order
# p + 1, but UniPC-3's warm-up (first steps of UniPC-1 and -2) limits its end point to 3 (measured 3.45 to 4.06).
ORDERS = {
    "dpm_solver:1": (Case("dpm_solver:1"), 1),
    "dpm_solver:2": (Case("dpm_solver:2", per_step=2), 2),
    "dpm_solver:3": (Case("dpm_solver:3", per_step=3), 3),
    "dpm_solver++:2m": (Case("dpm_solver++:2m"), 2),
    "dpm_solver++:3m": (Case("dpm_solver++:3m"), 2),  # as published: second order (measured 1.83 to 2.14)
    "dpm_solver++:3m_corrected": (Case("dpm_solver++:3m_corrected"), 3),
    "unipc:2": (Case("unipc:2", (("lower_order_final", False),)), 3),
    "unipc:3": (Case("unipc:3", (("lower_order_final", False),)), None),  # at least 3
}
TOLERANCE = 0.35


@pytest.mark.parametrize("solver", list(ORDERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_convergence_order(sde_name, solver, flow_reference):
    case, expected = ORDERS[solver]
    order = measured_order(case, sde_name, flow_reference(sde_name))
    if expected is None:
        assert order > 3 - TOLERANCE, f"{solver} on {sde_name}: order {order:.2f}"
    else:
        assert abs(order - expected) < TOLERANCE, f"{solver} on {sde_name}: order {order:.2f}, expected {expected}"


def test_lower_order_final_steps_are_second_order(flow_reference):
    """A last step of first order costs its error h^2 times how fast x0 still moves at ts[-1]: the end point is then
    second order. Too small to see at eps = 1e-3, so measured at eps = 0.1 (VP), for UniPC's published final steps
    (lower orders on every grid: the last one a DDIM step that nothing corrects): 1.99 and 2.00 for UniPC-2 and -3,
    against 2.97 and 3.83 with lower_order_final=False; and for DPM-Solver-fast's budgets of 3k + 1 NFE (3, ..., 3,
    1): 2.01, against 3.10 for 3k + 2 (3, ..., 3, 2)."""
    reference = flow_reference("vp", 0.1)
    for name in ("unipc:2", "unipc:3"):
        assert abs(measured_order(Case(name), "vp", reference, 0.1) - 2) < TOLERANCE, name
    assert abs(measured_order(Case("unipc:2"), "vp", reference, 0.1, lower_order_final=False) - 3) < TOLERANCE
    assert measured_order(Case("unipc:3"), "vp", reference, 0.1, lower_order_final=False) > 3 - TOLERANCE
    sde, (x_T, exact) = SDES["vp"], reference
    for remainder, expected in ((1, 2), (2, 3)):
        budgets = [3 * k + remainder for k in STEPS[:5]]
        with jax.enable_x64(True):
            errors = [
                np.linalg.norm(np.asarray(Case("dpm_solver:3").run(sde, jnp.asarray(x_T), n, 0.1)[0]) - exact, axis=-1)
                for n in budgets
            ]
        assert abs(convergence_order(budgets, errors) - expected) < TOLERANCE, remainder


# --- identities -----------------------------------------------------------------------------------------


def _random_grid(sde, num_steps, seed):
    inner = np.sort(np.random.default_rng(seed).uniform(EPS, sde.T, num_steps - 1))[::-1]
    return np.concatenate([[sde.T], inner, [EPS]])


@pytest.mark.parametrize("sde_name", list(SDES))
def test_first_order_solvers_are_ddim(sde_name):
    """DPM-Solver-1, DPM-Solver++(1) and DDIM(eta = 0), x_next = m_next x0 + s_next eps with x0 and eps the data and
    noise predictions at x, are one update: equal on a random grid to float64 round-off (1e-12 of |x| ~ 10,
    amplified by 1 / m(T) ~ 150 in x0)."""
    sde = SDES[sde_name]
    score_fn = analytic.score_fn(MIXTURE, sde)
    ts = _random_grid(sde, 9, seed=1)

    @jax.jit
    def ddim_step(x, t, t_next):
        (m, m_next), (s, s_next) = sde.marginal_coeffs(jnp.stack([t, t_next]))
        score = score_fn(x, jnp.full(x.shape[:1], t))
        x0, eps = (x + s**2 * score) / m, -s * score
        return m_next * x0 + s_next * eps

    with jax.enable_x64(True):
        x = sde.prior_sampling(jax.random.key(2), (16, 2)).astype(jnp.float64)
        ddim = x
        for t, t_next in zip(ts[:-1], ts[1:]):
            ddim = ddim_step(ddim, t, t_next)
        first = dpm_solver(None, score_fn, sde, x, ts, order=1)[0]
        first_pp = dpm_solver_pp(None, score_fn, sde, x, ts, order=1)[0]
        registered_ddim = get_sampler("ddim").fn(jax.random.key(3), score_fn, sde, x, ts, eta=0.0)[0]
        np.testing.assert_allclose(first, ddim, rtol=0, atol=1e-10)
        np.testing.assert_allclose(first_pp, ddim, rtol=0, atol=1e-10)
        np.testing.assert_allclose(registered_ddim, ddim, rtol=0, atol=1e-10)


POINT_MASS_SOLVERS = [
    "dpm_solver:1",
    "dpm_solver:2",
    "dpm_solver:3",
    "dpm_solver++:2m",
    "dpm_solver++:3m",
    "dpm_solver++:3m_corrected",
    "unipc:2",
    "unipc:3",
]


@pytest.mark.parametrize("sde_name", list(SDES))
def test_point_mass_is_solved_exactly(sde_name):
    """For data at one point mu, score = -(x - m mu) / s^2 exactly, x0 = mu is constant and so is eps along the
    exact path x_t = m_t mu + (s_t / s_T)(x_T - m_T mu): every solver here is exact for any grid, 1 to 10 steps
    (float64: 1e-10 of values ~ 10)."""
    sde = SDES[sde_name]
    mu = np.array([1.5, -0.5])

    def score_fn(x, t):
        m, s = sde.marginal_coeffs(t)
        return -(x - m[:, None] * mu) / s[:, None] ** 2

    with jax.enable_x64(True):
        x_T = sde.prior_sampling(jax.random.key(3), (8, 2)).astype(jnp.float64)
        for num_steps, seed in ((1, 0), (4, 1), (10, 2)):
            ts = _random_grid(sde, num_steps, seed)
            (m_T, m_eps), (s_T, s_eps) = sde.marginal_coeffs(jnp.array([ts[0], ts[-1]]))
            exact = m_eps * mu + s_eps / s_T * (x_T - m_T * mu)
            for name in POINT_MASS_SOLVERS:
                x, nfe = get_sampler(name).fn(None, score_fn, sde, x_T, ts)
                np.testing.assert_allclose(x, exact, rtol=0, atol=1e-10, err_msg=f"{name}, {num_steps} steps")
                assert int(nfe) == num_steps


# --- the stochastic solver's samples ----------------------------------------------------------------------

# 12 standardised moment errors, each ~N(0, 1) for exact samples: |z| < 4.46 has a false-failure probability of
# 1e-4 per test (Bonferroni over 12). At 50 log-SNR steps the solver's own error stays inside (largest |z| seen:
# 2.6 with 4096 samples), at 10 steps it does not (|z| up to 56).
Z_MAX = 4.46


@pytest.mark.parametrize("sde_name", list(SDES))
def test_dpm_solver_pp_sde_matches_mixture(sde_name):
    sde = SDES[sde_name]
    ts = time_grid("logsnr", sde, 50, sde.sampling_eps)
    x_T = sde.prior_sampling(jax.random.key(1), (2048, 2))
    x, nfe = get_sampler("dpm_solver++:2m_sde").fn(jax.random.key(2), analytic.score_fn(MIXTURE, sde), sde, x_T, ts)
    z = analytic.moment_z_scores(analytic.marginal(MIXTURE, sde, sde.sampling_eps), x)
    assert np.all(np.abs(z) < Z_MAX), f"{sde_name}: z-scores {np.round(z, 1)}"
    assert int(nfe) == 50


# --- published implementations ----------------------------------------------------------------------------


def test_authors_code_end_points():
    """The DPM-Solver and UniPC authors' own code (tests/data/solvers/make_reference.py) on the VP SDE, float64:
    DPM-Solver-1, -2, -3 (6 steps uniform in lambda), DPM-Solver-fast at 10 and 12 NFE, DPM-Solver++(3M) at 8 steps
    (with its lower-order final steps) and 12, UniPC-2 and -3 (bh2) at 8. Equal to 1e-10 (largest difference seen:
    6e-13), while DPM-Solver++(3M) with and without its final lower orders differ by 0.34."""
    ref = np.load(REPO / "tests" / "data" / "solvers" / "reference.npz")
    sde = VPSDE()
    score_fn = analytic.score_fn(MIXTURE, sde)
    runs = {
        **{f"dpm_solver_{k}": (dpm_solver, {"orders": tuple(ref[f"dpm_solver_{k}/orders"])}) for k in (1, 2, 3)},
        **{f"dpm_solver_fast_{n}": (dpm_solver, {"order": 3}) for n in (10, 12)},  # the orders of the fast rule
        **{f"dpm_solver++_3m_{n}": (dpm_solver_pp, {"order": 3}) for n in (8, 12)},
        **{f"unipc_{k}": (unipc, {"order": k}) for k in (2, 3)},
    }
    assert dpm_solver_fast_orders(10, 3) == tuple(ref["dpm_solver_fast_10/orders"])
    assert dpm_solver_fast_orders(12, 3) == tuple(ref["dpm_solver_fast_12/orders"])
    with jax.enable_x64(True):
        x_T = jnp.asarray(ref["x_T"])
        for name, (fn, options) in runs.items():
            x, nfe = fn(None, score_fn, sde, x_T, ref[f"{name}/ts"], **options)
            np.testing.assert_allclose(x, ref[f"{name}/x"], rtol=0, atol=1e-10, err_msg=name)
            assert int(nfe) == len(ref[f"{name}/ts"]) - 1


def _diffusers_run(scheduler_cls, sde, eps_fn, x_T, ts, noises=None, **config):
    """diffusers' scheduler on our continuous VP SDE: a "training" schedule of len(ts) points whose index j is our
    grid time t_{n-j} (alphas_cumprod[j] = m(t_{n-j})^2, set directly), stepped through timesteps n, ..., 1 to the
    final "sigma_min" (index 0 = our t_n), with eps_fn(x, t), our noise prediction, as the model."""
    import torch

    n = len(ts) - 1
    ts32 = jnp.asarray(ts, jnp.float32)
    mean_coeff = np.asarray(sde.marginal_coeffs(ts32)[0], np.float64)
    scheduler = scheduler_cls(num_train_timesteps=n + 1, final_sigmas_type="sigma_min", **config)
    scheduler.alphas_cumprod = torch.tensor(mean_coeff[::-1] ** 2, dtype=torch.float32)
    scheduler.set_timesteps(n)
    assert scheduler.timesteps.tolist() == list(range(n, 0, -1))
    x = torch.tensor(np.asarray(x_T))
    for i, timestep in enumerate(scheduler.timesteps):
        eps = torch.tensor(np.asarray(eps_fn(jnp.asarray(x.numpy()), ts32[i])))
        extra = {} if noises is None else {"variance_noise": torch.tensor(noises[i])}
        x = scheduler.step(eps, timestep, x, **extra).prev_sample
    return x.numpy()


def test_diffusers_end_points():
    """diffusers' DPMSolverMultistepScheduler (DPM-Solver++(2M) midpoint and heun, (3M), (3M) with dynamic
    thresholding, SDE-DPM-Solver++(2M) midpoint and heun given the same noise) and UniPCMultistepScheduler (UniPC-2,
    -3 bh2, -3 bh1) on the VP SDE, at 8 steps (both take lower orders at the end) and 20 (neither does for
    DPM-Solver++, both do for UniPC). Data (16, 2, 1): diffusers' thresholding wants channels.

    Both run in float32 with equivalent but different arithmetic (diffusers' log-SNR from its sigma = s / m, ours
    log m - log s; x0 = (x - s eps) / m divides by m(T) = 7e-3, which multiplies rounding errors of x ~ 3 by 150):
    they agree to 1e-4 (largest difference seen: 7e-5), while the variants differ from each other by 0.1 to 0.35.
    """
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    sde = VPSDE()
    score_fn = analytic.score_fn(MIXTURE, sde)
    eps_fn = jax.jit(lambda x, t: noise_prediction(score_fn, sde, x, jnp.full(x.shape[:1], t)))
    x_T = sde.prior_sampling(jax.random.key(3), (16, 2, 1))
    key = jax.random.key(5)
    thresholds = dict(threshold_ratio=0.8, threshold_max=2.2)
    cases = [
        (dpm_solver_pp, dict(order=2), DPMSolverMultistepScheduler, dict(solver_order=2)),
        (dpm_solver_pp, dict(order=2, solver_type="heun"), DPMSolverMultistepScheduler, dict(solver_type="heun")),
        (dpm_solver_pp, dict(order=3), DPMSolverMultistepScheduler, dict(solver_order=3)),
        (
            dpm_solver_pp,
            dict(order=3, thresholding=True, **thresholds),
            DPMSolverMultistepScheduler,
            dict(solver_order=3, thresholding=True, dynamic_thresholding_ratio=0.8, sample_max_value=2.2),
        ),
        (unipc, dict(order=2), UniPCMultistepScheduler, dict(solver_order=2)),
        (unipc, dict(order=3), UniPCMultistepScheduler, dict(solver_order=3)),
        (unipc, dict(order=3, variant="bh1"), UniPCMultistepScheduler, dict(solver_order=3, solver_type="bh1")),
    ] + [
        (
            dpm_solver_pp_sde,
            dict(solver_type=t),
            DPMSolverMultistepScheduler,
            dict(algorithm_type="sde-dpmsolver++", solver_type=t),
        )
        for t in ("midpoint", "heun")
    ]
    for n in (8, 20):
        ts = time_grid("logsnr", sde, n, EPS)
        noises = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), x_T.shape)) for i in range(n)]
        for ours, options, scheduler_cls, config in cases:
            stochastic = ours is dpm_solver_pp_sde
            x, nfe = ours(key, score_fn, sde, x_T, ts, **options)
            expected = _diffusers_run(scheduler_cls, sde, eps_fn, x_T, ts, noises if stochastic else None, **config)
            np.testing.assert_allclose(x, expected, rtol=0, atol=1e-4, err_msg=f"{ours.__name__} {options}, {n} steps")
            assert int(nfe) == n


# --- thresholding, NFE, sharding, the registry, errors ---------------------------------------------------------


def test_dynamic_threshold_is_imagens():
    """s = the ratio-quantile of |x0| (linear interpolation, as torch.quantile), at least 1 and at most max_value;
    x0 clipped to [-s, s] and divided by s; in the units of the data range."""
    x0 = jnp.array([[0.5, 3.0, -2.0, 1.5], [0.1, -0.4, 0.3, 0.2]])
    got = dynamic_threshold(x0, 1.0, np.inf, (-1.0, 1.0))
    np.testing.assert_allclose(got, [[0.5 / 3, 1.0, -2 / 3, 0.5], [0.1, -0.4, 0.3, 0.2]], rtol=1e-6)
    got = dynamic_threshold(x0, 1.0, 2.0, (-1.0, 1.0))  # s capped at 2
    np.testing.assert_allclose(got[0], [0.25, 1.0, -1.0, 0.75], rtol=1e-6)
    got = dynamic_threshold(x0, 0.5, np.inf, (-1.0, 1.0))  # median of |x0| = (1.5 + 2) / 2 = 1.75
    np.testing.assert_allclose(got[0], [0.5 / 1.75, 1.0, -1.0, 1.5 / 1.75], rtol=1e-6)
    got = dynamic_threshold((x0 + 1) / 2, 1.0, np.inf, (0.0, 1.0))  # the same in [0, 1] data units
    np.testing.assert_allclose(got[0], (np.array([0.5 / 3, 1.0, -2 / 3, 0.5]) + 1) / 2, rtol=1e-6)


def _call_counter(score_fn):
    """score_fn that also counts its executions on the host (ordered io_callback)."""
    calls = [0]

    def tick(t):
        calls[0] += 1
        return np.zeros((), np.float32)

    def counted(x, t):
        return score_fn(x, t) + io_callback(tick, jax.ShapeDtypeStruct((), jnp.float32), t[0], ordered=True)

    return counted, calls


@pytest.mark.parametrize("name", ["dpm_solver:3", "dpm_solver++:3m", "dpm_solver++:2m_sde", "unipc:3"])
def test_nfe_is_counted_and_fits_the_budget(name):
    """The NFE each returns is the number of score evaluations that ran, and a budget of nfe evaluations
    (steps_for_nfe) is spent exactly: DPM-Solver-fast's orders for 10 NFE are 3, 3, 3, 1 (4 steps)."""
    sde = VPSDE()
    sampler = get_sampler(name)
    score_fn, calls = _call_counter(analytic.score_fn(MIXTURE, sde))
    ts = time_grid("logsnr", sde, sampler.steps(10), EPS)
    out = sampler.fn(jax.random.key(0), score_fn, sde, sde.prior_sampling(jax.random.key(1), (8, 2)), ts)
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert int(out[1]) == calls[0] == 10
    assert dpm_solver_fast_orders(10, 3) == (3, 3, 3, 1)


def test_sharded_equals_unsharded():
    """A batch sharded over all 8 devices (a mesh with Explicit axes) gives UniPC-3's unsharded samples and NFE
    (the other solvers' loops share its sharding constraints and history buffers)."""
    sde = VPSDE()
    score_fn = analytic.score_fn(MIXTURE, sde)
    ts = time_grid("logsnr", sde, 12, EPS)
    x_T = sde.prior_sampling(jax.random.key(0), (64, 2))
    mesh = jax.make_mesh((jax.device_count(),), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    plain = unipc(None, score_fn, sde, x_T, ts)
    with jax.set_mesh(mesh):
        sharded = unipc(None, score_fn, sde, jax.device_put(x_T, sharding), ts, sharding=sharding)
    assert sharded[0].sharding.is_equivalent_to(sharding, 2)
    np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(plain[0]), rtol=1e-6, atol=1e-6)
    assert int(sharded[1]) == int(plain[1]) == 12


def test_registry_and_bad_input():
    names = {"dpm_solver:1": 1, "dpm_solver:2": 1, "dpm_solver:3": 1, "dpm_solver++:2m": 2, "dpm_solver++:3m": 3}
    names.update({"dpm_solver++:3m_corrected": 3, "dpm_solver++:2m_sde": 2, "unipc:2": 2, "unipc:3": 3})
    for name, min_nfe in names.items():
        assert name in SAMPLERS and SAMPLERS[name].min_nfe == min_nfe, name
        assert SAMPLERS[name].steps(20) == 20, name  # one grid interval per evaluation
    with pytest.raises(ValueError, match="'unipc:3' needs an NFE budget of at least 3"):
        get_sampler("unipc:3").steps(2)
    with pytest.raises(ValueError, match=r"unknown sampler.*'dpm_solver:4'.*dpm_solver:3"):
        get_sampler("dpm_solver:4")
    sde = VPSDE()
    score_fn = analytic.score_fn(MIXTURE, sde)
    x, ts = jnp.zeros((4, 2)), time_grid("logsnr", sde, 6, EPS)
    with pytest.raises(ValueError, match=r"DPM-Solver has orders \[1, 2, 3\], got order=4"):
        dpm_solver(None, score_fn, sde, x, ts, order=4)
    with pytest.raises(ValueError, match=r"UniPC has orders \[1, 2, 3\], got order=5"):
        unipc(None, score_fn, sde, x, ts, order=5)
    with pytest.raises(ValueError, match="sum to the grid's 6 intervals"):
        dpm_solver(None, score_fn, sde, x, ts, orders=(3, 2))
    # An order is an integer the solver has: not truncated (2.5), nor parsed ("3"), in every sampler alike.
    for name in ("dpm_solver:2", "dpm_solver++:2m", "unipc:2", "ipndm", "ipndm_v"):
        for order in (2.5, "3", True):
            with pytest.raises(ValueError, match=rf"has orders \[1, 2, 3(, 4)?\], got order={order!r}"):
                get_sampler(name).fn(None, score_fn, sde, x, ts, order=order)
    with pytest.raises(ValueError, match=r"DPM-Solver \(each of its steps\) has orders \[1, 2, 3\], got order=2.5"):
        dpm_solver(None, score_fn, sde, x, ts, orders=(3, 2.5, 0.5))
    with pytest.raises(ValueError, match="corrected=True changes the third-order"):
        dpm_solver_pp(None, score_fn, sde, x, ts, order=2, corrected=True)
    with pytest.raises(ValueError, match="solver_type must be 'midpoint' or 'heun'"):
        dpm_solver_pp_sde(jax.random.key(0), score_fn, sde, x, ts, solver_type="euler")
    with pytest.raises(ValueError, match="variant must be 'bh1' or 'bh2'"):
        unipc(None, score_fn, sde, x, ts, variant="bh3")
    with pytest.raises(ValueError, match=r"threshold_ratio \(a quantile\) must lie in \(0, 1\]"):
        dpm_solver_pp(None, score_fn, sde, x, ts, thresholding=True, threshold_ratio=99.5)
    with pytest.raises(ValueError, match="data_range must be"):
        unipc(None, score_fn, sde, x, ts, thresholding=True, data_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="strictly decreasing"):
        dpm_solver_pp(None, score_fn, sde, x, ts[::-1])
    with pytest.raises(ValueError, match="x must be a floating array"):
        unipc(None, score_fn, sde, jnp.zeros((4, 2), jnp.int32), ts)
