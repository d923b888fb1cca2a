"""The fast samplers (DDIM, EDM, iPNDM, the adaptive SDE solver) and the sampler table, against exact answers:
convergence orders on the exact score of a Gaussian mixture, identities, exact solutions for a point-mass data
law, the mixture's moments for the stochastic ones, NFE counted as they run, and errors that name the problem.

The orders are measured in float64 (scoped `jax.enable_x64`): in float32 the round-off of the samplers' states
(~1e-7 relative, amplified by the ODE) would floor the errors of the high orders at a few hundred steps.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from test_core_samplers import _call_counter

from score_sde import analytic
from score_sde.config import load_config, with_overrides
from score_sde.sampling import (
    CORRECTORS,
    GRIDS,
    PREDICTORS,
    get_sampler,
    get_sampling_fn,
    pc_sampler,
    sample,
    time_grid,
)
from score_sde.sde import SDE, VESDE, VPSDE, subVPSDE

from support import convergence_order

MIXTURE = analytic.example_mixture()
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE()}

# --- convergence orders on the exact score ---------------------------------------------------------------

STEPS = (40, 80, 160)
# (sampler, options, grid, lowest and highest accepted order). The measured orders are the slope over 40-160
# steps of the median end-point error of 16 points, so they are pre-asymptotic: the values seen on VE / VP /
# sub-VP are in the comments, the bounds allow +-0.2 around the nominal order where the constant is clean,
# and approach from below for orders 3 and 4 (their next error terms are still visible at 40 steps).
ORDERS = [
    ("ode:euler", {}, "uniform", 0.85, 1.15),  # 0.97 / 0.97 / 0.98
    ("ode:heun", {}, "uniform", 1.8, 2.2),  # 2.06 / 1.98 / 2.00
    ("ddim", {}, "logsnr", 0.85, 1.15),  # 1.01 / 1.02 / 1.03
    ("edm:euler", {}, "karras", 0.85, 1.15),  # 1.00 / 1.00 / 1.00
    ("edm:heun", {}, "karras", 1.8, 2.2),  # 2.04 / 2.07 / 2.08
    ("ipndm", {"order": 2}, "karras", 1.8, 2.2),  # 2.01 / 2.02 / 2.02
    ("ipndm_v", {"order": 3}, "karras", 2.6, 3.3),  # 2.88 / 2.79 / 2.75
    ("ipndm_v", {"order": 4}, "karras", 3.4, 4.3),  # 3.97 / 3.66 / 3.60
    # The published iPNDM of orders 3 and 4 converges at order 2 at most (its Euler first step and its
    # equal-step coefficients; see sampling/ipndm.py): measured 1.96 / 1.94 / 1.92 and 1.98 / 1.94 / 1.93.
    ("ipndm", {"order": 3}, "karras", 1.7, 2.2),
    ("ipndm", {"order": 4}, "karras", 1.7, 2.2),
]


@pytest.fixture(scope="module", params=list(SDES))
def orders(request):
    """The measured order of each sampler of ORDERS on one SDE, from the same 16 x_T."""
    sde = SDES[request.param]
    score_fn = analytic.score_fn(MIXTURE, sde)
    with jax.enable_x64(True):
        x_t = np.asarray(sde.prior_sampling(jax.random.key(0), (16, 2)), np.float64)
        exact = analytic.probability_flow(MIXTURE, sde, x_t, sde.T, sde.sampling_eps)
        measured = {}
        for name, options, grid, *_ in ORDERS:
            errors = []
            for n in STEPS:
                ts = time_grid(grid, sde, n, sde.sampling_eps)
                x, _ = get_sampler(name).fn(jax.random.key(1), score_fn, sde, jnp.asarray(x_t), ts, **options)
                assert x.dtype == jnp.float64
                errors.append(np.linalg.norm(np.asarray(x) - exact, axis=1))
            measured[(name, tuple(options.items()))] = convergence_order(STEPS, errors)
    return request.param, measured


def test_convergence_orders(orders):
    sde_name, measured = orders
    for name, options, grid, low, high in ORDERS:
        order = measured[(name, tuple(options.items()))]
        assert low <= order <= high, f"{name} {options} on {sde_name} ({grid} grid): order {order:.2f}"


# --- identities and exact solutions ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LinearSigmaVESDE(SDE):
    """EDM's own VE SDE: x_t = x_0 + sigma(t) z with sigma(t) = sigma_max t linear in t (so d sigma^2 / dt =
    2 sigma_max^2 t); written here as a new SDE class, which every sampler takes through its kernel."""

    sigma_max: float = 10.0
    N: int = 100

    def sde(self, x, t):
        return jnp.zeros_like(x), self.sigma_max * jnp.sqrt(2.0 * t)

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), self.sigma_max * t

    def prior_sampling(self, key, shape):
        return self.sigma_max * jax.random.normal(key, shape)

    def prior_logp(self, z):
        raise NotImplementedError


def _run(name, sde, score_fn, x, ts, **options):
    return np.asarray(get_sampler(name).fn(jax.random.key(1), score_fn, sde, x, ts, **options)[0])


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_equals_edm_euler_and_ipndm_order_1(sde_name):
    """DDIM (eta = 0) is the Euler step in (x / m, sigma), as EDM's Euler and iPNDM of order 1 are: equal to
    float64 round-off (1e-12 of the states' size 3) on a non-uniform grid."""
    sde = SDES[sde_name]
    score_fn = analytic.score_fn(MIXTURE, sde)
    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(sde.prior_sampling(jax.random.key(0), (16, 2)), np.float64))
        ts = time_grid("karras", sde, 7, sde.sampling_eps)
        ddim = _run("ddim", sde, score_fn, x, ts)
        for name, options in (("edm:euler", {}), ("ipndm", {"order": 1}), ("ipndm_v", {"order": 1})):
            np.testing.assert_allclose(_run(name, sde, score_fn, x, ts, **options), ddim, rtol=0, atol=1e-12)


