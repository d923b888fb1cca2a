"""The paper's replacement method for inpainting and colorization (Appendix I.2-I.3), for any predictor,
corrector and SDE, and any operator with a pseudo-inverse.

With noiseless measurements y = A x_0 and the perturbation x_t = m(t) x_0 + s(t) z, the measured part of x_t,
P x_t with P = A^+ A, is m(t) A^+ y + s(t) P z: its law p_t(y_t | y) is known. After every predictor step and
every corrector step the measured part of the sample is replaced by a draw of it,

    x <- x + A^+ (m(t) y + s(t) A z - A x),   z ~ N(0, I)

(for a mask: known pixels <- m(t) y + s(t) z; for the grey-scale operator: the first channel of the decoupled
colour basis), and the unmeasured part evolves under the unconditional score. At the end the measured part is
set to y itself. Exact where the data law factorises into measured and unmeasured parts; an approximation
otherwise (it ignores what the measured part says about the rest through p_t). The prior sample at T is left
as it is: its measured part is as far from p_T(y_T | y) as the prior is from p_T.

The time t of the replacement is the time the step reached: the corrector's own time, and for a predictor
from t the time t - T/N it stepped to (clipped at 0), where the sample now lives. The official
controllable_generation.py uses the step's start time t for both, so after each predictor step its
measured part carries the noise of one step earlier than the rest; it also builds the returned mean from the
noisy sample x instead of the step's mean. Neither is kept here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from score_sde.conditional.guidance import _check_measurement
from score_sde.conditional.operators import LinearOperator, NoPseudoInverse
from score_sde.sampling import correctors, get_corrector, get_predictor, pc_sampler
from score_sde.score import as_pytree
from score_sde.sde import SDE, ScoreFn, batch_mul

Array = jax.Array


def _replace(operator, y, sde, key, x, x_mean, t):
    mean_coeff, std = sde.marginal_coeffs(t)
    y_mean = batch_mul(mean_coeff, y)
    y_t = y_mean + batch_mul(std, operator.A(jax.random.normal(key, x.shape, x.dtype)))
    return operator.project(x, y_t), operator.project(x_mean, y_mean)


def _after_predictor(predictor, operator, y, key, x, t, *, sde, score_fn, **options):
    step_key, noise_key = jax.random.split(key)
    x, x_mean = predictor(step_key, x, t, sde=sde, score_fn=score_fn, **options)
    return _replace(operator, y, sde, noise_key, x, x_mean, jnp.maximum(t - sde.T / sde.N, 0.0))


def _after_corrector(corrector, operator, y, key, x, t, *, sde, score_fn, **options):
    step_key, noise_key = jax.random.split(key)
    x, x_mean = corrector(step_key, x, t, sde=sde, score_fn=score_fn, **options)
    return _replace(operator, y, sde, noise_key, x, x_mean, t)


def _check(operator: LinearOperator, y) -> None:
    _check_measurement(operator, y)
    if not operator.has_pinv:
        raise NoPseudoInverse(
            f"the replacement method needs an operator with a pseudo-inverse (a mask in some orthogonal basis); "
            f"the {operator.name} operator has none: use a posterior-sampling guidance ('dps' or 'pigdm')"
        )


def replaced_predictor(predictor: str | Callable, operator: LinearOperator, y) -> Partial:
    """The predictor (a registered name or function) followed by the replacement of the measured part, at
    the time the step reached. A predictor for `pc_sampler`."""
    _check(operator, y)
    predictor = get_predictor(predictor) if isinstance(predictor, str) else predictor
    return Partial(_after_predictor, as_pytree(predictor), operator, jnp.asarray(y))


def replaced_corrector(corrector: str | Callable, operator: LinearOperator, y) -> Partial | Callable:
    """The corrector followed by the replacement of the measured part at its time; corrector 'none' stays
    itself (no step, nothing to replace)."""
    _check(operator, y)
    corrector = get_corrector(corrector) if isinstance(corrector, str) else corrector
    if corrector is correctors.none:
        return corrector
    return Partial(_after_corrector, as_pytree(corrector), operator, jnp.asarray(y))


def replacement_sampler(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    operator: LinearOperator,
    y,
    *,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "langevin",
    **options,
) -> tuple[Array, Array]:
    """Solves y = A x (noiseless) by the replacement method with `pc_sampler` (its `options`: snr, n_steps,
    probability_flow, denoise, eps, sharding). y (B, *out_shape); returns (x (B, *operator.in_shape), nfe)
    with A x = y up to float round-off (a mask's known pixels exactly)."""
    y = jnp.asarray(y)
    shape = (y.shape[0], *operator.in_shape)
    x, nfe = pc_sampler(
        key,
        score_fn,
        sde,
        shape,
        predictor=replaced_predictor(predictor, operator, y),
        corrector=replaced_corrector(corrector, operator, y),
        **options,
    )
    return operator.project(x, y), nfe
