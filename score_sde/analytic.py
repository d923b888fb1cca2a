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
    """sum_k w_k N(mu_k, Sigma_k): weights (K,), means (K, D), and Sigma_k = U_k diag(lam_k) U_k^T given by its
    eigenvalues `lam` (K, D) and orthonormal eigenvectors `u` (K, D, D) (columns). Build with `create`."""

    weights: Array
    means: Array
    lam: Array
    u: Array

    @staticmethod
    def create(weights, means, covs) -> GaussianMixture:
        """From weights (K,) summing to 1, means (K, D), covariances (K, D, D) symmetric positive definite."""
        weights, means, covs = (np.asarray(a, np.float64) for a in (weights, means, covs))
        k, d = means.shape
        if weights.shape != (k,) or covs.shape != (k, d, d):
            raise ValueError(
                f"GaussianMixture: weights {weights.shape}, means {means.shape}, covs {covs.shape} "
                f"do not match (K,), (K, D), (K, D, D)"
            )
        if not np.isclose(weights.sum(), 1.0, atol=1e-6) or weights.min() <= 0:
            raise ValueError(f"GaussianMixture: weights must be positive and sum to 1, got {weights}")
        lam, u = np.linalg.eigh(covs)
        if lam.min() <= 0:
            raise ValueError("GaussianMixture: covariances must be positive definite")
        return GaussianMixture(*(jnp.asarray(a, jnp.float32) for a in (weights, means, lam, u)))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covs(self) -> Array:
        return jnp.einsum("kij,kj,klj->kil", self.u, self.lam, self.u)

    def sample(self, key: Array, n: int) -> tuple[Array, Array]:
        """n exact samples (n, D) and their component indices (n,)."""
        k_key, z_key = jax.random.split(key)
        comp = jax.random.choice(k_key, self.weights.shape[0], (n,), p=self.weights)
        z = jax.random.normal(z_key, (n, self.dim)) * jnp.sqrt(self.lam[comp])
        return self.means[comp] + jnp.einsum("nij,nj->ni", self.u[comp], z), comp

    def _whitened(self, x: Array, mean_coeff: Array, std: Array):
        """Per component: log w_k + log N(x_b; m_b mu_k, C_bk) (B, K), and C_bk^{-1} (x_b - m_b mu_k) (B, K, D),
        C_bk = m_b^2 Sigma_k + s_b^2 I = U_k diag(m_b^2 lam_k + s_b^2) U_k^T."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"GaussianMixture of dimension {self.dim} got data of shape {x.shape}")
        var = mean_coeff[:, None, None] ** 2 * self.lam + std[:, None, None] ** 2  # (B, K, D)
        diff = x[:, None, :] - mean_coeff[:, None, None] * self.means  # (B, K, D)
        proj = jnp.einsum("kdj,bkd->bkj", self.u, diff)  # coordinates in each eigenbasis
        log_n = -0.5 * jnp.sum(proj**2 / var + jnp.log(2 * np.pi * var), axis=-1)
        precision_diff = jnp.einsum("kdj,bkj->bkd", self.u, proj / var)
        return jnp.log(self.weights) + log_n, precision_diff

    def log_prob(self, x: Array, mean_coeff: Array | None = None, std: Array | None = None) -> Array:
        """log p(x) (B,) for x (B, ...), of the mixture or, given m and s (B,), of it perturbed by N(m x_0, s^2 I)."""
        b = x.shape[0]
        mean_coeff = jnp.ones((b,)) if mean_coeff is None else mean_coeff
        std = jnp.zeros((b,)) if std is None else std
        return jax.nn.logsumexp(self._whitened(x.reshape(b, -1), mean_coeff, std)[0], axis=-1)

    def score(self, x: Array, mean_coeff: Array, std: Array) -> Array:
        """grad_x log p (shaped like x) of the mixture perturbed by N(m x_0, s^2 I), m and s (B,):
        -sum_k r_k(x) C_k^{-1} (x - m mu_k), r_k the posterior probability of component k."""
        log_joint, precision_diff = self._whitened(x.reshape(x.shape[0], -1), mean_coeff, std)
        r = jax.nn.softmax(log_joint, axis=-1)
        return -jnp.einsum("bk,bkd->bd", r, precision_diff).reshape(x.shape)


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
    if jnp.shape(t) != x.shape[:1]:
        raise ValueError(f"t must have shape (batch,) = {x.shape[:1]}, got {jnp.shape(t)}")
    check_time(t, sde)
    return mixture.score(x, *sde.marginal_coeffs(t))


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


def probability_flow(
    mixture: GaussianMixture, sde: SDE, x: Array, t0: float, t1: float, *, tol: float = 1e-11
) -> np.ndarray:
    """The end point x(t1) (float64 numpy, shaped like x) of the probability-flow ODE dx/dt = f - g^2 score / 2
    of the mixture under `sde`, started from x at t0 (t1 < t0 integrates backwards), with the exact score.

    The reference "exact solution" the fixed-step samplers are measured against: an 8th-order Runge-Kutta
    (diffrax Dopri8) in float64 with rtol = atol = `tol`, far below any sampler's error in float32 or float64.
    """
    return probability_flow_of(score_fn(mixture, sde), sde, x, t0, t1, tol=tol)


def probability_flow_of(score, sde: SDE, x: Array, t0: float, t1: float, *, tol: float = 1e-11) -> np.ndarray:
    """`probability_flow` with any score(x, t) built of this module's exact functions (a guided one, say), which
    then computes in float64 too."""
    import diffrax

    with jax.enable_x64(True):
        y0 = jnp.asarray(x, jnp.float64)
        batch = y0.shape[0]

        def drift(t, y, args):
            return sde.reverse(score, probability_flow=True).sde(y, jnp.full((batch,), t))[0]

        sol = jax.jit(
            lambda y0: diffrax.diffeqsolve(
                diffrax.ODETerm(drift),
                diffrax.Dopri8(),
                t0=float(t0),
                t1=float(t1),
                dt0=0.01 * (float(t1) - float(t0)),
                y0=y0,
                stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
                saveat=diffrax.SaveAt(t1=True),
                max_steps=100_000,
            ).ys[0]
        )(y0)
        return np.asarray(sol, np.float64)


def marginal(mixture: GaussianMixture, sde: SDE, t: float) -> GaussianMixture:
    """The exact p_t as a GaussianMixture: means m(t) mu_k, covariances m(t)^2 Sigma_k + s(t)^2 I."""
    check_time(t, sde)
    m, s = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), t, jnp.float32)))
    return GaussianMixture(mixture.weights, m * mixture.means, m**2 * mixture.lam + s**2, mixture.u)


def moment_z_scores(mixture: GaussianMixture, x) -> np.ndarray:
    """Standardised errors of samples x (n, D) against the mixture's component weights, means and covariances.

    Each sample is assigned to the component of highest posterior probability (so the components must be
    well separated: the assignment errors are then negligible). For each component k with n_k samples:
      weight      (n_k / n - w_k) / sqrt(w_k (1 - w_k) / n)
      mean_j      (xbar_j - mu_kj) / sqrt(C_jj / n_k)
      cov_ij      (S_ij - C_ij) / sqrt((C_ii C_jj + C_ij^2) / n_k)   (i <= j; Gaussian fourth moments)
    Returns the K (1 + D + D (D + 1) / 2) scores in that order; for exact samples each is about N(0, 1).
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    log_joint, _ = mixture._whitened(jnp.asarray(x, jnp.float32), jnp.ones((n,)), jnp.zeros((n,)))
    assigned = np.asarray(jnp.argmax(log_joint, axis=-1))
    weights, means, covs = (np.asarray(a, np.float64) for a in (mixture.weights, mixture.means, mixture.covs))
    iu = np.triu_indices(d)
    z = []
    for k in range(len(weights)):
        xk = x[assigned == k]
        nk, c = len(xk), covs[k]
        if nk < 2:
            raise ValueError(f"only {nk} samples fall in mixture component {k}; the samples are far off")
        # (A single component's weight is 1 and n_k = n: its score is 0 by construction.)
        z.append((nk / n - weights[k]) / np.sqrt(weights[k] * (1 - weights[k]) / n) if len(weights) > 1 else 0.0)
        z.extend((xk.mean(0) - means[k]) / np.sqrt(np.diag(c) / nk))
        se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / nk)
        z.extend(((np.cov(xk.T) - c) / se)[iu])
    return np.array(z)


