"""Gaussian-mixture data with exact perturbed densities and scores under any SDE's perturbation kernel.

If p_0 = sum_k w_k N(mu_k, Sigma_k) and p_t(x_t | x_0) = N(m(t) x_0, s(t)^2 I), then
    p_t = sum_k w_k N(m(t) mu_k, m(t)^2 Sigma_k + s(t)^2 I)
exactly, so the score grad log p_t, the density and samples of p_t are known in closed form. Plug
`score_fn(mixture, sde)` into any sampler or the likelihood to check it against exact answers.

Data are (B, D) or (B, ...) with prod(...) = D (flattened); meant for small D (covariances are dense).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from score_sde.sde import SDE, check_time

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """weights (K,) summing to 1, means (K, D), covs (K, D, D) symmetric positive definite."""

    weights: Array
    means: Array
    covs: Array

    @staticmethod
    def create(weights, means, covs) -> GaussianMixture:
        weights, means, covs = (jnp.asarray(a, jnp.float32) for a in (weights, means, covs))
        k, d = means.shape
        if weights.shape != (k,) or covs.shape != (k, d, d):
            raise ValueError(
                f"GaussianMixture: weights {weights.shape}, means {means.shape}, covs {covs.shape} "
                f"do not match (K,), (K, D), (K, D, D)"
            )
        if not np.isclose(float(weights.sum()), 1.0, atol=1e-5):
            raise ValueError(f"GaussianMixture: weights sum to {float(weights.sum())}, not 1")
        return GaussianMixture(weights, means, covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, key: Array, n: int) -> tuple[Array, Array]:
        """n exact samples (n, D) and their component indices (n,)."""
        k_key, z_key = jax.random.split(key)
        comp = jax.random.choice(k_key, self.weights.shape[0], (n,), p=self.weights)
        z = jax.random.normal(z_key, (n, self.dim))
        chol = jnp.linalg.cholesky(self.covs)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z), comp

    def component_log_probs(self, x: Array, mean_coeff: Array, std: Array) -> Array:
        """log w_k + log N(x_b; m_b mu_k, m_b^2 Sigma_k + s_b^2 I), (B, K); x (B, ...), m and s (B,)."""
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"GaussianMixture of dimension {self.dim} got data with {x.shape[1]} dimensions")
        eye = jnp.eye(self.dim)
        cov = mean_coeff[:, None, None, None] ** 2 * self.covs + std[:, None, None, None] ** 2 * eye  # (B,K,D,D)
        chol = jnp.linalg.cholesky(cov)
        diff = x[:, None, :] - mean_coeff[:, None, None] * self.means  # (B, K, D)
        white = jax.scipy.linalg.solve_triangular(chol, diff[..., None], lower=True)[..., 0]
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        log_n = -0.5 * (jnp.sum(white**2, -1) + log_det + self.dim * np.log(2 * np.pi))
        return jnp.log(self.weights) + log_n

    def log_prob(self, x: Array, mean_coeff: Array | None = None, std: Array | None = None) -> Array:
        """log p(x) (B,) of the mixture, or of the mixture perturbed by N(m x_0, s^2 I) if m, s (B,) given."""
        b = x.shape[0]
        mean_coeff = jnp.ones((b,)) if mean_coeff is None else mean_coeff
        std = jnp.zeros((b,)) if std is None else std
        return jax.nn.logsumexp(self.component_log_probs(x, mean_coeff, std), axis=-1)


def _log_prob_t(mixture: GaussianMixture, sde: SDE, x: Array, t: Array) -> Array:
    if jnp.shape(t) != x.shape[:1]:
        raise ValueError(f"t must have shape (batch,) = {x.shape[:1]}, got {jnp.shape(t)}")
    check_time(t, sde)
    mean_coeff, std = sde.marginal_coeffs(t)
    return mixture.log_prob(x, mean_coeff, std)


def log_prob(mixture: GaussianMixture, sde: SDE, x: Array, t: Array) -> Array:
    """Exact log p_t(x) (B,) of the mixture diffused by `sde` to times t (B,)."""
    return _log_prob_t(mixture, sde, x, t)


def _score_t(mixture: GaussianMixture, sde: SDE, x: Array, t: Array) -> Array:
    # Examples are independent, so the gradient of the summed log-density is each example's score.
    return jax.grad(lambda y: jnp.sum(_log_prob_t(mixture, sde, y, t)))(x)


def score_fn(mixture: GaussianMixture, sde: SDE) -> Partial:
    """The exact score_fn(x, t) = grad_x log p_t(x) of the mixture diffused by `sde` (a jit-able pytree)."""
    return Partial(_score_t, mixture, sde)


def sample_t(mixture: GaussianMixture, sde: SDE, key: Array, t: float, n: int) -> Array:
    """n exact samples (n, D) of p_t: x_0 from the mixture pushed through the perturbation kernel."""
    check_time(t, sde)
    x_key, z_key = jax.random.split(key)
    x0, _ = mixture.sample(x_key, n)
    mean, std = sde.marginal_prob(x0, jnp.full((n,), t))
    return mean + std[:, None] * jax.random.normal(z_key, x0.shape)
