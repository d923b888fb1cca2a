"""Network -> score_fn wrappers: each parameterisation of the paper, checked by inverting it exactly.

For each one, a stand-in "network" outputs what a perfectly trained network of that parameterisation would
(computed from the mixture's exact score with the labels it receives); the wrapper must then return the
exact score, and the labels must be those of the official code.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic
from score_sde.score import get_model_fn, get_score_fn
from score_sde.sde import SDE, VESDE, VPSDE, subVPSDE

MIXTURE = analytic.example_mixture()
X = MIXTURE.sample(jax.random.key(0), 16)[0]


def _check(sde, model_fn, t, continuous, expected_score_t=None):
    seen = []

    def recording(x, labels):
        seen.append(labels)
        return model_fn(x, labels)

    score = get_score_fn(sde, recording, continuous=continuous)(X, t)
    exact = MIXTURE.score(X, *sde.marginal_coeffs(t if expected_score_t is None else expected_score_t))
    np.testing.assert_allclose(score, exact, rtol=1e-4, atol=1e-4)
    return seen[0]


def test_ve_continuous_labels_are_sigma():
    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    t = jnp.linspace(1e-5, 1.0, 16)
    labels = _check(sde, lambda x, sigma: MIXTURE.score(x, jnp.ones_like(sigma), sigma), t, True)
    np.testing.assert_allclose(labels, 0.01 * 1000.0**t, rtol=1e-5)


def test_ve_discrete_labels_index_sigmas_from_the_largest():
    sde = VESDE(sigma_min=0.01, sigma_max=10.0, N=16)
    t = jnp.linspace(1.0, 1e-5, 16)  # the samplers' grid
    sigmas = sde.discrete_sigmas[::-1]
    model_fn = lambda x, i: MIXTURE.score(x, jnp.ones(i.shape), sigmas[i])
    # At grid time t_i the network sees noise level index i, i.e. sigma_{N-1-i} of the increasing table.
    labels = _check(sde, model_fn, t, False, expected_score_t=jnp.log(sigmas / 0.01) / np.log(1000.0))
    assert labels.dtype == jnp.int32
    np.testing.assert_array_equal(labels, np.arange(16))


@pytest.mark.parametrize(
    "sde, continuous",
    [(VPSDE(), True), (subVPSDE(), True), (subVPSDE(), False)],
    ids=["vp", "subvp", "subvp_flag_false"],
)
def test_vp_and_subvp_continuous_labels_are_999_t(sde, continuous):
    t = jnp.linspace(1e-3, 1.0, 16)

    def model_fn(x, labels):  # predicts the noise: -std * score, conditioned on 999 t
        m, s = sde.marginal_coeffs(labels / 999)
        return -s[:, None] * MIXTURE.score(x, m, s)

    # The official code treats sub-VP networks as continuous whatever the flag says.
    labels = _check(sde, model_fn, t, continuous)
    np.testing.assert_allclose(labels, 999 * t, rtol=1e-6)


def test_vp_discrete_labels_are_the_ddpm_step():
    sde = VPSDE(N=1000)
    t = jnp.linspace(1.0, 1e-3, 16)
    sqrt_1m = sde.sqrt_1m_alphas_cumprod

    def model_fn(x, labels):  # DDPM's eps-network at step int(labels): -sqrt(1 - abar) * score of that step
        i = labels.astype(jnp.int32)
        return -sqrt_1m[i][:, None] * MIXTURE.score(x, sde.sqrt_alphas_cumprod[i], sqrt_1m[i])

    seen = []
    score_fn = get_score_fn(sde, lambda x, l: (seen.append(l), model_fn(x, l))[1], continuous=False)
    i = (t * 999).astype(jnp.int32)
    np.testing.assert_allclose(
        score_fn(X, t), MIXTURE.score(X, sde.sqrt_alphas_cumprod[i], sqrt_1m[i]), rtol=1e-4, atol=1e-4
    )
    # Float labels t (N - 1), as the official code passes them (the DDPM net embeds them sinusoidally).
    assert seen[0].dtype == jnp.float32
    np.testing.assert_allclose(seen[0], t * 999, rtol=1e-6)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = nn.Dense(8)(jnp.concatenate([x, labels[:, None]], axis=-1))
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(h))
        return nn.Dense(x.shape[-1])(h)


def test_model_fn_from_a_flax_module():
    net = _Net()
    labels = jnp.linspace(0.0, 1.0, 16)
    variables = net.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, X, labels)
    np.testing.assert_allclose(get_model_fn(net, variables)(X, labels), net.apply(variables, X, labels))
    key = jax.random.key(3)
    train_fn = get_model_fn(net, variables, train=True, dropout_key=key)
    np.testing.assert_allclose(train_fn(X, labels), net.apply(variables, X, labels, train=True, rngs={"dropout": key}))
    assert not np.allclose(train_fn(X, labels), get_model_fn(net, variables)(X, labels))  # dropout is on
    with pytest.raises(ValueError, match="dropout_key"):
        get_model_fn(net, variables, train=True)

    # score_fn is a pytree holding the variables: a jitted consumer compiles once for new parameters.
    sde = VPSDE()
    traces = []

    @jax.jit
    def apply(score_fn, x, t):
        traces.append(1)
        return score_fn(x, t)

    for seed in (4, 5):
        v = net.init({"params": jax.random.key(seed), "dropout": key}, X, labels)
        score_fn = get_score_fn(sde, get_model_fn(net, v), continuous=True)
        t = 0.9 * labels + 0.01
        np.testing.assert_allclose(apply(score_fn, X, t), score_fn(X, t), rtol=1e-5)
    assert len(traces) == 1


def test_bad_arguments():
    sde = VPSDE()
    score_fn = get_score_fn(sde, lambda x, labels: x, continuous=True)
    with pytest.raises(ValueError, match=r"t must have shape \(batch,\) = \(16,\), got \(8,\)"):
        score_fn(X, jnp.ones(8))
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        score_fn(X, jnp.full((16,), -0.5))

    class Other(SDE):
        N = 10
        sde = marginal_coeffs = prior_sampling = prior_logp = None

    with pytest.raises(NotImplementedError, match="no network parameterisation of the paper for Other"):
        get_score_fn(Other(), lambda x, labels: x, continuous=True)

    class Wrong(nn.Module):
        @nn.compact
        def __call__(self, x, labels, train: bool = False):
            return nn.Dense(3)(x)

    wrong = Wrong()
    with pytest.raises(ValueError, match=r"network returned shape \(16, 3\) for input of shape \(16, 2\)"):
        get_model_fn(wrong, wrong.init(jax.random.key(0), X, jnp.ones(16)))(X, jnp.ones(16))


@pytest.mark.parametrize("sde", [VESDE(sigma_min=0.01, sigma_max=10.0), VPSDE(), subVPSDE()], ids=["ve", "vp", "subvp"])
def test_data_and_noise_predictions_are_the_exact_posterior_means(sde):
    """For Gaussian data N(mu, Sigma), E[x_0 | x_t] = mu + m Sigma C^{-1} (x_t - m mu), C = m^2 Sigma + s^2 I, and
    E[z | x_t] = s C^{-1} (x_t - m mu): the predictions built from the exact score must equal both."""
    from score_sde.score import data_prediction, noise_prediction

    mu, cov = np.array([0.5, -1.0]), np.array([[0.3, 0.1], [0.1, 0.2]])
    gaussian = analytic.GaussianMixture.create([1.0], [mu], [cov])
    score_fn = analytic.score_fn(gaussian, sde)
    t = jnp.linspace(0.05, 0.9, 16)
    m, s = (np.asarray(v, np.float64) for v in sde.marginal_coeffs(t))
    x = np.asarray(X, np.float64)
    c = m[:, None, None] ** 2 * cov + s[:, None, None] ** 2 * np.eye(2)
    whitened = np.linalg.solve(c, (x - m[:, None] * mu)[..., None])[..., 0]
    x0 = mu + m[:, None] * whitened @ cov
    np.testing.assert_allclose(data_prediction(score_fn, sde, X, t), x0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(noise_prediction(score_fn, sde, X, t), s[:, None] * whitened, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sde.log_snr(t), np.log(m / s), rtol=1e-5)
