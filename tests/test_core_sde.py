"""SDEs: perturbation kernels against simulation, the discrete SMLD and DDPM chains, the reverse SDE."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from score_sde.sde import VESDE, VPSDE, batch_mul, get_sde, subVPSDE

SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE()}


@pytest.mark.parametrize("sde_name", list(SDES))
def test_perturbation_kernel_matches_forward_simulation(sde_name):
    """Euler-Maruyama of the forward SDE, 2000 steps, 10000 paths from x_0 = (1, -2): at t = 0.25, 0.5 and 1
    the sample mean and std equal marginal_prob's m(t) x_0 and s(t) within 4.5 standard errors (s / sqrt(n)
    for the mean, s / sqrt(2n) for the std). EM's O(dt) bias is below one standard error here.

    The VE kernel N(x_0, sigma(t)^2) is the paper's: its paths start at x_0 + sigma_min z (data already
    perturbed by the smallest noise level).
    """
    sde, n, steps = SDES[sde_name], 10000, 2000
    x0 = jnp.array([1.0, -2.0])
    checkpoints = (500, 1000, 2000)

    @jax.jit
    def simulate(key):
        start_key, key = jax.random.split(key)
        start = jnp.broadcast_to(x0, (n, 2))
        if isinstance(sde, VESDE):
            start = start + sde.sigma_min * jax.random.normal(start_key, (n, 2))

        def step(i, x):
            drift, g = sde.sde(x, jnp.full((n,), i / steps))
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape)
            return x + drift / steps + batch_mul(g / np.sqrt(steps), noise)

        out, x, prev = [], start, 0
        for c in checkpoints:
            x = jax.lax.fori_loop(prev, c, step, x)
            out.append(x)
            prev = c
        return out

    for c, x in zip(checkpoints, simulate(jax.random.key(0))):
        t = c / steps
        mean, std = sde.marginal_prob(x0[None], jnp.full((1,), t))
        x, std = np.asarray(x), float(std[0])
        np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(mean[0])), 4.5 * std / np.sqrt(n))
        np.testing.assert_array_less(np.abs(x.std(0) - std), 4.5 * std / np.sqrt(2 * n))


def test_ddpm_chain():
    """VPSDE.discretize is DDPM's x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z: run forward from x_0 its
    mean and variance are sqrt(abar_i) x_0 and 1 - abar_i (the tables), and close to the continuous VP
    kernel at t = (i + 1) / N (the chain is its discretisation with dt = 1/N)."""
    sde = VPSDE(N=1000)
    # The samplers' time grid maps to chain indices N-1, ..., 0 (the official truncation).
    grid = jnp.linspace(sde.T, 1e-3, sde.N)
    np.testing.assert_array_equal(sde._timestep(grid), np.arange(sde.N)[::-1])
    f, g = sde.discretize(jnp.ones((sde.N, 1)), grid[::-1])
    coeff = 1 + np.asarray(f[:, 0], np.float64)  # f = (sqrt(1 - beta) - 1) x
    mean, var, means, variances = 1.0, 0.0, [], []
    for c, gi in zip(coeff, np.asarray(g, np.float64)):
        mean, var = c * mean, c**2 * var + gi**2
        means.append(mean), variances.append(var)
    np.testing.assert_allclose(means, sde.sqrt_alphas_cumprod, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(variances), sde.sqrt_1m_alphas_cumprod, rtol=1e-5)
    m, s = sde.marginal_coeffs(jnp.arange(1, sde.N + 1) / sde.N)
    np.testing.assert_allclose(means, m, atol=2e-3)
    np.testing.assert_allclose(np.sqrt(variances), s, atol=2e-3)


def test_smld_chain():
    """VESDE.discretize is SMLD's: the noise added up to level i has variance sigma_i^2 (sigma_{-1} = 0)."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=100)
    grid = jnp.linspace(sde.T, 1e-5, sde.N)[::-1]  # increasing: indices 0 .. N-1
    f, g = sde.discretize(jnp.ones((sde.N, 3)), grid)
    assert np.all(np.asarray(f) == 0)
    np.testing.assert_allclose(np.sqrt(np.cumsum(np.asarray(g, np.float64) ** 2)), sde.discrete_sigmas, rtol=1e-5)
    np.testing.assert_allclose(sde.discrete_sigmas, np.geomspace(0.01, 50.0, 100), rtol=1e-6)


