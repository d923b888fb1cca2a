"""EDM's formulation (Karras et al. 2022) against exact answers: its SDE (sigma(t) = t), its preconditioning of a
network into a denoiser, and its loss, on the Gaussian mixture whose denoiser and scores are known exactly."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde import analytic, losses, sampling, wiring
from score_sde.likelihood import log_likelihood
from score_sde.preconditioning import EDMPreconditioning
from score_sde.score import get_score_fn
from score_sde.sde import EDMSDE, VESDE, VPSDE, batch_mul, subVPSDE

MIXTURE = analytic.example_mixture()
# 2000 steps for the PC sampler: its grid is uniform in t = sigma, which leaves few steps at the data's scale
# (at 500 the covariances are off by 5 standard errors).
EDM = EDMSDE(N=2000)
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE(), "edm": EDM}
PRECONDITIONING = EDMPreconditioning(sigma_data=0.5)
N_SAMPLES = 2048
Z_MAX = 4.46  # as test_core_samplers: 12 moment z-scores, a false failure below 1e-4


def exact_denoiser(x, sigma):
    """E[x_0 | x_0 + sigma z = x] of the mixture (Tweedie), x (B, 2), sigma (B,)."""
    return x + batch_mul(sigma**2, MIXTURE.score(x, jnp.ones_like(sigma), sigma))


def exact_network(preconditioning: EDMPreconditioning):
    """The F whose preconditioned denoiser is the exact one: F(c_in x, c_noise) = (D*(x) - c_skip x) / c_out, its
    noise level read back from the labels it is given."""

    def model_fn(inputs, labels):
        c_noise = jnp.log(labels) if preconditioning.log_labels else labels
        sigma = jnp.exp(4.0 * c_noise)
        c_skip, c_out, c_in, _ = preconditioning.coefficients(sigma)
        x = batch_mul(1.0 / c_in, inputs)
        return batch_mul(1.0 / c_out, exact_denoiser(x, sigma) - batch_mul(c_skip, x))

    return model_fn


# --- EDM's SDE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sde_name", list(SDES))
def test_kernel_solves_the_moment_equations_of_the_sde(sde_name):
    """For dx = a(t) x dt + g(t) dw the kernel N(m x_0, s^2 I) must satisfy m' = a m and (s^2)' = 2 a s^2 + g^2
    (Sarkka & Solin, eq. 6.2): checked exactly (autodiff, float32 round-off) at 50 times; EDM's SDE has a = 0,
    g^2 = 2t = (t^2)'. A diffusion 5% off fails by 10%."""
    sde = SDES[sde_name]
    t = jnp.linspace(sde.sampling_eps * 10, sde.T, 50)
    one = jnp.ones((50, 1))
    drift, g = sde.sde(one, t)
    a = drift[:, 0]

    def coefficients(t):
        m, s = sde.marginal_coeffs(t)
        return m, s**2

    (m, s2), (dm, ds2) = jax.jvp(coefficients, (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(dm, a * m, rtol=1e-4, atol=1e-6)
    # (the atol: round-off of the sum where its terms nearly cancel, at large t on VP and sub-VP)
    np.testing.assert_allclose(ds2, 2 * a * s2 + g**2, rtol=1e-4, atol=1e-5 * float(jnp.max(g**2)))
    if sde_name == "edm":
        np.testing.assert_array_equal(m, 1.0)
        np.testing.assert_allclose(np.sqrt(s2), t, rtol=1e-6)
        assert (EDM.T, EDM.sampling_eps) == (80.0, 0.002)
        np.testing.assert_allclose(EDM.t_of_log_snr(EDM.log_snr(t)), t, rtol=1e-6)


@pytest.mark.parametrize(
    "name, options",
    [
        ("pc", dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
        ("ode:rk45", dict(rtol=1e-5, atol=1e-5)),
        ("edm:heun", dict(steps=30, schedule="karras")),
        ("dpm_solver++:2m", dict(steps=30, schedule="logsnr")),
    ],
)
def test_samplers_on_the_edm_sde_match_the_mixture(name, options):
    """Every kind of sampler (the paper's PC on its N steps, the adaptive ODE, EDM's and an exponential
    integrator) draws the exact p_eps of the mixture under EDM's SDE with the exact score."""
    steps = None if name.startswith("ode") else options.pop("steps", EDM.N - 1)
    x, _ = sampling.sample(
        name, jax.random.key(0), analytic.score_fn(MIXTURE, EDM), EDM, (N_SAMPLES, 2), steps=steps, **options
    )
    z = analytic.moment_z_scores(analytic.marginal(MIXTURE, EDM, EDM.sampling_eps), np.asarray(x))
    assert np.all(np.abs(z) < Z_MAX), np.round(z, 1)


def test_likelihood_on_the_edm_sde():
    """The ODE log-likelihood equals the exact log p_eps (tolerances as in test_core_likelihood)."""
    x = analytic.sample_t(MIXTURE, EDM, jax.random.key(1), EDM.sampling_eps, 32)
    logp, z, _ = log_likelihood(
        jax.random.key(2), analytic.score_fn(MIXTURE, EDM), EDM, x, divergence="exact", rtol=1e-6, atol=1e-6,
        eps=EDM.sampling_eps,
    )  # fmt: skip
    ode_logp = logp - EDM.prior_logp(z) + analytic.log_prob(MIXTURE, EDM, z, jnp.full((32,), EDM.T))
    exact = analytic.log_prob(MIXTURE, EDM, x, jnp.full((32,), EDM.sampling_eps))
    np.testing.assert_allclose(ode_logp, exact, atol=2e-3)


@pytest.mark.parametrize("name", ["edm:heun", "edm:euler", "ddim", "dpm_solver++:2m", "unipc:2"])
def test_edm_sde_gives_the_ve_sdes_end_points_on_the_same_sigma_grid(name):
    """The samplers in (x / m, sigma) see an SDE only through sigma: on EDM's SDE and on the paper's VE SDE with
    the same sigma range, the same sigma grid (Karras, 80 down to 0.01) and the exact score, they end at the
    same points (float32 round-off of values up to 80). The time grids differ: sigma = t against
    sigma_min (sigma_max / sigma_min)^t."""
    ve = VESDE(sigma_min=0.002, sigma_max=80.0)
    sigmas = np.asarray(sampling.time_grid("karras", EDM, 12, 0.01))  # EDM: t = sigma
    ts_ve = np.log(sigmas / ve.sigma_min) / np.log(ve.sigma_max / ve.sigma_min)
    ts_ve[0] = 1.0
    x_T = EDM.prior_sampling(jax.random.key(3), (256, 2))
    sampler = sampling.get_sampler(name)
    a, _ = sampler.fn(jax.random.key(4), analytic.score_fn(MIXTURE, EDM), EDM, x_T, sigmas)
    b, _ = sampler.fn(jax.random.key(4), analytic.score_fn(MIXTURE, ve), ve, x_T, ts_ve)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-4)
    assert np.abs(np.asarray(a) - np.asarray(x_T)).max() > 10  # they did move


# --- the preconditioning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_labels", [False, True], ids=["positional", "fourier"])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_preconditioned_exact_denoiser_gives_the_exact_score(sde_name, log_labels):
    """With the network F whose denoiser is the exact one, the score of score.get_score_fn (x / m, sigma = s / m,
    score = (m D - x) / s^2) is the exact score of the mixture under every SDE, for both label conventions."""
    sde = SDES[sde_name]
    preconditioning = EDMPreconditioning(0.5, log_labels)
    score_fn = get_score_fn(sde, exact_network(preconditioning), continuous=True, preconditioning=preconditioning)
    t = jnp.linspace(sde.sampling_eps * 10, sde.T, 64)
    x = analytic.sample_t(MIXTURE, sde, jax.random.key(5), 0.5 * sde.T, 64) * 1.5
    want = analytic.score_fn(MIXTURE, sde)(x, t)
    np.testing.assert_allclose(score_fn(x, t), want, rtol=2e-3, atol=1e-3 * float(jnp.abs(want).max()))


def test_network_input_and_training_target_have_unit_variance_at_every_sigma():
    """EDM's design property, measured: for data of std sigma_data (here N(0, sigma_data^2 I)), the network input
    c_in (y + n) and the target (y - c_skip (y + n)) / c_out have unit variance at every sigma from 0.002 to 80.
    The target's second moment is EDM's loss of a network that outputs 0, at fixed sigma (P_std = 0): lambda(sigma)
    times || c_skip (y + n) - y ||^2 per dimension. 2^17 values: a variance to within 5 sqrt(2 / n) = 2%."""
    n = 2**16
    y = PRECONDITIONING.sigma_data * jax.random.normal(jax.random.key(6), (n, 2))
    noise = jax.random.normal(jax.random.key(7), (n, 2))
    bound = 5 * np.sqrt(2 / (2 * n))
    for sigma in (0.002, 0.05, 0.5, 2.0, 80.0):
        _, _, c_in, _ = PRECONDITIONING.coefficients(jnp.full((n,), sigma))
        inputs = batch_mul(c_in, y + sigma * noise)
        assert abs(float(jnp.var(inputs)) - 1.0) < bound, (sigma, float(jnp.var(inputs)))
        loss = losses.edm_loss(
            lambda x, labels: jnp.zeros_like(x), jax.random.key(8), y, preconditioning=PRECONDITIONING,
            P_mean=float(np.log(sigma)), P_std=0.0, reduce_mean=True,
        )  # fmt: skip
        assert abs(float(loss) - 1.0) < bound, (sigma, float(loss))


def test_edm_loss_is_minimal_at_the_exact_denoiser():
    """EDM's loss (lognormal sigma) of F* + eps g, the exact network plus a perturbation g, is L0 + 2 eps C + eps^2 Q
    per example (common random numbers): at the exact denoiser its slope C is 0 within 4.5 standard errors for
    every direction g, while Q > 0; a denoiser that is slightly wrong (that of data 10% wider) has a slope tens of
    standard errors away, so the test sees such an error."""
    n, eps = 2**15, 0.05
    y, _ = MIXTURE.sample(jax.random.key(9), n)
    keys = jax.random.split(jax.random.key(10), n)
    directions = {
        "constant": lambda x, labels: jnp.ones_like(x),
        "identity": lambda x, labels: x,
        "swap": lambda x, labels: x[:, ::-1],
        "noise-level": lambda x, labels: batch_mul(jnp.tanh(labels), x),
    }

    def slopes(network):
        def per_example(g, sign):
            model_fn = lambda x, labels: network(x, labels) + sign * eps * g(x, labels)
            one = lambda k, yi: losses.edm_loss(model_fn, k, yi[None], preconditioning=PRECONDITIONING)
            return jax.vmap(one)(keys, y)

        out = {}
        for name, g in directions.items():
            up, down = per_example(g, 1.0), per_example(g, -1.0)
            c = np.asarray(up - down, np.float64) / (4 * eps)
            q = np.asarray(up + down - 2 * per_example(g, 0.0), np.float64) / (2 * eps**2)
            out[name] = (c.mean() / (c.std() / np.sqrt(n)), q.mean())
        return out

    for name, (z, q) in slopes(exact_network(PRECONDITIONING)).items():
        assert abs(z) < 4.5 and q > 0, (name, z, q)
    wider = analytic.GaussianMixture(MIXTURE.weights, 1.1 * MIXTURE.means, 1.21 * MIXTURE.lam, MIXTURE.u)

    def wrong(inputs, labels):
        sigma = jnp.exp(4.0 * labels)
        c_skip, c_out, c_in, _ = PRECONDITIONING.coefficients(sigma)
        x = batch_mul(1.0 / c_in, inputs)
        denoised = x + batch_mul(sigma**2, wider.score(x, jnp.ones_like(sigma), sigma))
        return batch_mul(1.0 / c_out, denoised - batch_mul(c_skip, x))

    assert max(abs(z) for z, _ in slopes(wrong).values()) > 20, slopes(wrong)


# --- the formulation in configs and checkpoints -----------------------------------------------------------


def _config(**model):
    fields = dict(name="ncsnpp", formulation="edm", sigma_data=0.5, scale_by_sigma=False, embedding_type="fourier")
    fields.update(model)
    return ml_collections.ConfigDict(
        dict(model=fields, training=dict(continuous=True, sde="edmsde"), data=dict(centered=True))
    )


def test_the_formulation_is_read_and_checked():
    assert wiring.preconditioning_for(_config()) == EDMPreconditioning(0.5, log_labels=True)
    assert wiring.preconditioning_for(_config(embedding_type="positional")).log_labels is False
    assert wiring.preconditioning_for(_config(formulation="paper")) is None
    cases = [
        (_config(formulation="karras"), r"config.model.formulation='karras' is not one of \('paper', 'edm'\)"),
        (_config(scale_by_sigma=True), r"needs config.model.scale_by_sigma=False"),
        (_config(sigma_data=0.0), r"sigma_data > 0"),
    ]
    uncentred = _config()
    uncentred.data.centered = False
    discrete = _config()
    discrete.training.continuous = False
    cases += [(uncentred, r"needs config.data.centered=True"), (discrete, r"needs config.training.continuous=True")]
    for config, message in cases:
        with pytest.raises(ValueError, match=message):
            wiring.preconditioning_for(config)


def test_a_model_is_loaded_only_in_its_formulation():
    """A checkpoint's saved config records its formulation; overriding it names both. A config saved before the
    key existed was trained with the paper's."""
    with pytest.raises(ValueError, match=r"trained with the 'edm' formulation; it cannot be loaded with the 'paper'"):
        wiring.with_checked_overrides(_config(), ["model.formulation=paper"])
    old = _config()
    del old.model["formulation"]
    with pytest.raises(ValueError, match=r"trained with the 'paper' formulation; it cannot be loaded with the 'edm'"):
        wiring.with_checked_overrides(old, ["model.formulation=edm"])
    assert wiring.with_checked_overrides(_config(), ["model.sigma_data=0.6"]).model.sigma_data == 0.6


@pytest.mark.parametrize("use_karras_sigmas", [True, False], ids=["karras", "discrete"])
def test_edm_heun_equals_diffusers_heun_on_its_grids(use_karras_sigmas):
    """diffusers' HeunDiscreteScheduler (k-diffusion's sample_heun, EDM's Algorithm 1: a Heun step to every next
    sigma but the last, 0, which is Euler) with the exact denoiser of the mixture, in float64, on its own sigma
    grids (its Karras sigmas and its DDPM-derived ones, 12 steps ending at 0): edm:heun on EDM's SDE (t = sigma)
    over the same sigmas but the 0, with ``denoise`` (EDM's last step to sigma = 0), ends at the same points to
    1e-12; without ``denoise`` it ends at the last nonzero sigma, where diffusers' last-but-one step does."""
    torch = pytest.importorskip("torch")
    from diffusers import HeunDiscreteScheduler

    scheduler = HeunDiscreteScheduler(prediction_type="sample", use_karras_sigmas=use_karras_sigmas)
    scheduler.set_timesteps(12)
    sigmas = np.unique(scheduler.sigmas.numpy().astype(np.float64))[::-1]  # s_0 > ... > s_11 > 0
    assert sigmas[-1] == 0 and len(sigmas) == 13
    with jax.enable_x64(True):
        sde = EDMSDE(sigma_min=float(sigmas[-2]) / 2, sigma_max=float(sigmas[0]))
        x_T = np.asarray(jax.random.normal(jax.random.key(11), (64, 2), jnp.float64)) * sigmas[0]

        def denoiser(x, sigma):  # the exact E[x_0 | x_0 + sigma z = x]
            x, sigma = jnp.asarray(x, jnp.float64), jnp.full((len(x),), sigma, jnp.float64)
            return np.asarray(exact_denoiser(x, sigma))

        sample, last_nonzero = torch.tensor(x_T), None
        for timestep in scheduler.timesteps:
            sigma = float(scheduler.sigmas[scheduler.step_index or 0])
            if sigma == sigmas[-2] and scheduler.state_in_first_order:
                last_nonzero = sample.numpy().copy()  # the state its Heun steps reached at the last nonzero sigma
            output = torch.tensor(denoiser(sample.numpy(), sigma))
            sample = scheduler.step(output, timestep, sample).prev_sample
        heun = sampling.get_sampler("edm:heun").fn
        score_fn = analytic.score_fn(MIXTURE, sde)
        ours, nfe = heun(None, score_fn, sde, jnp.asarray(x_T), sigmas[:-1], denoise=True)
        np.testing.assert_allclose(np.asarray(ours), sample.numpy(), rtol=0, atol=1e-12)
        assert int(nfe) == 2 * 11 + 1
        ours, _ = heun(None, score_fn, sde, jnp.asarray(x_T), sigmas[:-1])
        np.testing.assert_allclose(np.asarray(ours), last_nonzero, rtol=0, atol=1e-12)
