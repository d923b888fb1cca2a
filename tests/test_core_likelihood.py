"""The probability-flow likelihood against exact log-densities of a Gaussian mixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic
from score_sde.likelihood import (
    bpd_offset,
    exact_divergence,
    get_likelihood_fn,
    hutchinson_divergence,
    log_likelihood,
    uniform_dequantize,
)
from score_sde.sde import VESDE, VPSDE, subVPSDE

MIXTURE = analytic.example_mixture()
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE()}
EPS = 1e-5
B = 32
# The solver runs at rtol = atol = 1e-6 (TOL). Its error control is on the RMS over the whole state, 3B
# values of (x, log p), so one example's local error can reach sqrt(3B) TOL (1 + |y|) ~ 1e-5 * 30 = 3e-4 per
# step; only the few steps near t = eps, where the score is steep, come near that, which bounds the error in
# log p by ~2e-3 nats. Float32 round-off in the accumulated divergence is ~1e-6 of int |div| dt < 100.
# (Observed: below 1e-4.)
TOL = dict(rtol=1e-6, atol=1e-6)
LOGP_ATOL = 2e-3


def _ode_logp(logp, z, sde):
    """The ODE carries p_eps to the exact p_T, which is close to but not exactly the prior: log p_eps(x) =
    log p_T(z) + int div, so swap the prior's log-density for the exact p_T's."""
    return logp - sde.prior_logp(z) + analytic.log_prob(MIXTURE, sde, z, jnp.full((z.shape[0],), sde.T))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ode_log_likelihood_equals_exact_log_density(sde_name):
    sde = SDES[sde_name]
    x = analytic.sample_t(MIXTURE, sde, jax.random.key(1), EPS, B)
    logp, z, nfe = log_likelihood(
        jax.random.key(2), analytic.score_fn(MIXTURE, sde), sde, x, divergence="exact", eps=EPS, **TOL
    )
    exact = analytic.log_prob(MIXTURE, sde, x, jnp.full((B,), EPS))
    np.testing.assert_allclose(_ode_logp(logp, z, sde), exact, atol=LOGP_ATOL)
    # z is where the flow takes x: the score at z is that of p_T, nearly the prior's -z (unit scale for VP).
    assert z.shape == x.shape and int(nfe) > 0


def test_hutchinson_divergence_is_unbiased():
    """At 8 points and 3 times, for the probability-flow drift f:
    - Rademacher: the mean of v^T J v over all 2^D = 4 sign vectors v is exactly tr J (E[v v^T] = I), so
      it equals exact_divergence to float32 round-off;
    - Gaussian: the mean over M = 8192 probes is within 4.5 standard errors (sample std / sqrt(M))."""
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    x = analytic.sample_t(MIXTURE, sde, jax.random.key(3), 0.1, 8)
    signs = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])[:, None, :]
    gaussian = jax.random.normal(jax.random.key(4), (8192,) + x.shape)

    @jax.jit
    def estimates(score_fn, t):
        rsde = sde.reverse(score_fn, probability_flow=True)
        f = lambda y: rsde.sde(y, jnp.full((y.shape[0],), t))[0]
        fx, exact = exact_divergence(f, x)
        probe = lambda v: hutchinson_divergence(f, x, jnp.broadcast_to(v, x.shape))
        return fx, exact, jax.vmap(probe)(signs), jax.vmap(probe)(gaussian)[1]

    for t in (0.01, 0.1, 0.5):
        fx, exact, (fxs, rademacher), gauss = estimates(score_fn, t)
        np.testing.assert_allclose(fxs[0], fx, rtol=1e-6)
        np.testing.assert_allclose(rademacher.mean(0), exact, rtol=1e-5, atol=1e-5)
        se = np.asarray(gauss.std(0)) / np.sqrt(gauss.shape[0])
        np.testing.assert_array_less(np.abs(np.asarray(gauss.mean(0) - exact)), 4.5 * se)


def test_hutchinson_log_likelihood_is_unbiased():
    """8 points, each repeated 32 times with its own Rademacher probe: the mean over the repeats of the
    Hutchinson ODE log-likelihood equals the exact log-density within 4.5 standard errors + LOGP_ATOL."""
    sde, reps = SDES["vp"], 32
    x = analytic.sample_t(MIXTURE, sde, jax.random.key(5), EPS, 8)
    logp, z, _ = log_likelihood(
        jax.random.key(6),
        analytic.score_fn(MIXTURE, sde),
        sde,
        jnp.tile(x, (reps, 1)),
        divergence="rademacher",
        eps=EPS,
        **TOL,
    )
    est = np.asarray(_ode_logp(logp, z, sde)).reshape(reps, 8)
    exact = np.asarray(analytic.log_prob(MIXTURE, sde, x, jnp.full((8,), EPS)))
    np.testing.assert_array_less(np.abs(est.mean(0) - exact), 4.5 * est.std(0) / np.sqrt(reps) + LOGP_ATOL)
    assert est.std(0).min() > 0.01  # the probes really differ between repeats


def test_bpd_offset():
    assert bpd_offset(lambda x: x) == 8.0  # data in [0, 1]
    assert bpd_offset(lambda x: (x + 1.0) / 2.0) == 7.0  # data in [-1, 1]
    assert bpd_offset(lambda x: x + 0.5) == 8.0  # [-1/2, 1/2]: the PyTorch port's 7 - inverse_scaler(-1) = 7.5
    with pytest.raises(ValueError, match="affine"):
        bpd_offset(lambda x: x**2)


def test_bits_per_dim_same_for_both_data_scalings():
    """The same images scaled to [0, 1] (mixture A) and to [-1, 1] (mixture B, A's image under x = 2y - 1):
    each model's bits/dim is -log2 p(x) / D plus its offset (8 and 7), and the two agree because
    p_B(2y - 1) = p_A(y) / 2^D. A wrong offset is off by a whole bit.

    Both ODE likelihoods are within LOGP_ATOL nats of exact, LOGP_ATOL / (D ln 2) bits/dim. The exact
    bits/dim of A and B differ only by their p_eps: VP noise of variance ~1e-6 at eps (in B, 1/4 of that in
    A's units) changes A's component variances (>= 0.0015) by a relative 7e-4 at most, which moves log p by
    1/2 |r^2 - D| 7e-4 < 5e-3 nats out to Mahalanobis radius r = 4.
    """
    sde, a, b, d = SDES["vp"], 0.1, 0.5, 2
    covs = np.asarray(MIXTURE.covs)
    mix_a = analytic.GaussianMixture.create(MIXTURE.weights, a * np.asarray(MIXTURE.means) + b, a**2 * covs)
    mix_b = analytic.GaussianMixture.create(
        MIXTURE.weights, 2 * (a * np.asarray(MIXTURE.means) + b) - 1, 4 * a**2 * covs
    )
    y = mix_a.sample(jax.random.key(7), B)[0]
    assert 0 < float(y.min()) and float(y.max()) < 1
    tol = LOGP_ATOL / (d * np.log(2))
    exact_bpd = []
    for mix, x, inverse_scaler, offset in ((mix_a, y, lambda v: v, 8), (mix_b, 2 * y - 1, lambda v: (v + 1) / 2, 7)):
        likelihood_fn = get_likelihood_fn(sde, inverse_scaler, hutchinson_type="exact", eps=EPS, **TOL)
        bpd, z, _ = likelihood_fn(jax.random.key(8), analytic.score_fn(mix, sde), x)
        # Swap the prior for the exact p_T, as _ode_logp does, in bits/dim.
        prior_swap = (sde.prior_logp(z) - analytic.log_prob(mix, sde, z, jnp.ones((B,)))) / (d * np.log(2))
        exact = -analytic.log_prob(mix, sde, x, jnp.full((B,), EPS)) / (d * np.log(2)) + offset
        np.testing.assert_allclose(bpd + prior_swap, exact, atol=tol)
        exact_bpd.append(exact)
    np.testing.assert_allclose(exact_bpd[0], exact_bpd[1], atol=5e-3 / (d * np.log(2)))


def test_uniform_dequantize():
    k = jnp.tile(jnp.arange(256, dtype=jnp.uint8), 64)
    y = np.asarray(uniform_dequantize(jax.random.key(0), k))
    k = np.asarray(k, np.float64)
    assert np.all(y >= k / 256) and np.all(y < (k + 1) / 256)
    # u = 256 y - k is U[0, 1): mean 1/2 with standard error sqrt(1/12 / n).
    assert abs((256 * y - k).mean() - 0.5) < 4.5 * np.sqrt(1 / 12 / len(k))


def test_bad_arguments():
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="unknown divergence 'hutch'"):
        log_likelihood(jax.random.key(0), score_fn, sde, x, divergence="hutch")
    with pytest.raises(ValueError, match=r"eps .* must lie in \(0, T=1.0\), got 0.0"):
        log_likelihood(jax.random.key(0), score_fn, sde, x, eps=0.0)
    with pytest.raises(ValueError, match="x must be"):
        log_likelihood(jax.random.key(0), score_fn, sde, jnp.zeros((4,)))
    with pytest.raises(ValueError, match="unknown hutchinson_type"):
        get_likelihood_fn(sde, hutchinson_type="bernoulli")