def example_mixture() -> GaussianMixture:
    """Two well-separated, unequally weighted, correlated Gaussians in 2-D (the tests' and benchmarks' data).

    Along the line joining the means they are 5.3 summed standard deviations apart, so a sample falls on the
    wrong side of the decision boundary with probability below 1e-7 (`moment_z_scores` needs that).
    """
    return GaussianMixture.create(
        weights=[0.35, 0.65],
        means=[[-2.5, 1.0], [2.0, -1.0]],
        covs=[[[0.15, 0.05], [0.05, 0.10]], [[0.30, -0.10], [-0.10, 0.20]]],
    )


# --- Conditional laws: class labels, known coordinates, linear-Gaussian measurements -------------------------


def class_log_prob(mixture: GaussianMixture, classes: Array, sde: SDE, x: Array, t: Array, y: Array) -> Array:
    """The exact time-dependent classifier log p_t(y | x_t) (B,) when component k carries the label classes[k]:
    log sum_{k: classes_k = y} r_k(x_t), r_k the posterior probabilities of the components under p_t."""
    if jnp.shape(t) != x.shape[:1]:
        raise ValueError(f"t must have shape (batch,) = {x.shape[:1]}, got {jnp.shape(t)}")
    check_time(t, sde)
    log_joint, _ = mixture._whitened(x.reshape(x.shape[0], -1), *sde.marginal_coeffs(t))  # (B, K)
    in_class = jnp.asarray(classes)[None, :] == jnp.asarray(y)[:, None]
    return jax.nn.logsumexp(jnp.where(in_class, log_joint, -jnp.inf), axis=-1) - jax.nn.logsumexp(log_joint, -1)


