"""FID, KID and Inception Score from Inception features / logits (numpy, float64 where it matters)."""

from __future__ import annotations

import numpy as np
import scipy.special


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al., 2017):

        d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    tr((sigma1 sigma2)^(1/2)) is computed as tr((s sigma2 s)^(1/2)) with s = sigma1^(1/2): the same
    eigenvalues, but of a symmetric PSD matrix, so no complex round-off and singular (rank-deficient,
    fewer samples than 2048) covariances need no jitter.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    s = _sqrt_psd(sigma1)
    eig = np.linalg.eigvalsh(s @ sigma2 @ s)
    tr_covmean = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of (N, D) features."""
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two sets of (N, D) features.

    With fewer rows than dimensions (min(N1, N2) <= D) the covariances are singular and the trace
    term is taken in the rows' space instead: for centred rows A_k, sigma_k = A_k^T A_k / (N_k - 1)
    and the nonzero eigenvalues of sigma1 sigma2 are the squared singular values of A1 A2^T /
    sqrt((N1 - 1)(N2 - 1)), so tr((sigma1 sigma2)^(1/2)) is that matrix's nuclear norm. Same value,
    an (N1, N2) SVD instead of two (D, D) eigendecompositions, and no square roots of round-off
    in the null space.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    (n1, d), n2 = f1.shape, len(f2)
    if min(n1, n2) > d:
        return frechet_distance(*mean_cov(f1), *mean_cov(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    tr1, tr2 = np.sum(a1 * a1) / (n1 - 1), np.sum(a2 * a2) / (n2 - 1)
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


def kernel_distance(
    f1: np.ndarray, f2: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """KID (Bińkowski et al., 2018): the unbiased estimator of the squared MMD with the polynomial
    kernel k(x, y) = (x.y / d + 1)^3, averaged over ``num_subsets`` random subsets of
    m = min(subset_size, N1, N2) rows drawn without replacement from each set (as NVlabs' and
    clean-fid's implementations):

        MMD_u^2 = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.

    Gram matrices in float32 (the features' precision), kernels and sums in float64: the estimate is
    a small difference of large sums.
    """
    f1, f2 = np.asarray(f1, np.float32), np.asarray(f2, np.float32)
    if f1.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs (N, D) features of equal D, got {f1.shape} and {f2.shape}")
    d = f1.shape[1]
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (np.asarray(x @ x.T, np.float64) / d + 1.0) ** 3
        kyy = (np.asarray(y @ y.T, np.float64) / d + 1.0) ** 3
        kxy = (np.asarray(x @ y.T, np.float64) / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += within - 2.0 * kxy.sum() / (m * m)
    return float(total / num_subsets)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al., 2016), exp(E_x KL(p(y|x) || p(y))), over ``splits`` equal
    parts of the rows (the remainder of N / splits goes to the last parts); returns (mean, std)
    over the parts. ``splits=1`` is tfgan's ``classifier_score_from_logits``, which the official
    score_sde reports."""
    logits = np.asarray(logits, np.float64)
    scores = []
    for part in np.array_split(logits, splits):
        log_p = scipy.special.log_softmax(part, axis=1)
        log_py = scipy.special.logsumexp(log_p, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(log_p) * (log_p - log_py), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
