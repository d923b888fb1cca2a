"""Losses: the exact score minimises them, and their weightings and reductions give known expected values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from jax.tree_util import Partial

from score_sde import analytic
from score_sde.losses import dsm_loss, get_loss_fn
from score_sde.score import get_model_fn
from score_sde.sde import VESDE, VPSDE, subVPSDE

MIXTURE = analytic.example_mixture()
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0), "vp": VPSDE(), "subvp": subVPSDE()}
N = 2**15
X = MIXTURE.sample(jax.random.key(0), N)[0]

# Perturbations h(s) = s A^T + b of the exact output s, each applied with delta = +-0.1 below.
PERTURBATIONS = {
    "scale": (np.eye(2), np.zeros(2)),
    "rotate": (np.array([[0.0, -1.0], [1.0, 0.0]]), np.zeros(2)),
    "shift": (np.zeros((2, 2)), np.array([1.0, -0.5])),
}


def _perturbed(fn, a, b, x, t):
    out = fn(x, t)
    return out + out @ a.T + b


def _assert_exact_is_minimal(loss, exact_fn):
    """loss(fn) with fn = exact_fn and with exact_fn + delta h, on the same random draws (same key).

    With common random numbers L(s* + delta h) - L(s*) = delta^2 E[lambda |h|^2] + 2 delta E[lambda (s* -
    target) . h]; the second term has mean 0 because s* = E[target | x_t] and, over N = 32768 draws, a
    standard error about 2 delta / sqrt(N) of the first term's scale, i.e. ~10x smaller than it at
    delta = 0.1. So every perturbed loss must be larger.
    """
    key = jax.random.key(1)
    exact = float(loss(Partial(_perturbed, exact_fn, jnp.zeros((2, 2)), jnp.zeros(2)), key))
    for name, (a, b) in PERTURBATIONS.items():
        for delta in (0.1, -0.1):
            perturbed = float(loss(Partial(_perturbed, exact_fn, delta * jnp.asarray(a), delta * jnp.asarray(b)), key))
            assert perturbed > exact, (name, delta, perturbed, exact)


@pytest.mark.parametrize("likelihood_weighting, reduce_mean", [(False, True), (True, False)])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_continuous_loss_is_minimal_at_the_exact_score(sde_name, likelihood_weighting, reduce_mean):
    sde = SDES[sde_name]
    loss = jax.jit(
        lambda score_fn, key: dsm_loss(
            score_fn, key, X, sde=sde, reduce_mean=reduce_mean, likelihood_weighting=likelihood_weighting, eps=1e-5
        )
    )
    _assert_exact_is_minimal(loss, analytic.score_fn(MIXTURE, sde))


def _smld_model(sde):
    sigmas = sde.discrete_sigmas[::-1]  # label 0 = largest sigma
    return Partial(lambda x, i: MIXTURE.score(x, jnp.ones(i.shape), sigmas[i]))


def _ddpm_model(sde):
    m, s = sde.sqrt_alphas_cumprod, sde.sqrt_1m_alphas_cumprod
    return Partial(lambda x, i: -s[i][:, None] * MIXTURE.score(x, m[i], s[i]))


@pytest.mark.parametrize(
    "sde, model", [(VESDE(0.01, 10.0, N=100), _smld_model), (VPSDE(N=1000), _ddpm_model)], ids=["smld", "ddpm"]
)
def test_discrete_losses_are_minimal_at_the_exact_model(sde, model):
    loss_fn = get_loss_fn(sde, continuous=False, reduce_mean=True)
    loss = jax.jit(lambda model_fn, key: loss_fn(model_fn, key, X))
    _assert_exact_is_minimal(loss, model(sde))


def _zero(x, t):
    return jnp.zeros_like(x)


@pytest.mark.parametrize("reduce_mean", [True, False])
def test_weightings_and_reductions_at_zero_score(reduce_mean):
    """With score 0 the per-example loss is w(t) c, w = lambda(t) / s(t)^2 and c = reduce(|z|^2), which has
    E[c] = 1 and E[c^2] = 2 for both reductions here (mean of D = 2 chi^2_1 variables, or half their sum).
    So E[loss] = E_t[w]: 1 for lambda = s^2, E_t[g^2 / s^2] for likelihood weighting (2 log(sigma_max /
    sigma_min) for VE; by quadrature for VP). Tolerance: 4.5 standard errors of the batch mean,
    sqrt((2 E[w^2] - E[w]^2) / N). The SMLD and DDPM losses at a zero network also have w = 1
    (sigma^2 |z / sigma|^2 and |z|^2).
    """
    key = jax.random.key(2)
    ve, vp, eps = SDES["ve"], SDES["vp"], 1e-5

    def w_vp(t):  # beta(t) / (1 - exp(-int_0^t beta)), in float64
        return (0.1 + 19.9 * t) / -np.expm1(-(0.1 * t + 9.95 * t**2))

    quad = lambda f: scipy.integrate.quad(f, eps, 1, limit=200, points=[1e-4, 1e-3, 1e-2])[0] / (1 - eps)
    w_ve = 2 * np.log(ve.sigma_max / ve.sigma_min)
    cases = [  # (loss, E[w], E[w^2])
        (dsm_loss(_zero, key, X, sde=vp, reduce_mean=reduce_mean), 1.0, 1.0),
        (dsm_loss(_zero, key, X, sde=ve, reduce_mean=reduce_mean, likelihood_weighting=True), w_ve, w_ve**2),
        (
            dsm_loss(_zero, key, X, sde=vp, reduce_mean=reduce_mean, likelihood_weighting=True),
            quad(w_vp),
            quad(lambda t: w_vp(t) ** 2),
        ),
        (get_loss_fn(VESDE(0.01, 10.0, N=100), continuous=False, reduce_mean=reduce_mean)(_zero, key, X), 1.0, 1.0),
        (get_loss_fn(VPSDE(), continuous=False, reduce_mean=reduce_mean)(_zero, key, X), 1.0, 1.0),
    ]
    for value, e_w, e_w2 in cases:
        se = np.sqrt((2 * e_w2 - e_w**2) / N)
        assert abs(float(value) - e_w) < 4.5 * se, (float(value), e_w, se)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = nn.Dense(16)(jnp.concatenate([x, labels[:, None] / 999.0], axis=-1))
        return nn.Dense(x.shape[-1])(nn.Dropout(0.1, deterministic=not train)(nn.swish(h)))


def test_gradients_flow_through_model_fn():
    """The training pattern: build model_fn inside the differentiated function; the loss is jittable and its
    gradient with respect to the parameters is finite, non-zero, and lowers the loss along -grad."""
    net, sde = _Net(), SDES["vp"]
    params = net.init(jax.random.key(0), X[:8], jnp.ones(8))["params"]
    loss_fn = get_loss_fn(sde, continuous=True, reduce_mean=True)

    def objective(params, key):
        key, dropout_key = jax.random.split(key)
        model_fn = get_model_fn(net, {"params": params}, train=True, dropout_key=dropout_key)
        return loss_fn(model_fn, key, X[:1024])

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    value, grads = value_and_grad(params, jax.random.key(1))
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert np.all(np.isfinite(norms)) and min(norms) > 0
    stepped = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
    assert float(value_and_grad(stepped, jax.random.key(1))[0]) < float(value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="likelihood_weighting is only defined for continuous"):
        get_loss_fn(VPSDE(), continuous=False, likelihood_weighting=True)
    with pytest.raises(ValueError, match="defined for VESDE and VPSDE, not subVPSDE"):
        get_loss_fn(subVPSDE(), continuous=False)
    with pytest.raises(ValueError, match=r"eps must lie in \(0, T=1.0\)"):
        dsm_loss(_zero, jax.random.key(0), X, sde=VPSDE(), eps=0.0)
    with pytest.raises(ValueError, match=r"score_fn returned shape \(3, 2\) for data of shape \(32768, 2\)"):
        dsm_loss(lambda x, t: jnp.zeros((3, 2)), jax.random.key(0), X, sde=VPSDE())