def classifier_fn(mixture: GaussianMixture, classes, sde: SDE) -> Partial:
    """log_prob_fn(x, t, y) = `class_log_prob` (a jit-able pytree), the classifier guidance takes."""
    return Partial(class_log_prob, mixture, jnp.asarray(classes, jnp.int32), sde)


def _class_score(mixture: GaussianMixture, classes: Array, null: int, sde: SDE, x: Array, t: Array, y: Array):
    if jnp.shape(t) != x.shape[:1] or jnp.shape(y) != x.shape[:1]:
        raise ValueError(f"t and y must have shape (batch,) = {x.shape[:1]}, got {jnp.shape(t)}, {jnp.shape(y)}")
    check_time(t, sde)
    log_joint, precision_diff = mixture._whitened(x.reshape(x.shape[0], -1), *sde.marginal_coeffs(t))
    y = jnp.asarray(y)[:, None]
    r = jax.nn.softmax(jnp.where((classes[None, :] == y) | (y == null), log_joint, -jnp.inf), axis=-1)
    return -jnp.einsum("bk,bkd->bd", r, precision_diff).reshape(x.shape)


def class_score_fn(mixture: GaussianMixture, classes, sde: SDE, num_classes: int | None = None) -> Partial:
    """The exact class-conditional score_fn(x, t, y) = grad_x log p_t(x | y) (a jit-able pytree) when component k
    carries the label classes[k]: the score of the components of class y_b for each example b, and for the null
    label ``num_classes`` (default max(classes) + 1) the unconditional score, as a class-conditional network
    trained with label dropout gives both (score.get_score_fn's third argument)."""
    classes = jnp.asarray(classes, jnp.int32)
    null = int(classes.max()) + 1 if num_classes is None else int(num_classes)
    return Partial(_class_score, mixture, classes, null, sde)


def example_labelled_mixture() -> tuple[GaussianMixture, np.ndarray]:
    """Three well-separated 2-D components (at least 4.5 summed standard deviations apart along each joining
    line) and their classes 0, 0, 1: class 0 is itself a two-component mixture, so the weights within a class
    are checked too."""
    mixture = GaussianMixture.create(
        weights=[0.3, 0.45, 0.25],
        means=[[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]],
        covs=[[[0.15, 0.05], [0.05, 0.10]], [[0.30, -0.10], [-0.10, 0.20]], [[0.20, 0.0], [0.0, 0.10]]],
    )
    return mixture, np.array([0, 0, 1])


def class_conditional(mixture: GaussianMixture, classes, label: int) -> GaussianMixture:
    """p_0(x | y = label): the components of that class, their weights renormalised."""
    keep = np.flatnonzero(np.asarray(classes) == label)
    if not keep.size:
        raise ValueError(f"no mixture component has class {label}")
    weights = np.asarray(mixture.weights, np.float64)[keep]
    return GaussianMixture(
        jnp.asarray(weights / weights.sum(), jnp.float32), mixture.means[keep], mixture.lam[keep], mixture.u[keep]
    )


def rotate(mixture: GaussianMixture, q) -> GaussianMixture:
    """The law of c = Q^T x for x from the mixture and Q (D, D) orthogonal (e.g. a colour basis)."""
    q = jnp.asarray(q, jnp.float32)
    return GaussianMixture(mixture.weights, mixture.means @ q, mixture.lam, jnp.einsum("di,kdj->kij", q, mixture.u))


