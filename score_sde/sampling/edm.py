"""EDM's samplers (Karras, Aittala, Aila and Laine, NeurIPS 2022, Algorithms 1 and 2), for any SDE.

In the variables x~ = x / m(t) and sigma = s(t) / m(t) = exp(-lambda(t)), the probability-flow ODE of every SDE
with kernel N(m x_0, s^2 I) is EDM's eq. 3, dx~/dsigma = (x~ - D(x~; sigma)) / sigma = eps, with the denoiser
D = x0 = (x + s^2 score) / m and the noise prediction eps = -s score(m x~, t). "edm:euler" and "edm:heun" take
Euler and Heun steps in sigma on the given grid (the Karras schedule is `grids.karras`); both are exact for a
point-mass data law. On an SDE whose sigma is linear in t (EDM's own VE, sigma(t) = t) the Euler step is the
probability-flow Euler step in t; on the paper's VE SDE (sigma geometric in t) they differ by O(h^2) per step.

As Algorithm 1, Heun corrects every step whose next sigma is not 0: on the grids here, which end at sigma(eps) > 0,
that is every step (n steps, 2 n evaluations). EDM and k-diffusion end their grids with sigma = 0, whose last step
is Euler and lands on the denoised D(x; sigma_n): ``denoise=True`` takes that step after the grid's last time (one
evaluation more; config.sampling.noise_removal), which makes EDM's 35 evaluations 17 Heun steps and that one.

Stochastic churn (Algorithm 2): before step i, where S_tmin <= sigma_i <= S_tmax, the noise level is raised to
sigma^ = (1 + gamma) sigma_i, gamma = min(S_churn / n, sqrt(2) - 1) (n the number of steps), by adding
noise sqrt(sigma^2 - sigma_i^2) S_noise z to x~, and the step is taken from sigma^. Here sigma^ is capped at
sigma(T), so the times stay within [eps, T] (the cap acts only on a first step from T).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import Counted, constrain, padded_grid
from score_sde.sampling.samplers import register_sampler
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array


def _check_churn(s_churn, s_tmin, s_tmax, s_noise) -> tuple[float, float, float, float]:
    s_churn, s_tmin, s_tmax, s_noise = (float(v) for v in (s_churn, s_tmin, s_tmax, s_noise))
    if s_churn < 0 or s_noise < 0 or s_tmin > s_tmax:
        raise ValueError(
            f"EDM's churn needs S_churn >= 0, S_noise >= 0 and S_tmin <= S_tmax; got S_churn={s_churn}, "
            f"S_tmin={s_tmin}, S_tmax={s_tmax}, S_noise={s_noise}"
        )
    return s_churn, s_tmin, s_tmax, s_noise


@register_sampler(
    "edm:euler",
    steps_for_nfe=lambda nfe, denoise=False: nfe - bool(denoise),
    nfe_options=("denoise",),
    grid="karras",
)
def edm_euler(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    denoise: bool = False,
    sharding=None,
):
    """EDM's Euler sampler (Algorithm 2 with Euler steps; Algorithm 1 without churn): one evaluation per step, and
    with ``denoise`` one more, the step to sigma = 0."""
    churn = _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    return _edm(key, as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), False, churn, bool(denoise), sharding)


@register_sampler(
    "edm:heun",
    steps_for_nfe=lambda nfe, denoise=False: (nfe - bool(denoise)) // 2,
    min_nfe=2,
    nfe_options=("denoise",),
    grid="karras",
)
def edm_heun(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    ts,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    denoise: bool = False,
    sharding=None,
):
    """EDM's Heun sampler (Algorithms 1 and 2): a Heun step to every next sigma, none 0 on these grids (n steps,
    2 n evaluations); with ``denoise``, EDM's last step, Euler from the grid's last sigma to 0 (2 n + 1)."""
    churn = _check_churn(s_churn, s_tmin, s_tmax, s_noise)
    return _edm(key, as_pytree(score_fn), sde, x, *padded_grid(ts, sde, x), True, churn, bool(denoise), sharding)


@functools.partial(jax.jit, static_argnums=(2, 6, 7, 8, 9))
def _edm(key, score_fn, sde, x, ts, n, heun, churn, denoise, sharding):
    s_churn, s_tmin, s_tmax, s_noise = churn
    score = Counted(score_fn)
    gamma = jnp.minimum(s_churn / n, np.sqrt(2.0) - 1.0)

    def vec(t):
        return jnp.full(x.shape[:1], t, x.dtype)

    def sigma(t):
        return jnp.exp(-sde.log_snr(t))

    def eps_at(x_tilde, t):  # dx~/dsigma = eps(m x~, t)
        m, s = sde.marginal_coeffs(t)
        return batch_mul(-s, score(constrain(batch_mul(m, x_tilde), sharding), t))

    def step(i, carry):
        x, nfe = carry
        t, t_next = vec(ts[i]), vec(ts[i + 1])
        sig, sig_next = sigma(t), sigma(t_next)
        x_tilde = batch_mul(1.0 / sde.marginal_coeffs(t)[0], x)
        if s_churn > 0:  # raise the noise level to sigma^ = (1 + gamma) sigma, at most sigma(T)
            raised = (sig >= s_tmin) & (sig <= s_tmax)
            sig_hat = jnp.where(raised, jnp.minimum((1.0 + gamma) * sig, sigma(vec(sde.T))), sig)
            t = jnp.where(raised, sde.t_of_log_snr(-jnp.log(sig_hat)), t)
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
            # (clipped at 0: where the cap sigma(T) equals sigma(t_0 = T), its round-off may differ)
            x_tilde = x_tilde + batch_mul(jnp.sqrt(jnp.maximum(sig_hat**2 - sig**2, 0.0)) * s_noise, noise)
            sig = sig_hat
        before = score.calls
        d = eps_at(x_tilde, t)
        nfe = nfe + (score.calls - before)
        x_next = x_tilde + batch_mul(sig_next - sig, d)
        if heun:  # (the next sigma is never 0 here: sigma(eps) > 0)
            before = score.calls
            d_next = eps_at(x_next, t_next)
            nfe = nfe + (score.calls - before)
            x_next = x_tilde + batch_mul(sig_next - sig, 0.5 * (d + d_next))
        x = batch_mul(sde.marginal_coeffs(t_next)[0], x_next)
        return constrain(x, sharding), nfe

    x, nfe = jax.lax.fori_loop(0, n, step, (constrain(x, sharding), jnp.int32(0)))
    if denoise:  # the Euler step from sigma_n to 0: x~ - sigma_n eps = D(x~; sigma_n), data at m = 1
        t = vec(ts[n])
        x_tilde = batch_mul(1.0 / sde.marginal_coeffs(t)[0], x)
        before = score.calls
        x = constrain(x_tilde - batch_mul(sigma(t), eps_at(x_tilde, t)), sharding)
        nfe = nfe + (score.calls - before)
    return x, nfe