def test_reverse_sde_and_probability_flow():
    """Reverse drift f - g^2 score, probability flow f - g^2 score / 2 with zero diffusion, and the same for
    the discretised chain: checked on a linear score -x / 2."""
    sde = SDES["vp"]
    x = jax.random.normal(jax.random.key(0), (5, 3))
    t = jnp.linspace(0.1, 0.9, 5)
    score_fn = lambda x, t: -0.5 * x
    f, g = sde.sde(x, t)
    beta = 0.1 + t * 19.9
    np.testing.assert_allclose(f, -0.5 * beta[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(g, np.sqrt(beta), rtol=1e-6)
    for pf, w in ((False, 1.0), (True, 0.5)):
        rsde = sde.reverse(score_fn, probability_flow=pf)
        drift, diffusion = rsde.sde(x, t)
        np.testing.assert_allclose(drift, f - w * g[:, None] ** 2 * score_fn(x, t), rtol=1e-6)
        np.testing.assert_allclose(diffusion, 0 * g if pf else g)
        fd, gd = sde.discretize(x, t)
        rf, rg = rsde.discretize(x, t)
        np.testing.assert_allclose(rf, fd - w * gd[:, None] ** 2 * score_fn(x, t), rtol=1e-6)
        np.testing.assert_allclose(rg, 0 * gd if pf else gd)
    assert rsde.N == sde.N and rsde.T == sde.T


@pytest.mark.parametrize("sde_name", list(SDES))
def test_prior(sde_name):
    sde = SDES[sde_name]
    sigma = 10.0 if sde_name == "ve" else 1.0
    z = sde.prior_sampling(jax.random.key(0), (4, 3, 2))
    ref = scipy.stats.norm(0, sigma).logpdf(np.asarray(z, np.float64)).reshape(4, -1).sum(-1)
    np.testing.assert_allclose(sde.prior_logp(z), ref, rtol=1e-5)
    big = np.asarray(sde.prior_sampling(jax.random.key(1), (20000,)))
    assert abs(big.std() - sigma) < 4.5 * sigma / np.sqrt(2 * 20000)


def test_sdes_are_immutable_static_values():
    sde = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sde.N = 10
    assert sde == VPSDE() and hash(sde) == hash(VPSDE())
    assert jax.tree.leaves(sde) == []
    traces = []

    @jax.jit
    def f(sde, t):
        traces.append(sde)
        return sde.marginal_coeffs(t)[1]

    f(sde, jnp.ones(2)), f(VPSDE(), jnp.ones(2)), f(dataclasses.replace(sde, N=10), jnp.ones(2))
    assert len(traces) == 2  # equal SDEs share one compilation, a different one retraces


def _config(**kwargs):
    config = ml_collections.ConfigDict()
    config.training = ml_collections.ConfigDict({"sde": kwargs.pop("sde")})
    config.model = ml_collections.ConfigDict(
        dict(sigma_min=0.01, sigma_max=50.0, beta_min=0.1, beta_max=20.0, num_scales=1000) | kwargs
    )
    return config


def test_get_sde_from_config():
    assert get_sde(_config(sde="vesde", sigma_max=348.0, num_scales=2000)) == VESDE(0.01, 348.0, 2000)
    assert get_sde(_config(sde="VPSDE")) == VPSDE(0.1, 20.0, 1000)
    assert get_sde(_config(sde="subvpsde", num_scales=500)) == subVPSDE(0.1, 20.0, 500)
    assert VESDE().sampling_eps == 1e-5 and VPSDE().sampling_eps == subVPSDE().sampling_eps == 1e-3
    with pytest.raises(ValueError, match=r"unknown SDE 'ddpm' \(config.training.sde\); known: .*subvpsde"):
        get_sde(_config(sde="ddpm"))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        get_sde(_config(sde="vesde", sigma_min=1.0, sigma_max=0.5))
    with pytest.raises(ValueError, match="N >= 2"):
        get_sde(_config(sde="vpsde", num_scales=1))
