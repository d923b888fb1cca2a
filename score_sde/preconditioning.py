"""EDM's preconditioning (Karras, Aittala, Aila & Laine, NeurIPS 2022, Table 1 and eq. 7): a network F becomes the
denoiser

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),              c_noise = ln(sigma) / 4,

chosen so that, for data of standard deviation sigma_data, the network's input c_in x and its training target
(y - c_skip x) / c_out have unit variance at every sigma (EDM's Appendix B.6). x is the variance-exploding form
x_t / m(t) of any SDE's state and sigma = s(t) / m(t), so one denoiser serves VE, VP, sub-VP, EDM's own SDE and
any new one: score.py turns it into the score, losses.py trains it with EDM's loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.sde import batch_mul

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EDMPreconditioning:
    """EDM's c_skip, c_out, c_in, c_noise for data of standard deviation ``sigma_data``; static, hashable.

    ``log_labels``: the network embeds the logarithm of its noise labels (NCSN++'s Gaussian Fourier embedding
    of log sigma), so it is given exp(c_noise) and embeds c_noise, as EDM's networks do; others get c_noise.
    """

    sigma_data: float = 0.5
    log_labels: bool = False

    def __post_init__(self):
        if not self.sigma_data > 0:
            raise ValueError(
                f"EDM's preconditioning needs sigma_data > 0 (config.model.sigma_data), got {self.sigma_data}"
            )

    def coefficients(self, sigma: Array) -> tuple[Array, Array, Array, Array]:
        """(c_skip, c_out, c_in, c_noise), each shaped like sigma (B,)."""
        sd2 = self.sigma_data**2
        norm = jnp.sqrt(sigma**2 + sd2)
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data / norm, 1.0 / norm, jnp.log(sigma) / 4.0

    def denoise(self, model_fn: Callable, x: Array, sigma: Array, class_labels: Array | None = None) -> Array:
        """D(x; sigma) shaped like x (B, ...) for noise levels sigma (B,), from ``model_fn(x, labels[,
        class_labels])`` (the network F)."""
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        labels = jnp.exp(c_noise) if self.log_labels else c_noise
        inputs = batch_mul(c_in, x)
        out = model_fn(inputs, labels) if class_labels is None else model_fn(inputs, labels, class_labels)
        return batch_mul(c_skip, x) + batch_mul(c_out, out)
