"""Controllable generation against exact answers: Gaussian-mixture data whose conditionals are known in
closed form (score_sde/analytic.py), sampled with the exact score under VE, VP and sub-VP SDEs.

What is exact is asserted (class-conditional samples with weight 1; inpainting and colorization of data
that factorises into measured and unmeasured parts; PiGDM on isotropic Gaussian data). What is an
approximation is measured against the exact law and printed (pytest -s), not asserted beyond sanity:
the replacement method on correlated data, DPS. benchmarks/bench_conditional.py tabulates those figures.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial
from scipy import stats

from score_sde import analytic
from score_sde.conditional import (
    DECOUPLE,
    AveragePool,
    GreyScale,
    Mask,
    classifier_guided,
    decouple,
    dps,
    pigdm,
    replacement_sampler,
)
from score_sde.conditional.operators import matrix
from score_sde.conditional.replacement import replaced_corrector, replaced_predictor
from score_sde.sampling import ode_sampler, pc_sampler
from score_sde.sde import VESDE, VPSDE, subVPSDE

# 250 steps and 1024 samples: the samplers' discretisation errors stay well inside the sampling noise (the
# largest |z| seen over all tests below is 2.7 against bounds of 4.3 to 4.7), while a wrong conditional
# moves some statistic by tens of standard errors.
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0, N=250), "vp": VPSDE(N=250), "subvp": subVPSDE(N=250)}
N_SAMPLES = 1024
PC = dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)
ODE = dict(method="heun", num_steps=60)


def z_max(n_scores: int, false_failure: float = 1e-4) -> float:
    """Bound on |z| for n_scores standardised errors, each ~N(0, 1) for exact samples: a test fails falsely
    with probability below false_failure (two-sided, Bonferroni over the scores). The samplers' own
    discretisation errors at these step counts stay well inside it (as in test_core_samplers.py)."""
    return float(stats.norm.isf(false_failure / (2 * n_scores)))


def assert_matches(mixture, sde, x, what):
    z = analytic.moment_z_scores(analytic.marginal(mixture, sde, sde.sampling_eps), np.asarray(x))
    assert np.all(np.abs(z) < z_max(len(z))), f"{what}: z-scores {np.round(z, 1)}"


# --- class-conditional sampling -----------------------------------------------------------------------------

LABELLED, CLASSES = analytic.example_labelled_mixture()  # classes 0, 0, 1


def test_exact_classifier_is_the_posterior_of_the_classes():
    """class_log_prob against Bayes' rule from the per-component densities, written out independently."""
    sde = SDES["vp"]
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
    t = jnp.linspace(0.01, 1.0, 64)
    m, s = sde.marginal_coeffs(t)
    dens = np.stack(
        [
            w * stats.multivariate_normal(mean=m_ * mu, cov=m_**2 * c + s_**2 * np.eye(2)).pdf(xi)
            for xi, m_, s_ in zip(np.asarray(x, np.float64), np.asarray(m), np.asarray(s))
            for w, mu, c in zip(np.asarray(LABELLED.weights), np.asarray(LABELLED.means), np.asarray(LABELLED.covs))
        ]
    ).reshape(64, 3)
    want = np.log(dens[:, :2].sum(1) / dens.sum(1))
    got = analytic.class_log_prob(LABELLED, CLASSES, sde, x, t, jnp.zeros(64, jnp.int32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler", ["pc", "ode"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_class_conditional_samples_match_the_exact_conditional(sde_name, sampler):
    """Guidance weight 1 with the exact classifier: the first half of the batch asks for class 0, the second
    for class 1; each half must follow that class's mixture (weights, means, covariances)."""
    sde = SDES[sde_name]
    labels = jnp.repeat(jnp.array([0, 1]), N_SAMPLES // 2)
    score_fn = classifier_guided(
        analytic.score_fn(LABELLED, sde), analytic.classifier_fn(LABELLED, CLASSES, sde), labels, weight=1.0
    )
    if sampler == "pc":
        x, _ = pc_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), **PC)
    else:  # from exact samples of p_T(x | y): the prior's mismatch with p_T is not what is tested here
        z = jnp.concatenate(
            [
                analytic.sample_t(
                    analytic.class_conditional(LABELLED, CLASSES, label),
                    sde,
                    jax.random.key(label),
                    sde.T,
                    N_SAMPLES // 2,
                )
                for label in (0, 1)
            ]
        )
        x, _ = ode_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), z=z, **ODE)
    for label, half in ((0, x[: N_SAMPLES // 2]), (1, x[N_SAMPLES // 2 :])):
        assert_matches(analytic.class_conditional(LABELLED, CLASSES, label), sde, half, f"class {label}")


# --- inpainting ----------------------------------------------------------------------------------------------


def _product(first: analytic.GaussianMixture, second: analytic.GaussianMixture) -> analytic.GaussianMixture:
    """The law of (a, b) with a, b independent: every pair of components, block-diagonal covariances."""
    weights, means, covs = [], [], []
    for wa, ma, ca in zip(*(np.asarray(v, np.float64) for v in (first.weights, first.means, first.covs))):
        for wb, mb, cb in zip(*(np.asarray(v, np.float64) for v in (second.weights, second.means, second.covs))):
            weights.append(wa * wb)
            means.append(np.concatenate([ma, mb]))
            cov = np.zeros((len(ma) + len(mb),) * 2)
            cov[: len(ma), : len(ma)], cov[len(ma) :, len(ma) :] = ca, cb
            covs.append(cov)
    return analytic.GaussianMixture.create(np.array(weights), np.array(means), np.array(covs))


# The measured coordinate: a 1-D two-component mixture, independent of the 2-D (correlated) example mixture.
KNOWN_PART = analytic.GaussianMixture.create([0.5, 0.5], [[-1.0], [1.5]], [[[0.2]], [[0.1]]])
UNKNOWN_PART = analytic.example_mixture()
FACTORISED = _product(KNOWN_PART, UNKNOWN_PART)  # x = (known, unknown_1, unknown_2)

REPLACEMENT_CASES = {
    "ve_reverse_diffusion_langevin": ("ve", PC),
    "vp_euler_maruyama_ald": ("vp", dict(predictor="euler_maruyama", corrector="ald", snr=0.16)),
    "ve_ancestral_none": ("ve", dict(predictor="ancestral_sampling", corrector="none")),
    "subvp_probability_flow": ("subvp", dict(predictor="reverse_diffusion", corrector="none", probability_flow=True)),
}


@pytest.mark.parametrize("case", list(REPLACEMENT_CASES))
def test_inpainting_of_factorised_data_is_exact(case):
    """Known coordinate returned exactly; the inpainted ones follow their exact conditional, which for
    independent parts is the marginal of the unknown part."""
    sde_name, options = REPLACEMENT_CASES[case]
    sde = SDES[sde_name]
    truth, _ = FACTORISED.sample(jax.random.key(1), N_SAMPLES)
    operator = Mask.create(np.array([[1.0, 0.0, 0.0]]))
    y = operator.A(truth)
    x, _ = replacement_sampler(jax.random.key(0), analytic.score_fn(FACTORISED, sde), sde, operator, y, **options)
    np.testing.assert_array_equal(x[:, 0], truth[:, 0])
    assert_matches(UNKNOWN_PART, sde, x[:, 1:], case)


def replacement_distance(sde, *, y1=0.2, n=N_SAMPLES, seed=0):
    """Inpaints coordinate 0 of the correlated example mixture given coordinate 1 = y1; returns the samples,
    and the 1-D 2-Wasserstein distances of their coordinate 0 to exact samples of p(x_0 | x_1 = y1) at eps,
    and between two exact sample sets (the sampling noise floor)."""
    mixture = analytic.example_mixture()
    operator = Mask.create(np.array([[0.0, 1.0]]))
    y = jnp.tile(jnp.array([[0.0, y1]]), (n, 1))
    x, _ = replacement_sampler(jax.random.key(seed), analytic.score_fn(mixture, sde), sde, operator, y, **PC)
    exact = analytic.marginal(analytic.condition(mixture, [1], [y1]), sde, sde.sampling_eps)
    a = np.sort(np.asarray(x[:, 0]))
    b = np.sort(np.asarray(exact.sample(jax.random.key(seed + 100), n)[0][:, 0]))
    c = np.sort(np.asarray(exact.sample(jax.random.key(seed + 200), n)[0][:, 0]))
    return x, np.sqrt(np.mean((a - b) ** 2)), np.sqrt(np.mean((b - c) ** 2))


def test_inpainting_of_correlated_data_is_recorded():
    """The replacement method is approximate when the parts are correlated: its distance to the exact
    conditional is printed (benchmarks/bench_conditional.py tabulates it), and only the known coordinate is
    asserted (exactly the given one)."""
    sde = SDES["vp"]
    x, w2, floor = replacement_distance(sde)
    np.testing.assert_array_equal(x[:, 1], np.full(N_SAMPLES, 0.2, np.float32))
    print(f"\nreplacement, correlated mixture, VP: W2 to the exact conditional {w2:.3f} (sampling noise {floor:.3f})")
    assert np.isfinite(w2)


# --- colorization --------------------------------------------------------------------------------------------

# One RGB pixel whose decoupled coordinates (grey, colour_1, colour_2) are independent: grey from KNOWN_PART,
# the two colour coordinates from the (correlated) example mixture. x = DECOUPLE c.
COLOUR = analytic.rotate(FACTORISED, DECOUPLE.T)


@pytest.mark.parametrize("sde_name", list(SDES))  # with the PC sampler's default pair on every SDE
def test_colorization_of_factorised_colours_is_exact(sde_name):
    sde = SDES[sde_name]
    truth, _ = COLOUR.sample(jax.random.key(1), N_SAMPLES)
    operator = GreyScale((3,))
    grey = operator.A(truth)
    x, _ = replacement_sampler(jax.random.key(0), analytic.score_fn(COLOUR, sde), sde, operator, grey, **PC)
    # The grey image is rewritten through the orthogonal colour basis: equal up to float32 round-off
    # (a few ulps of values of order 1).
    np.testing.assert_allclose(operator.A(x), grey, rtol=0, atol=2e-6)
    assert_matches(UNKNOWN_PART, sde, decouple(x)[:, 1:], f"colours, {sde_name}")


# --- linear inverse problems ---------------------------------------------------------------------------------

# Isotropic Gaussian images N(mu, d^2 I) of shape (2, 4, 1) measured by 2x average pooling with noise: the
# posterior is Gaussian (analytic.linear_gaussian_posterior), and PiGDM with data_std = d is exact for it.
DATA_STD, SIGMA_Y = 0.5, 0.1
IMAGE = (2, 4, 1)
PRIOR = analytic.GaussianMixture.create(
    [1.0], [np.linspace(-0.5, 0.5, 8)], [DATA_STD**2 * np.eye(8)]
)  # flattened images
POOL = AveragePool(IMAGE, 2)
Y = np.array([[[[0.6], [-0.4]]]], np.float32)  # one measurement (1, 1, 2, 1), shared by the batch


def _posterior_problem(sde):
    posterior = analytic.linear_gaussian_posterior(PRIOR, matrix(POOL), Y.reshape(-1), SIGMA_Y)
    y = jnp.tile(Y, (N_SAMPLES, 1, 1, 1))
    prior_image = Partial(_image_score, analytic.score_fn(PRIOR, sde))
    return posterior, y, prior_image


def _image_score(flat_score, x, t):
    return flat_score(x.reshape(x.shape[0], -1), t).reshape(x.shape)


@pytest.mark.parametrize("sampler", ["pc", "ode"])
@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_pigdm_is_exact_for_isotropic_gaussian_data(sde_name, sampler):
    sde = SDES[sde_name]
    posterior, y, prior = _posterior_problem(sde)
    score_fn = pigdm(prior, sde, POOL, y, sigma_y=SIGMA_Y, data_std=DATA_STD)
    if sampler == "pc":
        x, _ = pc_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, *IMAGE), **PC)
    else:
        x, _ = ode_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, *IMAGE), **ODE)
    assert_matches(posterior, sde, x.reshape(N_SAMPLES, -1), f"pigdm {sde_name} {sampler}")