def test_edm_euler_on_linear_sigma_ve_equals_probability_flow_euler():
    """With sigma(t) = sigma_max t, a step in sigma is a step in t: EDM's Euler is the probability-flow Euler
    step (to float64 round-off). On the paper's VE SDE (sigma geometric in t) they differ, by O(h^2) a step."""
    sde = LinearSigmaVESDE()
    score_fn = analytic.score_fn(MIXTURE, sde)
    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(sde.prior_sampling(jax.random.key(0), (16, 2)), np.float64))
        ts = time_grid("karras", sde, 9, 1e-3)
        edm, euler = _run("edm:euler", sde, score_fn, x, ts), _run("ode:euler", sde, score_fn, x, ts)
        np.testing.assert_allclose(edm, euler, rtol=0, atol=1e-12)
        paper_ve = SDES["ve"]
        ts = time_grid("uniform", paper_ve, 9, 1e-5)
        x = x * paper_ve.sigma_max / sde.sigma_max
        score_fn = analytic.score_fn(MIXTURE, paper_ve)
        assert (
            np.abs(_run("edm:euler", paper_ve, score_fn, x, ts) - _run("ode:euler", paper_ve, score_fn, x, ts)).max()
            > 0.01
        )


@pytest.mark.parametrize("sde_name", list(SDES))
def test_point_mass_is_solved_exactly(sde_name):
    """For a point-mass data law delta(mu), score(x, t) = -(x - m mu) / s^2, the data prediction is mu at every
    (x, t), and the probability-flow ODE's solution is x(t) = m(t) mu + s(t) (x_T - m(T) mu) / s(T). Every
    sampler in (x / m, sigma) (DDIM, EDM, iPNDM) then makes no discretisation error for any number of steps:
    its end point is exact to float64 round-off (1e-10 of its size), here after 5 steps on a uniform grid."""
    sde, mu = SDES[sde_name], jnp.array([1.5, -0.5])

    def score_fn(x, t):
        m, s = sde.marginal_coeffs(t)
        return -(x - m[:, None] * mu) / s[:, None] ** 2

    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(sde.prior_sampling(jax.random.key(0), (8, 2)), np.float64))
        ts = time_grid("uniform", sde, 5, sde.sampling_eps)
        (m_t, s_t), (m_0, s_0) = (sde.marginal_coeffs(jnp.asarray([t], jnp.float64)) for t in (ts[0], ts[-1]))
        exact = np.asarray(m_0 * mu + s_0 * (x - m_t * mu) / s_t)
        for name, options in (("ddim", {}), ("edm:euler", {}), ("edm:heun", {}), ("ipndm", {}), ("ipndm_v", {})):
            np.testing.assert_allclose(_run(name, sde, score_fn, x, ts, **options), exact, rtol=1e-10, err_msg=name)


# --- distributions of the stochastic samplers -------------------------------------------------------------

