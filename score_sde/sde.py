"""Forward SDEs dx = f(x, t) dt + g(t) dw of Song et al. (2021), their reverse SDE and probability-flow ODE.

A new SDE is one class: subclass `SDE` (a frozen dataclass) and implement `sde`, `marginal_coeffs`,
`prior_sampling` and `prior_logp`; `marginal_prob`, the Euler-Maruyama `discretize`, `reverse` and every
sampler and the likelihood then work unchanged. Decorated with `@register_sde("name")`, it is also what
`config.training.sde = "name"` builds, its fields read from `config.model`. SDE objects are immutable and
hashable, and registered as pytrees without leaves, so they pass straight into jitted functions (static there).

Shapes: x is (B, ...), t is (B,) time in [0, T]; per-example coefficients (diffusion, std, ...) are (B,).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.registry import Registry

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def batch_mul(a: Array, x: Array) -> Array:
    """Multiplies per-example coefficients a (B,) into x (B, ...)."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (jnp.ndim(x) - a.ndim)) * x


def _isotropic_gaussian_logp(z: Array, std: float) -> Array:
    """log N(z; 0, std^2 I) per example, z (B, ...) -> (B,)."""
    d = np.prod(z.shape[1:])
    sq = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1)
    return -0.5 * d * np.log(2 * np.pi * std**2) - 0.5 * sq / std**2


_SDES: Registry[type[SDE]] = Registry("SDE")
register_sde = _SDES.register  # class decorator: ``config.training.sde = name`` builds this SDE


class SDE(abc.ABC):
    """A forward SDE on [0, T] with an affine-Gaussian perturbation kernel p_t(x_t | x_0).

    Subclasses are frozen dataclasses with at least the field ``N`` (number of discretisation steps).
    """

    N: int
    T: ClassVar[float] = 1.0
    # Smallest time the samplers integrate to by default (the official run_lib's `sampling_eps`).
    sampling_eps: ClassVar[float] = 1e-3

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Every SDE class is a leafless pytree: jit treats an SDE argument as static (hashed by value).
        jax.tree_util.register_static(cls)

    @abc.abstractmethod
    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Drift f(x, t) shaped like x and diffusion g(t) shaped (B,)."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: Array) -> tuple[Array, Array]:
        """Perturbation kernel p_t(x_t | x_0) = N(m(t) x_0, s(t)^2 I): returns (m(t), s(t)), each (B,)."""

    @abc.abstractmethod
    def prior_sampling(self, key: Array, shape: tuple[int, ...]) -> Array:
        """A sample of shape `shape` from the prior p_T."""

    @abc.abstractmethod
    def prior_logp(self, z: Array) -> Array:
        """log p_T(z) per example, z (B, ...) -> (B,)."""

    @classmethod
    def from_config(cls, config) -> SDE:
        """The SDE with each dataclass field read from the config.model entry of the same name (`N` from
        `num_scales`); fields config.model lacks keep their defaults."""
        kwargs = {}
        for field in dataclasses.fields(cls):
            key = "num_scales" if field.name == "N" else field.name
            if key in config.model:
                value = config.model[key]
                # Configs write 50 for 50.0: cast numbers to the field default's type (int or float).
                kwargs[field.name] = type(field.default)(value) if isinstance(field.default, int | float) else value
        return cls(**kwargs)

    def log_snr(self, t: Array) -> Array:
        """Half log signal-to-noise ratio lambda(t) = log(m(t) / s(t)) (B,), decreasing in t (DPM-Solver's
        lambda_t; EDM's sigma = s / m = exp(-lambda)). The fast samplers see an SDE through m, s and lambda only."""
        mean_coeff, std = self.marginal_coeffs(t)
        return jnp.log(mean_coeff) - jnp.log(std)

    def t_of_log_snr(self, log_snr: Array) -> Array:
        """The inverse of `log_snr`: the time t in [0, T] with lambda(t) = log_snr, elementwise (any shape).

        Generic: bisection on [0, T] (lambda decreases in t), in the dtype of `log_snr`; values beyond
        lambda(0) or lambda(T) give 0 or T. VE, VP and sub-VP override it in closed form.
        """
        log_snr = jnp.asarray(log_snr)
        flat = log_snr.reshape(-1)

        def halve(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > flat  # lambda(mid) still above the target: t lies beyond mid
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        lo, hi = jnp.zeros_like(flat), jnp.full_like(flat, self.T)
        lo, hi = jax.lax.fori_loop(0, 2 * jnp.finfo(flat.dtype).nmant + 8, halve, (lo, hi))
        return (0.5 * (lo + hi)).reshape(log_snr.shape)

    def marginal_prob(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Mean m(t) x shaped like x and std s(t) shaped (B,) of p_t(x_t | x_0 = x)."""
        mean_coeff, std = self.marginal_coeffs(t)
        return batch_mul(mean_coeff, x), std

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """One step x_{i+1} = x_i + f_i + G_i z of the forward chain; Euler-Maruyama with dt = T/N."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * np.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with `probability_flow`, the probability-flow ODE) given a score."""
        return ReverseSDE(self, score_fn, probability_flow)

    def _timestep(self, t: Array) -> Array:
        """Index i of the discrete chain at time t, as the official code truncates t (N-1) / T."""
        return (t * (self.N - 1) / self.T).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """dx = [f - g^2 score] dt + g dw-bar  (or, for the probability-flow ODE, dx = [f - g^2 score / 2] dt).

    Time runs backwards: the samplers step from T to eps with negative dt.
    """

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def T(self) -> float:
        return self.forward.T

    def _score_weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        drift, diffusion = self.forward.sde(x, t)
        drift = drift - batch_mul(diffusion**2, self.score_fn(x, t)) * self._score_weight()
        return drift, jnp.zeros_like(diffusion) if self.probability_flow else diffusion

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Reverse of the forward chain's step: x_i = x_{i+1} - rev_f + rev_G z."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_mul(G**2, self.score_fn(x, t)) * self._score_weight()
        return rev_f, jnp.zeros_like(G) if self.probability_flow else G


@register_sde("vesde")
@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance exploding: dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw,
    sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    As in the paper, p_t(x_t | x_0) = N(x_0, sigma(t)^2 I) (data taken as already perturbed by sigma_min at
    t = 0). Its discrete chain is SMLD's: noise levels `discrete_sigmas`, increasing with the index.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    sampling_eps: ClassVar[float] = 1e-5

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.N < 1:
            raise ValueError(f"VESDE needs N >= 1 discretisation steps, got N={self.N}")

    @property
    def discrete_sigmas(self) -> Array:
        """SMLD's noise levels sigma_0 < ... < sigma_{N-1}, geometric from sigma_min to sigma_max, (N,)."""
        return jnp.asarray(np.geomspace(self.sigma_min, self.sigma_max, self.N), jnp.float32)

    def _sigma(self, t: Array) -> Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x, t):
        diffusion = self._sigma(t) * np.sqrt(2 * np.log(self.sigma_max / self.sigma_min))
        return jnp.zeros_like(x), diffusion

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), self._sigma(t)

    def t_of_log_snr(self, log_snr):
        """lambda = -log sigma(t) = -log sigma_min - t log(sigma_max / sigma_min)."""
        return (-jnp.asarray(log_snr) - np.log(self.sigma_min)) / np.log(self.sigma_max / self.sigma_min)

    def prior_sampling(self, key, shape):
        return self.sigma_max * jax.random.normal(key, shape)

    def prior_logp(self, z):
        return _isotropic_gaussian_logp(z, self.sigma_max)

    def discretize(self, x, t):
        """SMLD: x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z, with sigma_{-1} = 0."""
        i = self._timestep(t)
        sigmas = self.discrete_sigmas
        sigma = sigmas[i]
        adjacent_sigma = jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent_sigma**2)