def _reweighted(log_weights: np.ndarray, means, covs) -> GaussianMixture:
    log_weights = log_weights - log_weights.max()
    weights = np.exp(log_weights) / np.exp(log_weights).sum()
    keep = weights > 1e-12  # components the observation has ruled out
    return GaussianMixture.create(weights[keep] / weights[keep].sum(), np.asarray(means)[keep], np.asarray(covs)[keep])


def _log_normal(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    diff = y - mean
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    return float(-0.5 * (diff @ np.linalg.solve(cov, diff) + logdet))


def condition(mixture: GaussianMixture, known, y) -> GaussianMixture:
    """p_0(x_u | x_k = y) over the unknown coordinates u (in increasing order) given the coordinates `known`
    (indices into D) equal to y, in float64: per component the Gaussian conditional
    mu_u + S_uk S_kk^-1 (y - mu_k), S_uu - S_uk S_kk^-1 S_ku, its weight times N(y; mu_k, S_kk)."""
    known = np.asarray(known)
    unknown = np.setdiff1d(np.arange(mixture.dim), known)
    y = np.asarray(y, np.float64).reshape(-1)
    weights, means, covs = (np.asarray(a, np.float64) for a in (mixture.weights, mixture.means, mixture.covs))
    log_w, new_means, new_covs = [], [], []
    for w, mu, s in zip(weights, means, covs):
        s_kk, s_uk = s[np.ix_(known, known)], s[np.ix_(unknown, known)]
        gain = np.linalg.solve(s_kk, s_uk.T).T
        new_means.append(mu[unknown] + gain @ (y - mu[known]))
        new_covs.append(s[np.ix_(unknown, unknown)] - gain @ s_uk.T)
        log_w.append(np.log(w) + _log_normal(y, mu[known], s_kk))
    return _reweighted(np.array(log_w), new_means, new_covs)


def linear_gaussian_posterior(mixture: GaussianMixture, a, y, sigma_y: float) -> GaussianMixture:
    """p_0(x | y) for y = A x + sigma_y n, n ~ N(0, I), A (M, D), one observation y (M,), sigma_y > 0, in float64:
    per component mu + G (y - A mu), S - G A S with the gain G = S A^T (A S A^T + sigma_y^2 I)^-1, its weight
    times N(y; A mu, A S A^T + sigma_y^2 I)."""
    if sigma_y <= 0:
        raise ValueError("linear_gaussian_posterior needs sigma_y > 0 (else use `condition` in a basis of A's rows)")
    a = np.asarray(a, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    weights, means, covs = (np.asarray(m, np.float64) for m in (mixture.weights, mixture.means, mixture.covs))
    log_w, new_means, new_covs = [], [], []
    for w, mu, s in zip(weights, means, covs):
        c = a @ s @ a.T + sigma_y**2 * np.eye(len(y))
        gain = np.linalg.solve(c, a @ s).T
        new_means.append(mu + gain @ (y - a @ mu))
        cov = s - gain @ a @ s
        new_covs.append(0.5 * (cov + cov.T))
        log_w.append(np.log(w) + _log_normal(y, a @ mu, c))
    return _reweighted(np.array(log_w), new_means, new_covs)


def gaussian_w2(mean_a, cov_a, mean_b, cov_b) -> float:
    """The 2-Wasserstein distance between N(mean_a, cov_a) and N(mean_b, cov_b):
    ||m_a - m_b||^2 + tr(C_a + C_b - 2 (C_b^1/2 C_a C_b^1/2)^1/2), square-rooted."""
    from scipy import linalg

    mean_a, mean_b, cov_a, cov_b = (np.asarray(v, np.float64) for v in (mean_a, mean_b, cov_a, cov_b))
    root_b = linalg.sqrtm(cov_b).real
    cross = linalg.sqrtm(root_b @ cov_a @ root_b).real
    return float(np.sqrt(max(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross), 0.0)))


def moments(mixture: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """The mixture's overall mean (D,) and covariance (D, D), in float64."""
    w, mu, c = (np.asarray(a, np.float64) for a in (mixture.weights, mixture.means, mixture.covs))
    mean = w @ mu
    diff = mu - mean
    return mean, np.einsum("k,kij->ij", w, c) + np.einsum("k,ki,kj->ij", w, diff, diff)
