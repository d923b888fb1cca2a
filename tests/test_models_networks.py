"""The networks at small widths on the CPU: FIR resampling, every NCSN++ option, input/label conventions,
dropout, bf16 compute, and the parameter counts of the paper's full-size configs.

Outputs equal to the official implementations' are checked in test_models_convert.py (reference files).
"""

import functools
import json
import math

import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde.config import load_config
from score_sde.models import get_model, get_sigmas, num_classes
from score_sde.models import up_or_down_sampling as updown
from score_sde.models.wideresnet import cifar10_classifier_config


def ncsnpp_config(**model) -> ml_collections.ConfigDict:
    """The CIFAR-10 VE NCSN++ continuous config (official values) at 8 x 8 px and tiny widths, with overrides."""
    fields = dict(
        name="ncsnpp",
        nf=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(4,),
        dropout=0.1,
        resamp_with_conv=True,
        conditional=True,
        fir=True,
        fir_kernel=[1, 3, 3, 1],
        skip_rescale=True,
        resblock_type="biggan",
        progressive="none",
        progressive_input="residual",
        progressive_combine="sum",
        attention_type="ddpm",
        init_scale=0.0,
        fourier_scale=16,
        conv_size=3,
        embedding_type="fourier",
        nonlinearity="swish",
        normalization="GroupNorm",
        scale_by_sigma=True,
        sigma_min=0.01,
        sigma_max=50.0,
        num_scales=1000,
        beta_min=0.1,
        beta_max=20.0,
        ema_rate=0.999,
    )
    fields.update(model)
    return ml_collections.ConfigDict(
        {
            "model": fields,
            "training": {"continuous": True},
            "data": {"image_size": 8, "num_channels": 3, "centered": False},
        }
    )


def random_variables(model, x, labels, seed=0):
    """Random parameters in the network's shapes, nothing compiled: kernels N(0, 1/fan_in), scales 1 + N(0, 0.05^2),
    other vectors N(0, 0.05^2), so that every path of the network (even the almost-zero-initialised layers)
    reaches the output."""
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, x, labels)
    )
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        if name in ("['scale']", "['gamma']", "['alpha']", "['embedding']"):
            return 1 + 0.05 * rng.standard_normal(s.shape, np.float32)
        if math.prod(s.shape) == s.shape[-1]:  # biases and the like, whatever their leading 1s
            return 0.05 * rng.standard_normal(s.shape, np.float32)
        return rng.standard_normal(s.shape, np.float32) / math.sqrt(math.prod(s.shape[:-1]))

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.cache
def _compiled_apply(config_json: str):
    model = get_model(ml_collections.ConfigDict(json.loads(config_json)))
    return model, jax.jit(model.apply)


def init_and_apply(config, x, labels):
    """Random variables and the jitted ``apply(variables, x, labels)`` of the network (one compilation per config
    and shapes in the whole file)."""
    model, apply = _compiled_apply(config.to_json())
    return random_variables(model, x, labels), apply


X = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 3))
X16 = jax.random.uniform(jax.random.PRNGKey(4), (2, 16, 16, 3))
SIGMAS = jnp.array([0.05, 20.0])


# ---------------------------------------------------------------------------------------------------------
# FIR resampling


def _upfirdn_numpy(x, k, up, down, pad):
    """Reference on (B, H, W, C) for the separable filter outer(k, k): along H, then W, insert up - 1 zeros after
    each sample, pad, convolve with k, keep every down-th sample."""

    def along(v):
        z = np.zeros(len(v) * up)
        z[::up] = v
        return np.convolve(np.pad(z, pad), k, mode="valid")[::down]

    for axis in (1, 2):
        x = np.apply_along_axis(along, axis, x)
    return x