N_SAMPLES = 2048
# 12 standardised moment errors of the 2-D mixture, each ~N(0, 1) for exact samples: |z| < 4.46 is a
# false-failure probability of 1e-4 per test (Bonferroni), as in test_core_samplers. At the step counts below
# the largest |z| seen is 2.8 (DDIM, eta = 1) and 3.8 (EDM churn); a wrong noise scale is off by tens.
Z_MAX = 4.46


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ddim", dict(eta=1.0, steps=200, schedule="logsnr")),
        ("edm:heun", dict(s_churn=10.0, steps=30, schedule="karras")),
    ],
    ids=["ddim_eta1", "edm_churn"],
)
def test_stochastic_samplers_match_the_mixture(sde_name, name, kwargs):
    sde = SDES[sde_name]
    x, nfe = sample(name, jax.random.key(0), analytic.score_fn(MIXTURE, sde), sde, (N_SAMPLES, 2), **kwargs)
    z = analytic.moment_z_scores(analytic.marginal(MIXTURE, sde, sde.sampling_eps), x)
    assert np.all(np.abs(z) < Z_MAX), f"{name} on {sde_name}: z-scores {np.round(z, 1)}"


@pytest.mark.parametrize("sde_name", list(SDES))
def test_adaptive_sde_matches_a_32_dimensional_mixture(sde_name):
    """The adaptive SDE solver at its default tolerances, on a 32-D mixture: its 1122 moment z-scores stay
    below Phi^-1(1 - 1e-4 / 2244) = 4.92 (seen: at most 3.6). (In 2-D it is visibly biased, |z| up to 30: a
    step's acceptance depends on its own noise, and a rejected step draws new noise; over 32 dimensions the
    RMS error norm no longer depends on the noise of any one of them. See sampling/adaptive_sde.py.)"""
    sde, d = SDES[sde_name], 32
    rng = np.random.default_rng(0)
    means = np.stack([np.full(d, 3.0 / np.sqrt(d)), np.full(d, -3.0 / np.sqrt(d))])
    mixture = analytic.GaussianMixture.create([0.4, 0.6], means, [np.diag(rng.uniform(0.1, 0.3, d)) for _ in "ab"])
    x, nfe = sample("adaptive_sde", jax.random.key(0), analytic.score_fn(mixture, sde), sde, (N_SAMPLES, d))
    z = analytic.moment_z_scores(analytic.marginal(mixture, sde, sde.sampling_eps), x)
    assert len(z) == 1122 and np.all(np.abs(z) < 4.92), f"on {sde_name}: max |z| {np.abs(z).max():.1f}"
    assert 50 < int(nfe) < 1000 and int(nfe) % 2 == 0


# --- NFE: the budget, the count, and the calls that actually ran -----------------------------------------

NFE_SDE = VPSDE(N=20)


@pytest.mark.parametrize(
    "name, options, budget, expected",
    [
        ("ddim", dict(eta=1.0), 10, 10),
        ("edm:euler", {}, 7, 7),
        ("edm:heun", dict(s_churn=5.0), 10, 10),  # 5 Heun steps (the grid ends at sigma(eps) > 0)
        ("edm:heun", dict(denoise=True), 10, 9),  # 4 Heun steps, then EDM's Euler step to sigma = 0
        ("ipndm", {}, 6, 6),
        ("ipndm_v", dict(order=4), 10, 10),  # 6 steps, 4 more for the Runge-Kutta start
        ("ipndm_v", dict(order=3), 4, 4),  # 3 steps, 1 more
        ("ode:heun", dict(denoise=True), 8, 7),  # 3 steps, 1 denoising evaluation
        ("pc", dict(corrector="langevin", n_steps=2), 12, 10),  # 4 grid points: 4 predictor + 2 x 3 correctors
    ],
)
def test_nfe_budget_and_count(name, options, budget, expected):
    """Sampler.steps turns the budget into grid intervals; the NFE the sampler reports is the number of calls
    that ran (counted on the host), and the most within the budget (``expected``, counted by hand)."""
    score_fn, calls = _call_counter(analytic.score_fn(MIXTURE, NFE_SDE))
    sampler = get_sampler(name)
    steps = sampler.steps(budget, **options)
    x, nfe = sample(name, jax.random.key(1), score_fn, NFE_SDE, (8, 2), nfe=budget, **options)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(nfe) == calls[0] == expected <= budget
    assert sampler.steps(budget + 4, **options) > steps  # a larger budget buys more steps


