"""A new SDE is one class: a VP SDE with a cosine schedule, defined here, runs through every sampler and the
likelihood unchanged, and all of them agree with the exact answers for a Gaussian mixture."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde import analytic
from score_sde.likelihood import log_likelihood
from score_sde.sampling import ode_sampler, pc_sampler
from score_sde.sde import SDE, batch_mul, get_sde, register_sde


@register_sde("cosine_vpsde")
@dataclasses.dataclass(frozen=True)
class CosineVPSDE(SDE):
    """VP SDE with m(t) = cos(theta(t)) / cos(theta(0)), theta(t) = theta_max (t + s) / (1 + s) (Nichol and
    Dhariwal's cosine schedule, stopped at theta_max < pi/2 so beta stays finite):

        beta(t) = -2 d log m / dt = 2 theta'(t) tan(theta(t)),  dx = -beta x / 2 dt + sqrt(beta) dw,
        p_t(x_t | x_0) = N(m(t) x_0, (1 - m(t)^2) I),  prior N(0, I).
    """

    s: float = 0.008
    theta_max: float = 1.56
    N: int = 500

    def _theta(self, t):
        return self.theta_max * (t + self.s) / (1 + self.s)

    def sde(self, x, t):
        beta = 2 * self.theta_max / (1 + self.s) * jnp.tan(self._theta(t))
        return -0.5 * batch_mul(beta, x), jnp.sqrt(beta)

    def marginal_coeffs(self, t):
        m = jnp.cos(self._theta(t)) / np.cos(self._theta(0.0))
        return m, jnp.sqrt(1 - m**2)

    def prior_sampling(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_logp(self, z):
        d = np.prod(z.shape[1:])
        return -0.5 * d * np.log(2 * np.pi) - 0.5 * jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)


SDE_ = CosineVPSDE()
MIXTURE = analytic.example_mixture()
SCORE_FN = analytic.score_fn(MIXTURE, SDE_)
N_SAMPLES = 2048
Z_MAX = 4.46  # as in test_core_samplers: 12 N(0,1) statistics, false-failure probability 1e-4 per test


def test_registered_sde_is_built_from_the_config():
    """`config.training.sde` names it; its fields come from config.model (N from num_scales), others keep
    their defaults; a second class under the same name is refused."""
    config = ml_collections.ConfigDict(
        {"training": {"sde": "Cosine_VPSDE"}, "model": {"num_scales": 250, "theta_max": 1.5, "beta_min": 0.1}}
    )
    assert get_sde(config) == CosineVPSDE(s=0.008, theta_max=1.5, N=250)
    with pytest.raises(ValueError, match="'cosine_vpsde' is already registered"):
        register_sde("cosine_vpsde")(CosineVPSDE)


def test_perturbation_kernel_matches_forward_simulation():
    """Euler-Maruyama of dx = -beta x / 2 dt + sqrt(beta) dw from x_0 = (1, -2), dt = 5e-4, to t = 0.5 and
    t = 0.9, 10000 paths: the sample mean and std agree with m(t) x_0 and s(t). Standard errors s / sqrt(n)
    for the mean and s / sqrt(2n) for the std. EM's bias is below one of them while beta dt << 1 (beta < 19
    up to t = 0.9; near t = 1, where beta reaches 290, EM's variance would be off by 4%)."""
    n, steps = 10000, 2000
    x0 = jnp.array([1.0, -2.0])

    @jax.jit
    def simulate(key):
        def step(i, x):
            t = jnp.full((n,), i / steps)
            drift, g = SDE_.sde(x, t)
            return (
                x
                + drift / steps
                + batch_mul(g / np.sqrt(steps), jax.random.normal(jax.random.fold_in(key, i), x.shape))
            )

        x_half = jax.lax.fori_loop(0, steps // 2, step, jnp.broadcast_to(x0, (n, 2)))
        return x_half, jax.lax.fori_loop(steps // 2, 9 * steps // 10, step, x_half)

    for t, x in zip((0.5, 0.9), simulate(jax.random.key(0))):
        m, s = (float(v[0]) for v in SDE_.marginal_coeffs(jnp.full((1,), t)))
        x = np.asarray(x)
        np.testing.assert_array_less(np.abs(x.mean(0) - m * np.asarray(x0)), 4.5 * s / np.sqrt(n))
        np.testing.assert_array_less(np.abs(x.std(0) - s), 4.5 * s / np.sqrt(2 * n))


@pytest.mark.parametrize(
    "sampler, kwargs",
    [
        (pc_sampler, dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
        (pc_sampler, dict(predictor="euler_maruyama", corrector="ald", snr=0.16)),
        (pc_sampler, dict(predictor="none", corrector="langevin", n_steps=2, snr=0.16)),
        (pc_sampler, dict(predictor="euler_maruyama", corrector="none", probability_flow=True)),
        (ode_sampler, dict(method="RK45")),
        (ode_sampler, dict(method="euler", num_steps=200)),
        (ode_sampler, dict(method="heun", num_steps=30)),
    ],
    ids=[
        "pc_rd_langevin",
        "pc_em_ald",
        "pc_corrector_only",
        "pc_probability_flow",
        "ode_rk45",
        "ode_euler",
        "ode_heun",
    ],
)
def test_every_sampler_on_the_new_sde(sampler, kwargs):
    x, nfe = sampler(jax.random.key(0), SCORE_FN, SDE_, (N_SAMPLES, 2), **kwargs)
    z = analytic.moment_z_scores(analytic.marginal(MIXTURE, SDE_, SDE_.sampling_eps), x)
    assert np.all(np.abs(z) < Z_MAX), np.round(z, 1)
    assert int(nfe) > 0


def test_ancestral_sampling_needs_a_discrete_chain():
    with pytest.raises(NotImplementedError, match="ancestral_sampling needs a VESDE or VPSDE.*CosineVPSDE"):
        pc_sampler(jax.random.key(0), SCORE_FN, SDE_, (8, 2), predictor="ancestral_sampling", corrector="none")


def test_likelihood_on_the_new_sde():
    """The ODE log-likelihood equals the exact log p_eps; solver tolerances and atol as in test_core_likelihood."""
    eps = 1e-5
    x = analytic.sample_t(MIXTURE, SDE_, jax.random.key(1), eps, 32)
    logp, z, _ = log_likelihood(jax.random.key(2), SCORE_FN, SDE_, x, divergence="exact", eps=eps, rtol=1e-6, atol=1e-6)
    # The ODE carries p_eps to the exact p_T, not quite the N(0, I) prior: put the exact p_T back in.
    ode_logp = logp - SDE_.prior_logp(z) + analytic.log_prob(MIXTURE, SDE_, z, jnp.ones(32))
    exact = analytic.log_prob(MIXTURE, SDE_, x, jnp.full((32,), eps))
    np.testing.assert_allclose(ode_logp, exact, atol=2e-3)
