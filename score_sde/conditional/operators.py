"""Linear measurement operators y = A x + sigma_y n of the inverse problems (inpainting, colorization,
super-resolution, deblurring).

Every operator acts on a batch: x (B, *in_shape) -> y (B, *out_shape), and gives

    A(x)                  the measurement without noise
    At(y)                 the adjoint A^T, <A x, y> = <x, A^T y> for the Euclidean inner products
    gram_solve(v, a, b)   (a A A^T + b I)^-1 v for v in the range of A (PiGDM's likelihood covariance)
    pinv(y)               the Moore-Penrose pseudo-inverse A^+ y, where the operator has one
    project(x, y)         x + A^+ (y - A x): the point nearest x with A x' = y (the replacement method)
    measure(key, x, s)    A x + s n, n standard Gaussian noise in the range of A

All four ready operators have A A^T = c I on their range (orthogonal rows of equal norm), so A^+ = A^T / c and
A^+ A is the orthogonal projection onto the measured subspace: A is a mask in an orthogonal basis, the form
the paper's replacement method needs (Appendix I.2-I.3). The Gaussian blur has no usable pseudo-inverse (its
small singular values amplify any error) and solves (a A A^T + b I) v only for b > 0.

Operators are pytrees (a mask's array is a leaf, sizes are static), so they pass into jitted samplers.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# The official decoupled colour basis (controllable_generation.py's `M`): an orthogonal 3x3 matrix whose
# first column is (1, 1, 1) / sqrt(3), so the first decoupled channel is sqrt(3) times the grey image (the
# channel mean) and the other two are colour differences. The official code lists its entries to 8 digits;
# these are the exact values they round.
DECOUPLE = np.array(
    [
        [1 / math.sqrt(3), -math.sqrt(2 / 3), 0.0],
        [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
        [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)],
    ]
)


def decouple(x: Array) -> Array:
    """RGB images (..., 3) -> the decoupled colour basis (..., 3), channel 0 = sqrt(3) x grey."""
    return jnp.einsum("...i,ij->...j", x, jnp.asarray(DECOUPLE, x.dtype))


def couple(c: Array) -> Array:
    """The inverse of `decouple` (DECOUPLE is orthogonal: its inverse is its transpose)."""
    return jnp.einsum("...j,ij->...i", c, jnp.asarray(DECOUPLE, c.dtype))


class NoPseudoInverse(ValueError):
    """An operator without a usable pseudo-inverse was given to a method that needs one."""


class LinearOperator(abc.ABC):
    """A linear map of each example of a batch; subclasses are frozen dataclasses registered as pytrees."""

    name = "operator"
    # Whether gram_solve works with b = 0 (noiseless measurements); False where A A^T is ill-conditioned.
    solves_noiseless = True

    @property
    @abc.abstractmethod
    def in_shape(self) -> tuple[int, ...]:
        """The shape of one example x."""

    @abc.abstractmethod
    def A(self, x: Array) -> Array:
        """(B, *in_shape) -> (B, *out_shape)."""

    @abc.abstractmethod
    def At(self, y: Array) -> Array:
        """The adjoint: (B, *out_shape) -> (B, *in_shape)."""

    @abc.abstractmethod
    def gram_solve(self, v: Array, a, b) -> Array:
        """(a A A^T + b I)^-1 v for v (B, *out_shape) in the range of A; a, b scalars or (B,), a, b >= 0
        (b > 0 unless `solves_noiseless`)."""

    def pinv(self, y: Array) -> Array:
        """A^+ y (B, *in_shape): the least-norm x with A x = y, for y in the range of A."""
        raise NoPseudoInverse(f"the {self.name} operator has no pseudo-inverse")

    @property
    def has_pinv(self) -> bool:
        return type(self).pinv is not LinearOperator.pinv

    @property
    def per_example(self) -> tuple[str, tuple[int, ...]] | None:
        """(name, shape) of the array holding one entry per example (a mask's), whose batch must be the
        measurement's or 1; None for an operator that is the same for every example."""
        return None

    def project(self, x: Array, y: Array) -> Array:
        """x + A^+ (y - A x): x with its measured part replaced by the one y determines."""
        return x + self.pinv(y - self.A(x))

    def measure(self, key: Array, x: Array, sigma_y: float = 0.0) -> Array:
        """y = A x + sigma_y n with n ~ N(0, I) on the range of A."""
        y = self.A(x)
        return y + sigma_y * jax.random.normal(key, y.shape, y.dtype) if sigma_y else y


def _per_example(a, ndim: int) -> Array:
    """A scalar or a (B,) array, broadcastable against (B, ...) arrays of `ndim` dimensions."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim)) if a.ndim else a


def _static(**kwargs):
    return dataclasses.field(metadata=dict(static=True), **kwargs)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Mask(LinearOperator):
    """Inpainting and outpainting: A x = mask * x with mask (B or 1, *in_shape) in {0, 1}, 1 = known.

    The measurement has the image's shape with zeros where unknown; A = A^T = A^+ is the orthogonal
    projection onto the known pixels, and `project` writes the known pixels exactly (no arithmetic on them).
    """

    mask: Array
    name = "mask"

    @staticmethod
    def create(mask) -> Mask:
        m = np.asarray(mask)
        if m.ndim < 2:
            raise ValueError(f"a mask has shape (batch, ...), got {m.shape}")
        if not np.all((m == 0) | (m == 1)):
            raise ValueError("a mask holds only 0 (unknown) and 1 (known) values")
        return Mask(jnp.asarray(m, jnp.float32))

    @property
    def in_shape(self):
        return tuple(self.mask.shape[1:])

    @property
    def per_example(self):
        return "mask", tuple(self.mask.shape)

    def A(self, x):
        return self.mask * x

    def At(self, y):
        return self.mask * y

    def gram_solve(self, v, a, b):
        return self.mask * v / (_per_example(a, v.ndim) + _per_example(b, v.ndim))

    def pinv(self, y):
        return self.mask * y

    def project(self, x, y):
        return jnp.where(self.mask > 0, y, x)

    def measure(self, key, x, sigma_y=0.0):
        noise = sigma_y * jax.random.normal(key, x.shape, x.dtype) if sigma_y else 0.0
        return self.mask * (x + noise)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GreyScale(LinearOperator):
    """Colorization: the grey image A x = mean over the channels of RGB images (B, ..., 3) -> (B, ..., 1).

    Its row space is the first channel of the official decoupled colour basis (`DECOUPLE`): A x =
    decouple(x)[..., :1] / sqrt(3), A A^T = I / 3, and `project` replaces that channel, as the official
    colorizer does.
    """

    shape: tuple[int, ...] = _static()
    name = "grey-scale"

    def __post_init__(self):
        if len(self.shape) < 1 or self.shape[-1] != 3:
            raise ValueError(f"grey-scale needs RGB images (..., 3), got examples of shape {self.shape}")

    @property
    def in_shape(self):
        return tuple(self.shape)

    def A(self, x):
        return decouple(x)[..., :1] / np.sqrt(3.0)

    def At(self, y):
        return jnp.broadcast_to(y / 3.0, y.shape[:-1] + (3,))

    def gram_solve(self, v, a, b):
        return v / (_per_example(a, v.ndim) / 3.0 + _per_example(b, v.ndim))

    def pinv(self, y):
        return jnp.broadcast_to(y, y.shape[:-1] + (3,))

    def project(self, x, y):
        c = decouple(x)
        return couple(jnp.concatenate([np.sqrt(3.0) * y, c[..., 1:]], axis=-1))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AveragePool(LinearOperator):
    """Super-resolution by `factor`: the mean of each factor x factor block of images (B, H, W, C) ->
    (B, H / factor, W / factor, C). A^T spreads each value over its block divided by factor^2, A^+ repeats it."""

    shape: tuple[int, ...] = _static()
    factor: int = _static(default=2)
    name = "average-pool"

    def __post_init__(self):
        if len(self.shape) != 3 or self.factor < 1 or self.shape[0] % self.factor or self.shape[1] % self.factor:
            raise ValueError(
                f"average pooling by {self.factor} needs images (H, W, C) with H and W divisible by {self.factor}, "
                f"got {self.shape}"
            )

    @property
    def in_shape(self):
        return tuple(self.shape)

    def A(self, x):
        b, h, w, c = x.shape
        k = self.factor
        return x.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))

    def pinv(self, y):
        return jnp.repeat(jnp.repeat(y, self.factor, axis=1), self.factor, axis=2)

    def At(self, y):
        return self.pinv(y) / self.factor**2

    def gram_solve(self, v, a, b):
        return v / (_per_example(a, v.ndim) / self.factor**2 + _per_example(b, v.ndim))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianBlur(LinearOperator):
    """Deblurring: circular convolution of each channel of images (B, H, W, C) with a Gaussian of standard
    deviation `sigma` pixels (truncated at 3 sigma, normalised to sum 1). Periodic boundaries make A A^T
    diagonal in the Fourier basis, so A^T and (a A A^T + b I)^-1 are exact (through FFTs)."""

    shape: tuple[int, ...] = _static()
    sigma: float = _static(default=1.0)
    name = "Gaussian blur"
    solves_noiseless = False

    def __post_init__(self):
        if len(self.shape) != 3 or self.sigma <= 0:
            raise ValueError(f"a Gaussian blur needs images (H, W, C) and sigma > 0, got {self.shape}, {self.sigma}")

    @property
    def in_shape(self):
        return tuple(self.shape)

    def transfer(self) -> np.ndarray:
        """The kernel's discrete Fourier transform (H, W), real (the kernel is symmetric)."""
        h, w, _ = self.shape
        radius = int(math.ceil(3 * self.sigma))
        taps = np.arange(-radius, radius + 1)
        g = np.exp(-0.5 * (taps / self.sigma) ** 2)
        kernel = np.zeros((h, w))
        for i, gi in zip(taps, g):
            for j, gj in zip(taps, g):
                kernel[i % h, j % w] += gi * gj
        return np.real(np.fft.fft2(kernel / kernel.sum()))

    def _filter(self, x, response):
        f = jnp.fft.fft2(x, axes=(1, 2)) * jnp.asarray(response, jnp.complex64)[None, :, :, None]
        return jnp.real(jnp.fft.ifft2(f, axes=(1, 2))).astype(x.dtype)

    def A(self, x):
        return self._filter(x, self.transfer())

    def At(self, y):
        return self._filter(y, self.transfer())

    def gram_solve(self, v, a, b):
        k2 = jnp.asarray(self.transfer() ** 2, jnp.float32)[None, :, :, None]
        f = jnp.fft.fft2(v, axes=(1, 2)) / (_per_example(a, 4) * k2 + _per_example(b, 4))
        return jnp.real(jnp.fft.ifft2(f, axes=(1, 2))).astype(v.dtype)


def matrix(operator: LinearOperator) -> np.ndarray:
    """The dense matrix (prod(out_shape), prod(in_shape)) of an operator on single examples (small sizes only;
    for a batch-dependent mask, that of its first example)."""
    d = int(np.prod(operator.in_shape))
    basis = jnp.eye(d, dtype=jnp.float32).reshape((d, *operator.in_shape))
    if isinstance(operator, Mask):
        operator = Mask(operator.mask[:1])
    columns = jax.vmap(lambda e: operator.A(e[None]).reshape(-1))(basis)
    return np.asarray(columns, np.float64).T