def test_pc_takes_predictor_and_corrector_functions():
    """pc_sampler (and the "pc" sampler) take a predictor or corrector as a function as well as by name."""
    score_fn = analytic.score_fn(MIXTURE, NFE_SDE)
    named = pc_sampler(jax.random.key(0), score_fn, NFE_SDE, (8, 2), predictor="euler_maruyama", corrector="ald")
    functions = dict(predictor=PREDICTORS["euler_maruyama"], corrector=CORRECTORS["ald"])
    given = pc_sampler(jax.random.key(0), score_fn, NFE_SDE, (8, 2), **functions)
    np.testing.assert_array_equal(named[0], given[0])
    assert int(named[1]) == int(given[1]) == 20 + 19


def test_adaptive_nfe_is_counted():
    score_fn, calls = _call_counter(analytic.score_fn(MIXTURE, NFE_SDE))
    x, nfe = sample("adaptive_sde", jax.random.key(1), score_fn, NFE_SDE, (8, 2), reltol=0.1)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(nfe) == calls[0] > 2 and np.all(np.isfinite(np.asarray(x)))


# --- sharding, the config, errors ---------------------------------------------------------------------------


def test_sharded_equals_unsharded():
    """A batch split over 8 devices (Explicit mesh) gives the same samples and NFE: the adaptive SDE solver
    (per-sample steps, a while loop over the batch), iPNDM-v (its history of evaluations) and EDM's churn
    (per-sample noise levels). The compiled
    programs differ in fusion, so float32 round-off differs (1e-6); over the adaptive solver's ~100 steps, each
    with a step size that depends on the error estimate, it grows to a few 1e-5 (relative 1e-4 allowed)."""
    sde = SDES["ve"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Explicit,))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    for name, options in (("adaptive_sde", {}), ("ipndm_v", dict(steps=8)), ("edm:heun", dict(steps=6, s_churn=5.0))):
        plain = sample(name, jax.random.key(3), score_fn, sde, (64, 2), **options)
        with jax.set_mesh(mesh):
            sharded = sample(name, jax.random.key(3), score_fn, sde, (64, 2), sharding=sharding, **options)
        assert sharded[0].sharding.is_equivalent_to(sharding, 2), name
        np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(plain[0]), rtol=1e-4, atol=1e-5, err_msg=name)
        assert int(sharded[1]) == int(plain[1])


def test_config_reaches_every_sampler():
    """config.sampling.method names any registered sampler; its options and grid are config entries that every
    config has (so --config.sampling.<key>=... overrides work), None keeping the sampler's default; and a
    config without them (saved with an older checkpoint) still samples (test_core_samplers: pc and ode)."""
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    overrides = ["sampling.method=edm:heun", "sampling.nfe=9", "sampling.schedule=karras", "sampling.s_churn=2"]
    config = load_config("configs/small/digits.py", overrides)
    x, nfe = get_sampling_fn(config, sde, (16, 2), inverse_scaler=lambda x: 2 * x)(jax.random.key(0), score_fn)
    ref, _ = sample(  # the config's noise_removal (True) is EDM's last step to sigma = 0
        "edm:heun", jax.random.key(0), score_fn, sde, (16, 2), nfe=9, schedule="karras", s_churn=2, denoise=True
    )
    np.testing.assert_array_equal(x, 2 * ref)
    assert int(nfe) == 9
    config = with_overrides(config, ["sampling.method=ddim", "sampling.steps=12", "sampling.eta=0.5"])
    x, nfe = get_sampling_fn(config, sde, (16, 2))(jax.random.key(0), score_fn)  # steps before nfe
    ref, _ = sample("ddim", jax.random.key(0), score_fn, sde, (16, 2), steps=12, schedule="karras", eta=0.5)
    np.testing.assert_array_equal(x, ref)
    assert int(nfe) == 12
    for bad, match in (
        (dict(method="edm:heun", nfe=0, steps=None), "with {'denoise': True} needs an NFE budget of at least 3"),
        (dict(method="ddim", nfe=None, steps=None), "needs config.sampling.nfe"),
        (
            dict(method="ddim", steps=4, schedule="cosine"),
            r"unknown time grid 'cosine' \(config.sampling.schedule\); known: ",
        ),
        (
            dict(method="dpm", steps=4, schedule="uniform"),
            r"unknown sampler 'dpm' \(config.sampling.method\); known: dpm_solver",
        ),
    ):
        config.sampling.update(bad)
        with pytest.raises(ValueError, match=match):
            get_sampling_fn(config, sde, (16, 2))