@dataclasses.dataclass(frozen=True)
class _LinearBetaSDE(SDE):
    """Shared by VP and sub-VP: beta(t) = beta_min + t (beta_max - beta_min) and the DDPM betas."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000

    def __post_init__(self):
        if not 0 <= self.beta_min <= self.beta_max or self.beta_max <= 0:
            raise ValueError(
                f"{type(self).__name__} needs 0 <= beta_min <= beta_max, beta_max > 0; "
                f"got {self.beta_min}, {self.beta_max}"
            )
        if self.N < 2:
            raise ValueError(f"{type(self).__name__} needs N >= 2 discretisation steps, got N={self.N}")

    def _beta(self, t: Array) -> Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t: Array) -> Array:
        """log m(t) = -1/2 int_0^t beta(s) ds."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _t_of_log_mean_coeff(self, log_m: Array) -> Array:
        """Solves log m(t) = log_m for t >= 0: (beta_max - beta_min) t^2 / 4 + beta_min t / 2 = -log_m, with the
        cancellation-free root 2c / (b + sqrt(b^2 + 4ac)) (also right for beta_max = beta_min)."""
        a, b, c = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min, -log_m
        return 2.0 * c / (b + jnp.sqrt(b**2 + 4.0 * a * c))

    # DDPM's discrete chain: beta_i = beta(i / (N-1)) / N, i = 0 .. N-1 (float64 tables, stored float32).
    @property
    def discrete_betas(self) -> Array:
        return jnp.asarray(self._betas64(), jnp.float32)

    @property
    def alphas(self) -> Array:
        return jnp.asarray(1.0 - self._betas64(), jnp.float32)

    @property
    def alphas_cumprod(self) -> Array:
        return jnp.asarray(np.cumprod(1.0 - self._betas64()), jnp.float32)

    @property
    def sqrt_alphas_cumprod(self) -> Array:
        return jnp.asarray(np.sqrt(np.cumprod(1.0 - self._betas64())), jnp.float32)

    @property
    def sqrt_1m_alphas_cumprod(self) -> Array:
        return jnp.asarray(np.sqrt(1.0 - np.cumprod(1.0 - self._betas64())), jnp.float32)

    def _betas64(self) -> np.ndarray:
        return np.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    def prior_sampling(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_logp(self, z):
        return _isotropic_gaussian_logp(z, 1.0)


@register_sde("vpsde")
@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBetaSDE):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw; p_t(x_t | x_0) = N(m x_0, (1 - m^2) I).

    Its discrete chain is DDPM's with betas `discrete_betas`.
    """

    def sde(self, x, t):
        beta = self._beta(t)
        return -0.5 * batch_mul(beta, x), jnp.sqrt(beta)

    def marginal_coeffs(self, t):
        log_m = self._log_mean_coeff(t)
        return jnp.exp(log_m), jnp.sqrt(-jnp.expm1(2.0 * log_m))

    def t_of_log_snr(self, log_snr):
        """lambda = log m - log(1 - m^2) / 2, so log m = -log(1 + exp(-2 lambda)) / 2."""
        return self._t_of_log_mean_coeff(-0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(log_snr)))

    def discretize(self, x, t):
        """DDPM: x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z."""
        i = self._timestep(t)
        beta = self.discrete_betas[i]
        return batch_mul(jnp.sqrt(1.0 - beta), x) - x, jnp.sqrt(beta)


@register_sde("subvpsde")
@dataclasses.dataclass(frozen=True)
class subVPSDE(_LinearBetaSDE):
    """Sub-VP: dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw;
    p_t(x_t | x_0) = N(m x_0, (1 - m^2)^2 I), whose variance is below the VP SDE's at every t."""

    def sde(self, x, t):
        beta = self._beta(t)
        discount = -jnp.expm1(4.0 * self._log_mean_coeff(t))  # 1 - exp(-2 int_0^t beta)
        return -0.5 * batch_mul(beta, x), jnp.sqrt(beta * discount)

    def marginal_coeffs(self, t):
        log_m = self._log_mean_coeff(t)
        return jnp.exp(log_m), -jnp.expm1(2.0 * log_m)

    def t_of_log_snr(self, log_snr):
        """lambda = log m - log(1 - m^2), so exp(-lambda) = 1/m - m = 2 sinh(-log m):
        log m = -asinh(exp(-lambda) / 2)."""
        return self._t_of_log_mean_coeff(-jnp.arcsinh(0.5 * jnp.exp(-jnp.asarray(log_snr))))


