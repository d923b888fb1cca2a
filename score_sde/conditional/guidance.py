"""Guided scores: the conditional score grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x), as a new
score_fn(x, t), so that every sampler (PC, probability-flow ODE, any other taking a score_fn) samples the
conditional law unchanged.

    score_fn = classifier_guided(score_fn, log_prob_fn, labels, weight=1.0)      # class-conditional (Sec. 5)
    score_fn = classifier_free_guided(cond_score_fn, sde, labels, num_classes=10, weight=2.0)  # a conditional net
    score_fn = dps(score_fn, sde, operator, y, sigma_y=0.05)                     # y = A x + sigma_y n
    score_fn = pigdm(score_fn, sde, operator, y, sigma_y=0.0)
    score_fn = GUIDANCE.lookup("pigdm")(score_fn, sde, operator, y, sigma_y=0.0)  # the same, by name
    score_fn = pigdm(score_fn, sde, operator, y, sigma_y=0.0, schedule="signal")  # weight m^2/(m^2+s^2)

Each is a `jax.tree_util.Partial` whose leaves are the given score function's (network weights), the
labels or the measurement, and the weight: a jitted sampler compiles once per kind of guidance.

Posterior sampling needs p_t(y | x_t) = int p(y | x_0) p(x_0 | x_t) dx_0, intractable for a learnt prior. Both
methods replace p(x_0 | x_t) by a distribution around Tweedie's denoised estimate x0(x_t) = E[x_0 | x_t]
(score.data_prediction) and differentiate through x0 (one vector-Jacobian product of the score):
  - DPS (Chung et al., 2023): a point mass at x0, so p_t(y | x_t) ~ N(y; A x0, sigma_y^2 I);
  - PiGDM (Song et al., 2023): N(x0, r_t^2 I) with r_t^2 the posterior variance of data N(mu, data_std^2 I),
    so p_t(y | x_t) ~ N(y; A x0, r_t^2 A A^T + sigma_y^2 I). For such Gaussian data this is exact: with the
    exact prior score and weight 1, PiGDM's score is the exact posterior score.
With a learnt score, x0(x_t) = (x_t + s^2 score) / m carries 1/m times the score's error, and so does the
guidance term: near t = T (m(T) = 0.007 for the VP SDE) it explodes and the samplers diverge. The weight
schedule 'signal', w(t) = m^2 / (m^2 + s^2), turns the term off where x_t holds no signal (`SCHEDULES`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from score_sde.conditional.classifier import check_labels
from score_sde.conditional.operators import LinearOperator, NoPseudoInverse
from score_sde.registry import Registry
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array
# log_prob_fn(x, t, y) -> log p_t(y | x) (B,): a time-dependent classifier, x (B, ...), t (B,), labels y (B,).
LogProbFn = Callable[[Array, Array, Array], Array]

GUIDANCE: Registry[Callable[..., Partial]] = Registry("posterior-sampling guidance")
# ``@register_guidance("name")``: f(score_fn, sde, operator, y, *, sigma_y, weight, schedule) -> score_fn
register_guidance = GUIDANCE.register


def _classifier_guided(score_fn, log_prob_fn, labels, weight, x, t):
    grad = jax.grad(lambda x: jnp.sum(log_prob_fn(x, t, labels)))(x)  # examples are independent: per-example grads
    return score_fn(x, t) + weight * grad


def classifier_guided(
    score_fn: ScoreFn, log_prob_fn: LogProbFn, labels, *, weight: float = 1.0, num_classes: int | None = None
) -> Partial:
    """score(x, t) + weight grad_x log p_t(labels | x) (Section 5 and Appendix I.4 of the paper).

    labels (B,) int, one per example of the batch the sampler draws, in [0, num_classes) (default: the classes of
    a network classifier, `classifier.network_log_prob_fn`; a label outside them would give NaN log-probabilities
    and no guidance). weight 1 samples the exact conditional p_t(x | y) when score and classifier are exact; larger
    weights sharpen it (classifier guidance of Dhariwal & Nichol, 2021, samples p(x) p(y | x)^weight,
    renormalised).
    """
    if num_classes is None:
        num_classes = getattr(getattr(log_prob_fn, "func", None), "num_classes", None)
    if num_classes is not None:
        labels = check_labels(labels, int(num_classes))
    labels = jnp.asarray(labels, jnp.int32)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (batch,) class indices, got shape {labels.shape}")
    return Partial(_classifier_guided, as_pytree(score_fn), as_pytree(log_prob_fn), labels, jnp.float32(weight))


def _classifier_free(score_fn, null, weight, t_lo, t_hi, labels, x, t):
    b = x.shape[0]

    def pair(a):  # (B, ...) -> (2B, ...) with rows 2b, 2b + 1 from row b: each device keeps its rows
        return jnp.stack([a, a], axis=1).reshape((2 * b,) + a.shape[1:])

    ys = jnp.stack([labels, jnp.full_like(labels, null)], axis=1).reshape(2 * b)
    both = score_fn(pair(x), pair(t), ys).reshape((b, 2) + x.shape[1:])
    conditional, unconditional = both[:, 0], both[:, 1]
    w = jnp.where((t >= t_lo) & (t <= t_hi), weight, 0.0)
    return conditional + batch_mul(w, conditional - unconditional)


def _conditional(score_fn, labels, x, t):
    return score_fn(x, t, labels)


def classifier_free_guided(
    score_fn: Callable,
    sde: SDE,
    labels,
    *,
    num_classes: int,
    weight: float = 0.0,
    interval: tuple[float, float] | None = None,
) -> Partial:
    """Classifier-free guidance (Ho & Salimans, 2022): score_fn(x, t) = (1 + w) s(x, t, y) - w s(x, t, null) of a
    class-conditional score ``score_fn(x, t, y)`` (a network trained with label dropout, score.get_score_fn; or
    analytic.class_score_fn), y = ``labels`` (B,) in [0, num_classes), null = num_classes.

    w = ``weight``: 0 is the conditional model exactly (then one network call of batch B); w > 0 samples a sharper
    law. Otherwise the conditional and unconditional scores come from one network call of batch 2B. ``interval``
    (t_lo, t_hi) within [eps, T] of ``sde`` applies the guidance only for t in it, the conditional score outside
    (guidance in a limited interval, Kynkaanniemi et al., 2024).
    """
    labels = jnp.asarray(check_labels(labels, int(num_classes), "the model"))
    if labels.ndim != 1:
        raise ValueError(f"labels must be (batch,) class indices, got shape {labels.shape}")
    if not np.isfinite(weight):
        raise ValueError(f"the guidance weight must be finite, got {weight}")
    if interval is None:
        t_lo, t_hi = 0.0, sde.T
    else:
        t_lo, t_hi = (float(v) for v in interval)
        eps = sde.sampling_eps
        if not eps <= t_lo <= t_hi <= sde.T:
            raise ValueError(
                f"the guidance interval [{t_lo}, {t_hi}] must lie within [eps, T] = [{eps}, {sde.T}] (t_lo <= t_hi)"
            )
    if weight == 0:
        return Partial(_conditional, as_pytree(score_fn), labels)
    return Partial(
        _classifier_free,
        as_pytree(score_fn),
        int(num_classes),
        jnp.float32(weight),
        jnp.float32(t_lo),
        jnp.float32(t_hi),
        labels,
    )


def _check_measurement(operator: LinearOperator, y) -> None:
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"expected a LinearOperator (score_sde.conditional.operators), got {type(operator).__name__}")
    if operator.per_example is not None:
        name, shape = operator.per_example
        if shape[0] not in (1, np.shape(y)[0]):
            raise ValueError(
                f"the {name} has shape {shape} and the measurement y {tuple(np.shape(y))}: their batches ({shape[0]}, "
                f"{np.shape(y)[0]}) differ; give one {name} per measurement, or one for all (batch 1)"
            )
    want = jax.eval_shape(operator.A, jax.ShapeDtypeStruct((np.shape(y)[0], *operator.in_shape), jnp.float32)).shape
    if tuple(np.shape(y)) != tuple(want):
        raise ValueError(
            f"the measurement y has shape {tuple(np.shape(y))}, but the {operator.name} operator gives {tuple(want)} "
            f"for images of shape {operator.in_shape}"
        )


def _denoised(score_fn, sde: SDE, t: Array):
    """x -> (x0(x, t), score(x, t)): Tweedie's estimate and the score it came from."""
    mean_coeff, std = sde.marginal_coeffs(t)

    def fn(x):
        score = score_fn(x, t)
        return batch_mul(1.0 / mean_coeff, x + batch_mul(std**2, score)), score

    return fn