def test_bad_input_is_named():
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    key, x = jax.random.key(0), jnp.zeros((4, 2))
    ddim = get_sampler("ddim").fn
    with pytest.raises(ValueError, match="strictly decreasing, but t_1 = 0.5 <= t_2 = 0.5"):
        ddim(key, score_fn, sde, x, np.array([1.0, 0.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1.0\]"):
        get_sampler("edm:heun").fn(key, score_fn, sde, x, np.array([1.2, 0.5, 0.1]))
    with pytest.raises(ValueError, match=r"ipndm has orders \[1, 2, 3, 4\], got order=5"):
        sample("ipndm", key, score_fn, sde, (4, 2), steps=5, order=5)
    with pytest.raises(ValueError, match="'ipndm_v' needs an NFE budget of at least 3, got 2"):
        sample("ipndm_v", key, score_fn, sde, (4, 2), nfe=2)
    with pytest.raises(ValueError, match=r"'pc' with .*'corrector': 'langevin'.* needs an NFE budget of at least 3"):
        sample("pc", key, score_fn, sde, (4, 2), nfe=2, corrector="langevin")
    with pytest.raises(ValueError, match=r"unknown sampler 'edm:rk4'; known: ode:rk45, edm:euler, edm:heun, "):
        sample("edm:rk4", key, score_fn, sde, (4, 2), steps=5)
    with pytest.raises(ValueError, match=r"unknown time grid 'sigmoid'; known: "):
        sample("ddim", key, score_fn, sde, (4, 2), steps=5, schedule="sigmoid")
    with pytest.raises(ValueError, match=r"sampler 'ddim' has no option \['order'\]; its options: \['eta'\]"):
        sample("ddim", key, score_fn, sde, (4, 2), steps=5, order=2)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        sample("ddim", key, score_fn, sde, (4, 2), steps=5, eta=1.5)
    with pytest.raises(ValueError, match="PC sampler runs on the uniform grid from T only"):
        sample("pc", key, score_fn, sde, (4, 2), steps=5, schedule="karras")
    with pytest.raises(ValueError, match="chooses its own steps: give it tolerances"):
        sample("adaptive_sde", key, score_fn, sde, (4, 2), nfe=10)
    with pytest.raises(ValueError, match="needs a number of steps or an NFE budget"):
        sample("edm:euler", key, score_fn, sde, (4, 2))
    with pytest.raises(ValueError, match="S_churn >= 0"):
        sample("edm:euler", key, score_fn, sde, (4, 2), steps=4, s_churn=-1.0)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_each_fast_sampler_runs_on_its_published_grid_by_default(sde_name):
    """schedule="auto" (the default of `sample`, config.sampling.schedule and compare) is each sampler's
    published grid: DDIM's quadratic, EDM's and iPNDM's Karras, DPM-Solver(++)'s and UniPC's log-SNR, PC's and the
    paper's ODE solvers' uniform. At 10 NFE its end-point error (RMS against the float64 flow, 256 points) is
    within 7 times the best grid's for every fast sampler (measured on this mixture: at most 6.7, DPM-Solver-2 on
    sub-VP), while for DPM-Solver++(3M) on VP and sub-VP the uniform grid, the default before, is 11 and 16 times
    worse than its own (on the digits model 5 times, where DPM-Solver++(3M) on the uniform grid draws noise)."""
    sde = SDES[sde_name]
    expected = {"ddim": "quadratic", "edm:heun": "karras", "ipndm": "karras", "unipc:2": "logsnr", "pc": "uniform"}
    for name, grid in {**expected, "dpm_solver++:3m": "logsnr", "ode:heun": "uniform"}.items():
        assert get_sampler(name).grid == grid, name
    x_T = sde.prior_sampling(jax.random.key(0), (256, 2))
    exact = analytic.probability_flow(MIXTURE, sde, x_T, sde.T, sde.sampling_eps)
    names = [
        "ddim",
        "edm:heun",
        "ipndm",
        "dpm_solver:2",
        "dpm_solver:3",
        "dpm_solver++:2m",
        "dpm_solver++:3m",
        "unipc:3",
    ]
    for name in names:
        errors = {}
        for grid in ("auto", *GRIDS):
            x, nfe = sample(
                name, jax.random.key(1), analytic.score_fn(MIXTURE, sde), sde, (256, 2), nfe=10, schedule=grid, z=x_T
            )
            errors[grid] = float(np.sqrt(np.mean((np.asarray(x, np.float64) - exact) ** 2)))
        assert errors["auto"] == errors[get_sampler(name).grid] and int(nfe) <= 10, name
        assert errors["auto"] < 7 * min(errors.values()), (name, errors)
        if name == "dpm_solver++:3m" and sde_name != "ve":  # (on VE, uniform in t is uniform in log-SNR)
            assert errors["uniform"] > 8 * errors["auto"], errors
