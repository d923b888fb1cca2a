"""The noise-conditional classifier as log_prob_fn(x, t, y): the official input conventions (VE, data in [0, 1]),
their variance-exploding form for other SDEs, and the classifier config that converts the released checkpoint."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import convert
from score_sde.conditional import InputConventions, classifier_guided, network_log_prob_fn
from score_sde.conditional.classifier import check_compatible
from score_sde.config import load_config
from score_sde.models.wideresnet import cifar10_classifier_config, standardize_cifar10
from score_sde.sde import VESDE, VPSDE


def test_official_inputs_for_the_ve_sde():
    """VE, data in [0, 1]: the network sees the noisy image standardised by the CIFAR-10 statistics and the
    noise level sigma(t) = sde.marginal_prob(x, t)[1], as the official get_logit_fn and controllable_generation."""
    config = load_config("configs/classifier/cifar10_wideresnet.py")
    conventions = InputConventions.from_config(config)
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    t = jnp.array([1e-5, 0.1, 0.5, 1.0])
    inputs, sigmas = conventions.inputs(x, t)
    np.testing.assert_allclose(inputs, standardize_cifar10(x), rtol=1e-6)
    np.testing.assert_allclose(sigmas, VESDE(sigma_min=0.01, sigma_max=50.0).marginal_prob(x, t)[1], rtol=1e-6)


def test_other_sdes_and_ranges_see_the_variance_exploding_form():
    """x_t = m x_0 + s z of the VP SDE on [-1, 1] data is shown as the [0, 1] image (x_t / m + 1) / 2 with noise
    s / (2 m): the input a VE-perturbed [0, 1] image of the same signal-to-noise ratio would give."""
    config = load_config("configs/classifier/digits.py")
    conventions = InputConventions.from_config(config)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    t = jnp.array([0.01, 0.4, 0.9])
    m, s = VPSDE(N=500).marginal_coeffs(t)
    inputs, sigmas = conventions.inputs(x, t)
    np.testing.assert_allclose(inputs, ((x / m[:, None, None, None] + 1) / 2 - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigmas, s / (2 * m), rtol=1e-6)


class _Logits(nn.Module):
    """A stand-in classifier network (logits of the image and its noise level), cheaper than the Wide-ResNet."""

    @nn.compact
    def __call__(self, x, sigmas, train=False):
        return nn.Dense(10)(jnp.concatenate([x.reshape(x.shape[0], -1), jnp.log(sigmas)[:, None]], axis=-1))


def test_log_prob_fn_is_the_log_softmax_of_the_logits():
    config = load_config("configs/classifier/digits.py")
    model = _Logits()
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    t = jnp.full((4,), 0.3)
    params = model.init(jax.random.key(1), x, t)["params"]
    labels = jnp.array([0, 3, 9, 3])
    got = jax.jit(network_log_prob_fn(model, params, config))(x, t, labels)
    logits = model.apply({"params": params}, *InputConventions.from_config(config).inputs(x, t))
    np.testing.assert_allclose(got, jax.nn.log_softmax(logits)[jnp.arange(4), labels], rtol=1e-5, atol=1e-6)
    # Guidance through the Python API refuses a label outside the classifier's classes (it would be NaN and
    # silently unguided), as the command line does.
    with pytest.raises(ValueError, match=r"class label 10 is outside the classifier's classes 0..9"):
        classifier_guided(lambda x, t: x, network_log_prob_fn(model, params, config), jnp.array([0, 10]))


def test_the_classifier_config_converts_the_released_checkpoint():
    """Its network is the official WRN-28-10 (the converter's parameter tree), for the score model's VE SDE."""
    shapes = jax.tree.map(
        lambda s: s.shape, convert.param_shapes(load_config("configs/classifier/cifar10_wideresnet.py"))
    )
    assert shapes == jax.tree.map(lambda s: s.shape, convert.param_shapes(cifar10_classifier_config()))
    check_compatible(
        load_config("configs/classifier/cifar10_wideresnet.py"), load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    )
    with pytest.raises(ValueError, match="trained for the SDE VESDE.*the score model for VPSDE"):
        check_compatible(
            load_config("configs/classifier/cifar10_wideresnet.py"),
            load_config("configs/vp/cifar10_ddpmpp_continuous.py"),
        )
