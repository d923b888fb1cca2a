"""Exact likelihoods through the probability-flow ODE (Section 4.3 and Appendix D.2 of the paper).

Along the ODE dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2, the density obeys
d log p_t(x(t)) / dt = -div f~(x(t), t), so for data x at t = eps and its latent z = x(T):

    log p_eps(x) = log p_T(z) + int_eps^T div f~(x(t), t) dt.

The divergence is exact (a Jacobian trace, for small dimensions) or the Hutchinson-Skilling estimate
v^T (df~/dx) v with one probe v (Rademacher or Gaussian) held fixed along the trajectory; the estimate of
log p is then unbiased up to the solver error.

Bits per dimension of 8-bit images. The data pipeline turns pixel values k in {0..255} into
y = (k + u) / 256 in [0, 1), u ~ U[0, 1)^D (uniform dequantisation, `uniform_dequantize`), and the network
sees x = a y + b (a = 1, b = 0 for data in [0, 1]; a = 2, b = -1 for data in [-1, 1]). Then

  * the densities relate by p_y(y) = p_x(a y + b) a^D, so log2 p_y(y) = log2 p_x(x) + D log2 a;
  * the probability of the discrete image is P(k) = int_{[0,1)^D} p_y((k + u) / 256) 256^-D du, and by
    Jensen's inequality -log2 P(k) <= E_u[-log2 p_y(y)] + 8 D.

Hence bits/dim = -log2 p_x(x) / D - log2 a + 8, an upper bound on the discrete model's bits/dim. With
inverse_scaler(x) = (x - b) / a this offset is 8 + log2 inverse_scaler'(x): 8 for [0, 1] and 7 for [-1, 1],
as the official JAX code has it. (The PyTorch port's `7 - inverse_scaler(-1)` gives the same two numbers
but only by coincidence: it is wrong for any other affine scaling, e.g. [-1/2, 1/2] gives 7.5, not 8.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling._common import check_eps, constrain, in_auto_axes
from score_sde.sampling.ode import check_method, integrate
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn

Array = jax.Array

DIVERGENCES = ("rademacher", "gaussian", "exact")


def uniform_dequantize(key: Array, images: Array) -> Array:
    """8-bit images (values 0..255, any dtype) -> (k + u) / 256 in [0, 1), u ~ U[0, 1) per pixel."""
    return (jnp.asarray(images, jnp.float32) + jax.random.uniform(key, jnp.shape(images))) / 256.0


def _sum_per_example(v: Array) -> Array:
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def hutchinson_divergence(f: Callable[[Array], Array], x: Array, probe: Array) -> tuple[Array, Array]:
    """(f(x), v^T (df/dx) v per example (B,)) for f acting on each example of x (B, ...) separately.

    With E[v v^T] = I (Rademacher or standard Gaussian v) the estimate is unbiased for div f = tr(df/dx).
    One forward-mode Jacobian-vector product: f and its directional derivative in one pass.
    """
    fx, jv = jax.jvp(f, (x,), (probe,))
    return fx, _sum_per_example(probe * jv)


def exact_divergence(f: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """(f(x), tr(df/dx) per example (B,)) by one Jacobian-vector product per data dimension (small D only)."""
    batch, dim = x.shape[0], int(np.prod(x.shape[1:]))
    basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1) + x.shape[1:])  # e_i, the same for every example
    fx, jac_cols = jax.vmap(lambda e: jax.jvp(f, (x,), (jnp.broadcast_to(e, x.shape),)))(basis)
    # (J e_i)_i summed over i: the trace of each example's Jacobian.
    diag = jnp.diagonal(jac_cols.reshape(dim, batch, dim), axis1=0, axis2=2)  # (B, D)
    return fx[0], jnp.sum(diag, axis=-1)


def log_likelihood(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    *,
    divergence: str = "rademacher",
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: int | None = None,
    eps: float = 1e-5,
    sharding=None,
    max_steps: int = 4096,
) -> tuple[Array, Array, Array]:
    """log p_eps(x) in nats (B,) of data x (B, ...) under the model, by the probability-flow ODE from eps to T.

    divergence: "rademacher" or "gaussian" (Hutchinson-Skilling probe drawn from `key`) or "exact" (one
    Jacobian-vector product per dimension: small data only). method, rtol, atol, num_steps: as
    `ode_sampler`. Jitted. Returns (log p (B,), the latent z = x(T) shaped like x, nfe), nfe the evaluations
    of the ODE's vector field (each one score evaluation differentiated in forward mode).
    """
    div = divergence.lower()
    if div not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
    method = check_method(method, num_steps)
    eps = check_eps(eps, sde)
    if x.ndim < 2:
        raise ValueError(f"x must be (batch, ...), got shape {x.shape}")
    return _log_likelihood(
        key,
        as_pytree(score_fn),
        sde,
        x,
        div,
        method,
        float(rtol),
        float(atol),
        None if num_steps is None else int(num_steps),
        eps,
        sharding,
        int(max_steps),
    )


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9, 10, 11))
def _log_likelihood(key, score_fn, sde, x, divergence, method, rtol, atol, num_steps, eps, sharding, max_steps):
    batch = x.shape[0]
    x = constrain(x, sharding)
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift(y, t):
        return constrain(rsde.sde(y, jnp.full((batch,), t))[0], sharding)

    probes = ()  # the Hutchinson probe, drawn once and held fixed along the trajectory
    if divergence == "gaussian":
        probes = (constrain(jax.random.normal(key, x.shape), sharding),)
    elif divergence == "rademacher":
        probes = (constrain(jax.random.rademacher(key, x.shape, dtype=x.dtype), sharding),)

    def solve(state, *probe):
        def vector_field(t, s):
            f = lambda y: drift(y, t)
            return hutchinson_divergence(f, s[0], probe[0]) if probe else exact_divergence(f, s[0])

        return integrate(
            vector_field,
            state,
            eps,
            sde.T,
            method=method,
            rtol=rtol,
            atol=atol,
            num_steps=num_steps,
            max_steps=max_steps,
        )

    (z, delta), nfe = in_auto_axes(solve, sharding, (x, jnp.zeros((batch,), x.dtype)), *probes)
    z = constrain(z, sharding)
    return sde.prior_logp(z) + delta, z, nfe


def bpd_offset(inverse_scaler: Callable[[Array], Array]) -> float:
    """8 + log2 of the slope of the (affine) map from the network's data range back to [0, 1]; see above."""
    slopes = [
        float(jax.grad(lambda v: jnp.asarray(inverse_scaler(v), jnp.float32))(jnp.float32(p))) for p in (0.0, 1.0)
    ]
    if not np.isclose(slopes[0], slopes[1]) or slopes[0] <= 0:
        raise ValueError(f"inverse_scaler must be increasing and affine, its slopes are {slopes}")
    return 8.0 + float(np.log2(slopes[0]))


def get_likelihood_fn(
    sde: SDE,
    inverse_scaler: Callable[[Array], Array] = lambda x: x,
    *,
    hutchinson_type: str = "Rademacher",
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    sharding=None,
) -> Callable:
    """likelihood_fn(key, score_fn, data) -> (bpd (B,), z, nfe), as the official get_likelihood_fn.

    data: dequantised images scaled as the network sees them (B, H, W, C); inverse_scaler maps them back to
    [0, 1] (it fixes the bits/dim offset). hutchinson_type: "Rademacher", "Gaussian" or "exact".
    """
    offset = bpd_offset(inverse_scaler)
    kwargs = dict(divergence=hutchinson_type, method=method, rtol=rtol, atol=atol, eps=eps, sharding=sharding)
    if hutchinson_type.lower() not in DIVERGENCES:
        raise ValueError(f"unknown hutchinson_type {hutchinson_type!r}; choose one of {DIVERGENCES}")

    def likelihood_fn(key, score_fn, data):
        logp, z, nfe = log_likelihood(key, score_fn, sde, data, **kwargs)
        bpd = -logp / (np.log(2.0) * np.prod(data.shape[1:])) + offset
        return bpd, z, nfe

    return likelihood_fn