# Weight schedules w(t) multiplying a posterior-sampling guidance term: fn(sde, t) -> (B,).
SCHEDULES: Registry[Callable[[SDE, Array], Array]] = Registry("guidance weight schedule")


@SCHEDULES.register("constant")
def constant(sde: SDE, t: Array) -> Array:
    """w(t) = 1: the term as derived (PiGDM then exact for Gaussian data)."""
    return jnp.ones_like(t)


@SCHEDULES.register("signal")
def signal(sde: SDE, t: Array) -> Array:
    """w(t) = m^2 / (m^2 + s^2), the share of x_t's variance that is signal (for data of unit variance): 1 as
    t -> 0, vanishing as t -> T, where x0(x_t) is 1/m times the score's error and its Jacobian with it (a
    learnt score's guidance then explodes at t ~ T: 30 to 10^4 times the score on the digits model)."""
    mean_coeff, std = sde.marginal_coeffs(t)
    return mean_coeff**2 / (mean_coeff**2 + std**2)


def _schedule(name: str) -> Partial:
    return as_pytree(SCHEDULES.lookup(name))


def _dps(score_fn, sde, operator, y, sigma_y, weight, schedule, x, t):
    def log_likelihood(x):
        x0, score = _denoised(score_fn, sde, t)(x)
        return -0.5 * jnp.sum((y - operator.A(x0)) ** 2) / sigma_y**2, score

    grad, score = jax.grad(log_likelihood, has_aux=True)(x)
    return score + batch_mul(weight * schedule(sde, t), grad)