@pytest.mark.parametrize("kernel", [(1, 3, 3, 1), (1, 2, 1), (1, 1)])
def test_fir_resampling_matches_separable_numpy_reference(kernel):
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3)))
    k = np.asarray(kernel, np.float64) / np.sum(kernel)
    p = len(k) - 2
    # Upsampling scales the filter by factor**2 = 4 in all, 2 per axis, so that a constant image stays constant.
    up = _upfirdn_numpy(x, 2 * k, up=2, down=1, pad=((p + 1) // 2 + 1, p // 2))
    down = _upfirdn_numpy(x, k, up=1, down=2, pad=((p + 1) // 2, p // 2))
    np.testing.assert_allclose(updown.upsample_2d(x, kernel), up, atol=1e-5)  # float32 sums of a few O(1) terms
    np.testing.assert_allclose(updown.downsample_2d(x, kernel), down, atol=1e-5)


def test_fir_special_cases_and_fused_convolutions():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    # The box kernel [1, 1] is nearest-neighbour upsampling and 2 x 2 mean pooling.
    np.testing.assert_allclose(updown.upsample_2d(x, (1, 1)), updown.naive_upsample_2d(x), atol=1e-6)
    np.testing.assert_allclose(updown.downsample_2d(x, (1, 1)), updown.naive_downsample_2d(x), atol=1e-6)
    # The normalised filter keeps a constant image constant away from the zero-padded border.
    np.testing.assert_allclose(updown.upsample_2d(jnp.ones((1, 8, 8, 1)))[:, 2:-2, 2:-2], 1.0, atol=1e-6)
    np.testing.assert_allclose(updown.downsample_2d(jnp.ones((1, 8, 8, 1)))[:, 1:-1, 1:-1], 1.0, atol=1e-6)
    # The fused ops equal resampling and a 'SAME' 3x3 convolution in sequence, except within one pixel of the
    # border, where the fused op pads once instead of twice.
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 5))

    def conv(a):
        return jax.lax.conv_general_dilated(a, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(
        updown.upsample_conv_2d(x, w)[:, 1:-1, 1:-1], conv(updown.upsample_2d(x))[:, 1:-1, 1:-1], atol=1e-4
    )
    np.testing.assert_allclose(
        updown.conv_downsample_2d(x, w)[:, 1:-1, 1:-1], updown.downsample_2d(conv(x))[:, 1:-1, 1:-1], atol=1e-4
    )


# ---------------------------------------------------------------------------------------------------------
# NCSN++ options


NCSNPP_VARIANTS = {
    # The paper's NCSN++ (VE) and DDPM++ (VP) configurations.
    "ncsnpp": dict(),
    "ddpmpp": dict(fir=False, progressive_input="none", embedding_type="positional", scale_by_sigma=False),
    # The high-resolution pyramids: output skip, input skip with sum / cat combining.
    "output_skip_input_skip_sum": dict(progressive="output_skip", progressive_input="input_skip"),
    "residual_input_skip_cat_no_fir": dict(
        progressive="residual", progressive_input="input_skip", progressive_combine="cat", fir=False, skip_rescale=False
    ),
    # DDPM residual blocks with separate (FIR or naive, conv or not) resampling layers.
    "ddpm_blocks_fir_residual_pyramids": dict(
        resblock_type="ddpm", progressive="residual", progressive_input="residual"
    ),
    "ddpm_blocks_no_conv_output_skip_cat": dict(
        resblock_type="ddpm",
        resamp_with_conv=False,
        fir=False,
        progressive="output_skip",
        progressive_input="input_skip",
        progressive_combine="cat",
        skip_rescale=False,
    ),
    "unconditional_positional": dict(
        conditional=False, embedding_type="positional", scale_by_sigma=False, attn_resolutions=(8, 4)
    ),
}


@pytest.mark.parametrize("variant", sorted(NCSNPP_VARIANTS))
def test_ncsnpp_options(variant):
    options = NCSNPP_VARIANTS[variant]
    config = ncsnpp_config(**options)
    labels = SIGMAS if config.model.embedding_type == "fourier" else jnp.array([3.0, 870.0])
    variables, apply = init_and_apply(config, X, labels)
    y = apply(variables, X, labels)
    assert y.shape == X.shape and y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    # The noise level conditions the output (unless the network is unconditional).
    y_swapped = apply(variables, X, labels[::-1])
    if config.model.conditional:
        assert not np.allclose(y[0], y_swapped[0], atol=1e-4)
    else:
        np.testing.assert_allclose(y[0], y_swapped[0], rtol=1e-5, atol=1e-6)
    # Every image is processed alone: another second image does not change the first's output.
    np.testing.assert_allclose(apply(variables, X.at[1].set(X[1] ** 2), labels)[0], y[0], rtol=1e-5, atol=1e-6)


def test_conventions_scale_by_sigma_and_centering():
    """scale_by_sigma divides by sigma (the label for Fourier embeddings, sigmas[label] for positional ones);
    uncentred data x in [0, 1] is the centred network's 2x - 1."""
    indices = jnp.array([0, 999])
    np.testing.assert_allclose(get_sigmas(ncsnpp_config())[indices], [50.0, 0.01], rtol=1e-6)
    ddpmpp = NCSNPP_VARIANTS["ddpmpp"]  # positional embedding, scale_by_sigma=False
    for unscaled, labels, sigmas in [
        (ncsnpp_config(scale_by_sigma=False), SIGMAS, SIGMAS),
        (ncsnpp_config(**ddpmpp), indices, get_sigmas(ncsnpp_config())[indices]),
    ]:
        scaled = ncsnpp_config(**{**unscaled.model.to_dict(), "scale_by_sigma": True})
        variables, apply = init_and_apply(unscaled, X, labels)
        y = apply(variables, X, labels)
        np.testing.assert_allclose(
            init_and_apply(scaled, X, labels)[1](variables, X, labels) * sigmas[:, None, None, None],
            y,
            rtol=1e-5,
            atol=1e-6,
        )
    centred = ncsnpp_config(**ddpmpp)
    centred.data.centered = True
    np.testing.assert_allclose(
        init_and_apply(centred, X, labels)[1](variables, 2 * X - 1, labels), y, rtol=1e-5, atol=1e-6
    )


def test_dropout_and_training_gradient():
    config = ncsnpp_config(ch_mult=(1,), attn_resolutions=(8,))  # one resolution: a smaller backward pass to compile
    model = get_model(config)
    variables, _ = init_and_apply(config, X, SIGMAS)

    def loss(params, key):
        y = model.apply({"params": params}, X, SIGMAS, train=True, rngs={"dropout": key})
        return jnp.mean(y**2), y

    grad = jax.jit(jax.grad(loss, has_aux=True))
    (g1, y1), (_, y2), (_, y1_again) = (grad(variables["params"], jax.random.PRNGKey(k)) for k in (1, 2, 1))
    np.testing.assert_array_equal(y1, y1_again)  # dropout is a function of the 'dropout' rng only
    assert not np.allclose(y1, y2)
    # The Fourier features are a parameter (saved with the checkpoint) that training never changes.
    assert not np.any(g1["GaussianFourierProjection_0"]["W"])
    assert np.all(np.isfinite(g1["Conv_0"]["kernel"])) and np.any(g1["Conv_0"]["kernel"])


def _products(jaxpr):
    """(primitive, operand dtypes) of every convolution and dot product in a jaxpr and its sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.append((eqn.primitive.name, {v.aval.dtype for v in eqn.invars}))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                    found += _products(getattr(sub, "jaxpr", sub))
    return found


def test_bfloat16_compute_float32_parameters_close_to_float32():
    variables, apply32 = init_and_apply(ncsnpp_config(), X, SIGMAS)
    model16 = get_model(ncsnpp_config(dtype="bfloat16"))
    assert all(
        v.dtype == jnp.float32
        for v in jax.tree.leaves(jax.eval_shape(lambda: model16.init({"params": jax.random.PRNGKey(0)}, X, SIGMAS)))
    )
    # Every convolution and matrix product runs on bfloat16 operands.
    products = _products(jax.make_jaxpr(model16.apply)(variables, X, SIGMAS).jaxpr)
    assert len(products) > 20 and all(dtypes == {jnp.dtype(jnp.bfloat16)} for _, dtypes in products), products
    y32 = apply32(variables, X, SIGMAS)
    y16 = init_and_apply(ncsnpp_config(dtype="bfloat16"), X, SIGMAS)[1](variables, X, SIGMAS)
    assert y16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    # bfloat16 keeps 8 significant bits (unit round-off 2^-9 = 2e-3); over the ~20 layers in series of this
    # network the errors add up like a random walk, sqrt(20) * 2e-3 ~ 1e-2: allow 3e-2. And the error must
    # be far above float32's (~1e-6), or the computation did not happen in bfloat16.
    assert 1e-4 < rel < 3e-2, rel


@pytest.mark.parametrize(
    "overrides, shape, message",
    [
        (dict(name="ncsn++"), (1, 8, 8, 3), r"unknown network 'ncsn\+\+' \(config.model.name\); known: ncsn, ncsnpp, "),
        (dict(progressive="skip"), (1, 8, 8, 3), r"config.model.progressive='skip' is not one of"),
        (dict(dtype="float16"), (1, 8, 8, 3), r"config.model.dtype='float16' is not one of"),
        (dict(nonlinearity="gelu"), (1, 8, 8, 3), r"config.model.nonlinearity='gelu'"),
        (dict(ch_mult=(1, 2, 2, 2)), (1, 12, 12, 3), r"H and W must be divisible by 8"),
    ],
)
def test_bad_config_or_input_is_named(overrides, shape, message):
    config = ncsnpp_config(**overrides)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda: get_model(config).init(jax.random.PRNGKey(0), jnp.zeros(shape), jnp.ones((1,))))


# ---------------------------------------------------------------------------------------------------------
# The other networks


def _refinenet_config(name, **model):
    config = ncsnpp_config(
        name=name,
        nf=4,
        normalization="InstanceNorm++",
        nonlinearity="elu",
        interpolation="bilinear",
        num_scales=10,
        sigma_max=1.0,
        **model,
    )
    config.data.image_size = 16
    return config


def test_ncsnv2_output_is_one_field_divided_by_sigma():
    """NCSNv2 is not conditioned on the noise level except through the output scaling: y_i * sigma_i is the
    same for every index i."""
    config = _refinenet_config("ncsnv2_64")
    x = jnp.broadcast_to(jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3)), (3, 16, 16, 3))
    labels = jnp.array([0, 4, 9])
    variables, apply = init_and_apply(config, x, labels)
    y = apply(variables, x, labels) * get_sigmas(config)[labels][:, None, None, None]
    assert y.shape == x.shape
    np.testing.assert_allclose(y[1:], jnp.broadcast_to(y[0], y[1:].shape), rtol=1e-5, atol=1e-6)


def test_ncsn_and_ddpm_are_conditioned_on_the_label():
    for config, x in [
        (_refinenet_config("ncsn", scale_by_sigma=False), jnp.ones((2, 16, 16, 3)) * 0.3),
        # (64 channels somewhere: with 32 groups of 1 channel, GroupNorm removes the time bias)
        (ncsnpp_config(name="ddpm", nf=32, scale_by_sigma=False), jnp.ones((2, 8, 8, 3)) * 0.3),
    ]:
        labels = jnp.array([2, 7])
        variables, apply = init_and_apply(config, x, labels)
        y = apply(variables, x, labels)
        assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
        assert not np.allclose(y[0], y[1], atol=1e-4)  # same image, different noise levels


@pytest.mark.parametrize("network", ["ncsnpp", "ddpmpp", "ddpm"])
def test_class_conditional_networks(network):
    """config.model.num_classes = K adds one (K + 1, E) class embedding (``Embed_0``) to the noise embedding and
    nothing else, so K = 0 is today's network and the released checkpoints still fit; the label changes the output,
    no label is the null label K (the unconditional score); an unconditional network refuses labels."""
    options = {"ncsnpp": dict(), "ddpmpp": NCSNPP_VARIANTS["ddpmpp"], "ddpm": dict(name="ddpm", nf=32)}[network]
    labels = SIGMAS if network == "ncsnpp" else jnp.array([3.0, 870.0])
    config, unconditional = ncsnpp_config(num_classes=3, **options), ncsnpp_config(**options)
    variables, apply = init_and_apply(config, X, labels)
    embedding = variables["params"].pop("Embed_0")["embedding"]
    width = 2 * 8 if network == "ncsnpp" else config.model.nf  # Fourier features are two per frequency
    assert embedding.shape == (4, width)
    plain, _ = init_and_apply(unconditional, X, labels)
    assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, variables)
    variables["params"]["Embed_0"] = {"embedding": embedding}
    x = jnp.broadcast_to(X[:1], X.shape)  # the same image and noise level in both rows, two classes
    same = labels[:1].repeat(2)
    y = apply(variables, x, same, jnp.array([0, 2]))
    assert not np.allclose(y[0], y[1], atol=1e-4)
    null = apply(variables, x, same, jnp.array([3, 3]))
    np.testing.assert_allclose(apply(variables, x, same), null, rtol=1e-5, atol=1e-6)
    model = get_model(unconditional)
    with pytest.raises(ValueError, match=r"class labels given to an unconditional network"):
        jax.eval_shape(lambda: model.apply(plain, X, labels, jnp.array([0, 1])))
    refinenet = _refinenet_config("ncsnv2_64", num_classes=3)
    with pytest.raises(ValueError, match=r"num_classes=3: the network 'ncsnv2_64' takes no class labels"):
        num_classes(refinenet, get_model(refinenet))
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 0"):
        get_model(ncsnpp_config(num_classes=-1, **options)).apply(variables, X, labels)


@pytest.mark.heavy
@pytest.mark.parametrize("network", ["ncsnpp", "ddpmpp", "ddpm", "ncsnv2", "ncsn"])
def test_remat_gives_the_same_loss_and_gradients(network):
    """config.training.remat 'blocks' and 'full' recompute blocks in the backward pass: the parameter tree is the
    same (checkpoints fit either way), and so are the loss and its gradient (with dropout on, the same key), to
    float32 round-off of the differently fused recomputation."""
    if network in ("ncsnv2", "ncsn"):
        config, x, labels = _refinenet_config("ncsnv2_64" if network == "ncsnv2" else "ncsn"), X16, jnp.array([2, 7])
    else:
        options = {"ncsnpp": dict(), "ddpmpp": NCSNPP_VARIANTS["ddpmpp"], "ddpm": dict(name="ddpm", nf=32)}[network]
        config, x = ncsnpp_config(**options), X
        labels = SIGMAS if network == "ncsnpp" else jnp.array([3.0, 870.0])
    config.training.remat = "none"
    variables, _ = init_and_apply(config, x, labels)

    def loss_and_grads(remat):
        config.training.remat = remat
        model = get_model(config)
        shapes = jax.eval_shape(
            lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x, labels)
        )
        assert jax.tree.structure(shapes) == jax.tree.structure(variables), remat

        def loss(params):
            out = model.apply({"params": params}, x, labels, train=True, rngs={"dropout": jax.random.key(5)})
            return jnp.mean(jnp.square(out - 0.1))

        return jax.jit(jax.value_and_grad(loss))(variables["params"])

    want_loss, want_grads = loss_and_grads("none")
    # (an absolute tolerance on the scale of the whole gradient: some leaves' true gradient is 0, their values noise)
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(want_grads))
    for remat in ("blocks", "full"):
        got_loss, got_grads = loss_and_grads(remat)
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    with pytest.raises(ValueError, match=r"config.training.remat='some' is not one of \('none', 'blocks', 'full'\)"):
        config.training.remat = "some"
        get_model(config).init(jax.random.key(0), x, labels)


def test_wideresnet_classifier_logits():
    config = ml_collections.ConfigDict(
        {"model": dict(name="wideresnet_noise_conditional", blocks_per_group=1, channel_multiplier=1, num_classes=10)}
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    variables, apply = init_and_apply(config, x, SIGMAS)
    logits = apply(variables, x, SIGMAS)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    # Each image is standardised first: the logits do not depend on its brightness and contrast.
    np.testing.assert_allclose(apply(variables, 3 * x + 1, SIGMAS), logits, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Parameter counts of the paper's configs

# Official counts, measured by building each config's network with the official code: the PyTorch port
# (yang-song/score_sde_pytorch, `sum(p.numel() for p in model.parameters())`) for NCSN++ / DDPM++ / DDPM, and
# the official JAX code run under today's flax (leaves of the `params` collection) for every row; the two agree
# wherever both build. The port's NCSN / NCSNv2 do not build (and no PyTorch checkpoints of them exist).
# One config per distinct network of the paper (the others repeat these, e.g. subvp/ = vp/).
PAPER_CONFIGS = {
    "ve/cifar10_ncsnpp_continuous": 62_758_915,
    "ve/cifar10_ncsnpp_deep_continuous": 107_587_075,
    "ve/cifar10_ncsnpp": 62_693_251,
    "vp/cifar10_ddpmpp_continuous": 61_804_419,
    "vp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "vp/ddpm/cifar10": 35_218_947,
    "vp/ddpm/cifar10_unconditional": 32_329_347,
    "vp/ddpm/church": 111_569_923,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_549,
    "ve/ffhq_ncsnpp_continuous": 105_785_896,
    "ve/ncsnv2/cifar10": 33_970_563,
    "ve/ncsnv2/bedroom": 83_445_379,
    "ve/ncsn/cifar10": 34_428_675,
    "ve/ncsn/cifar10_124": 44_828_931,
    "CIFAR-10 classifier (WRN-28-10)": 38_913_242,
}


@pytest.mark.parametrize("label", sorted(PAPER_CONFIGS))
def test_parameter_count_of_paper_configs(label):
    config = (
        cifar10_classifier_config() if label.startswith("CIFAR-10 classifier") else load_config(f"configs/{label}.py")
    )
    size, channels = config.data.image_size, config.data.num_channels
    shapes = jax.eval_shape(
        lambda: get_model(config).init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
            jnp.zeros((1, size, size, channels)),
            jnp.ones((1,)),
        )
    )
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == PAPER_CONFIGS[label]