@register_sde("edmsde")
@dataclasses.dataclass(frozen=True)
class EDMSDE(SDE):
    """EDM's SDE (Karras et al. 2022, eq. 4 with sigma(t) = t and no scaling): dx = sqrt(2 t) dw on
    [0, T = sigma_max], p_t(x_t | x_0) = N(x_0, t^2 I), so time is the noise level. Its probability-flow ODE
    is EDM's eq. 3, dx/dt = -t score = (x - D(x; t)) / t: the Euler and Heun steps in t are EDM's Algorithm 1.
    Unlike the paper's VE SDE, the data is not perturbed at t = 0; the samplers stop at t = sigma_min
    (EDM's CIFAR-10 settings: sigma_min = 0.002, sigma_max = 80, the defaults)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    N: int = 1000

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"EDMSDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.N < 1:
            raise ValueError(f"EDMSDE needs N >= 1 discretisation steps, got N={self.N}")

    @property
    def T(self) -> float:
        return float(self.sigma_max)

    @property
    def sampling_eps(self) -> float:
        return float(self.sigma_min)

    def sde(self, x, t):
        return jnp.zeros_like(x), jnp.sqrt(2.0 * t)

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), t

    def t_of_log_snr(self, log_snr):
        """lambda = -log t."""
        return jnp.exp(-jnp.asarray(log_snr))

    def discretize(self, x, t):
        """x_{i+1} = x_i + sqrt(t^2 - (t - T/N)^2) z: the exact variance added over the step to t (as SMLD's)."""
        return jnp.zeros_like(x), jnp.sqrt(t**2 - jnp.maximum(t - self.T / self.N, 0.0) ** 2)

    def prior_sampling(self, key, shape):
        return self.sigma_max * jax.random.normal(key, shape)

    def prior_logp(self, z):
        return _isotropic_gaussian_logp(z, self.sigma_max)


def get_sde(config) -> SDE:
    """The SDE registered as `config.training.sde` ('vesde', 'vpsde', 'subvpsde', 'edmsde' or one added with
    `register_sde`), built by its `from_config` from config.model, as the official run_lib builds it."""
    return _SDES.lookup(config.training.sde, "config.training.sde").from_config(config)


def check_time(t, sde: SDE, eps: float = 0.0, name: str = "t") -> None:
    """Raises ValueError if a concrete `t` lies outside [eps, sde.T]; traced values are not checked."""
    if isinstance(t, jax.core.Tracer):
        return
    t = np.asarray(t)
    if t.size and (t.min() < eps or t.max() > sde.T):
        raise ValueError(f"{name} must lie in [{eps}, {sde.T}], got values in [{t.min()}, {t.max()}]")