def posterior_distances(sde, method: str, **options):
    """Samples of `method` ('pigdm' or 'dps') for the pooled Gaussian problem; returns the 2-Wasserstein
    distance of their Gaussian fit to the exact posterior at eps, that of exact posterior samples (the noise
    floor of N_SAMPLES samples), that of the prior, and the RMS residual ||A x - y|| / sqrt(M)."""
    posterior, y, prior = _posterior_problem(sde)
    guide = pigdm if method == "pigdm" else dps
    x, _ = pc_sampler(jax.random.key(0), guide(prior, sde, POOL, y, **options), sde, (N_SAMPLES, *IMAGE), **PC)
    exact = analytic.marginal(posterior, sde, sde.sampling_eps)
    mean, cov = analytic.moments(exact)

    def w2(samples):
        samples = np.asarray(samples, np.float64).reshape(N_SAMPLES, -1)
        return analytic.gaussian_w2(samples.mean(0), np.cov(samples.T), mean, cov)

    residual = float(np.sqrt(np.mean((np.asarray(POOL.A(x)) - np.asarray(y)) ** 2)))
    return dict(
        w2=w2(x),
        floor=w2(exact.sample(jax.random.key(7), N_SAMPLES)[0]),
        prior=w2(analytic.marginal(PRIOR, sde, sde.sampling_eps).sample(jax.random.key(8), N_SAMPLES)[0]),
        residual=residual,
    )