@register_guidance("dps")
def dps(
    score_fn: ScoreFn,
    sde: SDE,
    operator: LinearOperator,
    y,
    *,
    sigma_y: float,
    weight: float = 1.0,
    schedule: str = "constant",
) -> Partial:
    """Diffusion posterior sampling (Chung et al., 2023): score + weight grad_x log N(y; A x0(x), sigma_y^2 I)
    = score - weight grad_x ||y - A x0(x, t)||^2 / (2 sigma_y^2). Needs sigma_y > 0.

    Chung et al. take steps of zeta' / ||y - A x0|| times the gradient of the squared residual inside their
    DDPM loop; as a score, the step sizes are the sampler's, and `weight` scales the term instead (1 = the
    Gaussian likelihood approximation above), times the `schedule` w(t) ('constant' or 'signal', `SCHEDULES`).
    One score evaluation and one vector-Jacobian product per call.
    """
    _check_measurement(operator, y)
    if not sigma_y > 0:
        raise ValueError(
            f"dps needs the measurement noise sigma_y > 0 (its likelihood N(y; A x0, sigma_y^2)), got {sigma_y}"
        )
    return Partial(
        _dps,
        as_pytree(score_fn),
        sde,
        operator,
        jnp.asarray(y),
        jnp.float32(sigma_y),
        jnp.float32(weight),
        _schedule(schedule),
    )


def _pigdm(score_fn, sde, operator, y, sigma_y, weight, schedule, data_std, x, t):
    mean_coeff, std = sde.marginal_coeffs(t)
    x0, vjp, score = jax.vjp(_denoised(score_fn, sde, t), x, has_aux=True)
    r2 = data_std**2 * std**2 / (mean_coeff**2 * data_std**2 + std**2)  # Var[x_0 | x_t] of N(mu, data_std^2 I) data
    v = operator.gram_solve(y - operator.A(x0), r2, sigma_y**2)
    (grad,) = vjp(operator.At(v))
    return score + batch_mul(weight * schedule(sde, t), grad)


@register_guidance("pigdm")
def pigdm(
    score_fn: ScoreFn,
    sde: SDE,
    operator: LinearOperator,
    y,
    *,
    sigma_y: float,
    weight: float = 1.0,
    schedule: str = "constant",
    data_std: float = 1.0,
) -> Partial:
    """Pseudoinverse-guided diffusion (Song, Vahdat, Mardani & Kautz, 2023): score + weight w(t) g with
    g = (dx0/dx)^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0(x, t)),  r_t^2 = d^2 s^2 / (m^2 d^2 + s^2),
    d = data_std (1 as in the paper, for data of unit scale), m, s the SDE's perturbation coefficients, and
    w(t) the `schedule` ('constant' or 'signal', `SCHEDULES`).

    Exact for data N(mu, d^2 I) (then p(x_0 | x_t) is N(x0, r_t^2 I)). sigma_y may be 0 for operators that
    solve noiseless systems (masks, grey-scale, pooling; not the blur). One score evaluation and one
    vector-Jacobian product per call.
    """
    _check_measurement(operator, y)
    if sigma_y < 0 or data_std <= 0:
        raise ValueError(f"pigdm needs sigma_y >= 0 and data_std > 0, got sigma_y={sigma_y}, data_std={data_std}")
    if sigma_y == 0 and not operator.solves_noiseless:
        raise NoPseudoInverse(
            f"pigdm without measurement noise needs (A A^T)^-1, which the {operator.name} operator does not give "
            "(too ill-conditioned): give sigma_y > 0"
        )
    return Partial(
        _pigdm,
        as_pytree(score_fn),
        sde,
        operator,
        jnp.asarray(y),
        jnp.float32(sigma_y),
        jnp.float32(weight),
        _schedule(schedule),
        jnp.float32(data_std),
    )