def test_dps_against_the_exact_posterior_is_recorded():
    """DPS ignores the spread of p(x_0 | x_t): its distance to the exact posterior is printed. Asserted only
    that it moves the samples toward the posterior (a sign or scale error in the guidance would not)."""
    d = posterior_distances(SDES["vp"], "dps", sigma_y=SIGMA_Y)
    print(
        f"\nDPS, Gaussian posterior, VP: W2 {d['w2']:.3f} (exact samples {d['floor']:.3f}, prior {d['prior']:.3f}); "
        f"RMS residual {d['residual']:.3f} for sigma_y {SIGMA_Y}"
    )
    assert d["w2"] < 0.5 * d["prior"]


@pytest.mark.parametrize("step", ["predictor", "corrector"])
def test_replaced_part_has_the_law_of_the_time_reached(step):
    """After a wrapped predictor step from t the measured part is a draw of p_{t - T/N}(y_t | y) (the time the
    step reached), after a corrector step at t one of p_t(y_t | y): mean m y, standard deviation s. With
    2^17 draws the standard deviation is measured to 0.4% (5 standard errors); one step of the VE SDE's
    250 changes s by 2.8%, so replacing at the start time fails."""
    sde, t, n = SDES["ve"], 0.5, 2**17
    operator = Mask.create(np.array([[1.0, 0.0]]))
    y = jnp.tile(jnp.array([[0.7, 0.0]]), (n, 1))
    score_fn = analytic.score_fn(UNKNOWN_PART, sde)
    x = sde.prior_sampling(jax.random.key(0), (n, 2))
    times = jnp.full((n,), t)
    if step == "predictor":
        wrapped, reached = replaced_predictor(PC["predictor"], operator, y), t - sde.T / sde.N
        x, x_mean = wrapped(jax.random.key(1), x, times, sde=sde, score_fn=score_fn, probability_flow=False)
    else:
        wrapped, reached = replaced_corrector(PC["corrector"], operator, y), t
        x, x_mean = wrapped(jax.random.key(1), x, times, sde=sde, score_fn=score_fn, snr=0.16)
    m, s = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), reached)))
    np.testing.assert_allclose(np.asarray(x_mean[:, 0]), m * 0.7, rtol=1e-6)
    known = np.asarray(x[:, 0], np.float64)
    assert abs(known.mean() - m * 0.7) < 5 * s / np.sqrt(n)
    assert abs(known.std() / s - 1) < 5 / np.sqrt(2 * n)


def test_signal_schedule_scales_the_guidance_term():
    """pigdm and dps with schedule 'signal' add m^2 / (m^2 + s^2) times the constant schedule's term."""
    sde, n = SDES["vp"], 64
    y = jnp.tile(Y, (n, 1, 1, 1))
    prior = Partial(_image_score, analytic.score_fn(PRIOR, sde))
    x = jax.random.normal(jax.random.key(3), (n, *IMAGE))
    t = jnp.linspace(0.01, 1.0, n)
    m, s = sde.marginal_coeffs(t)
    w = (m**2 / (m**2 + s**2))[:, None, None, None]
    score = prior(x, t)
    for guide in (pigdm, dps):
        constant = jax.jit(guide(prior, sde, POOL, y, sigma_y=SIGMA_Y))(x, t) - score
        signal = jax.jit(guide(prior, sde, POOL, y, sigma_y=SIGMA_Y, schedule="signal"))(x, t) - score
        np.testing.assert_allclose(signal, w * constant, rtol=1e-4, atol=1e-5)
