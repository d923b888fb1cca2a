"""Converters from the released checkpoints: outputs equal the official implementations', mismatches refused.

The reference files under tests/data/models/ were produced by the official code (see the README there):
PyTorch-port checkpoints with the port's outputs, official-JAX training states with the official outputs,
and the official parameter trees of every network.
"""

import json
import pathlib
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde import checkpoints, convert
from score_sde.models import get_model

DATA = pathlib.Path(__file__).parent / "data" / "models"
# The references were computed in float32 by other code (PyTorch / another JAX version): the outputs agree to
# float32 round-off accumulated over ~30 layers (observed <= 1e-5 relative); the issue asks for 1e-4.
RTOL = 1e-4


def _config(name: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads((DATA / f"{name}.json").read_text()))


def _max_rel_err(y, ref):
    return float(np.max(np.abs(np.asarray(y) - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize(
    "name, suffix",
    [
        ("torch_ncsnpp_ve", "pth"),
        ("torch_ncsnpp_pyramids", "pth"),
        ("flax_ddpmpp_vp", "msgpack"),
        ("flax_ncsnv2", "msgpack"),
    ],
)
def test_converted_checkpoint_reproduces_official_outputs(name, suffix, tmp_path):
    config, ref = _config(name), np.load(DATA / f"{name}.npz")
    convert.run(str(DATA / f"{name}.{suffix}"), config, str(tmp_path / "model"))
    params, params_ema, saved_config = checkpoints.load_model(str(tmp_path / "model"))
    assert saved_config.model.name == config.model.name
    model = get_model(saved_config)
    apply = jax.jit(lambda p: model.apply({"params": p}, jnp.asarray(ref["x"]), jnp.asarray(ref["labels"])))
    assert _max_rel_err(apply(params), ref["y"]) < RTOL
    assert _max_rel_err(apply(params_ema), ref["y_ema"]) < RTOL
    # The EMA is really a different set of weights (else the line above would not test it).
    assert _max_rel_err(ref["y_ema"], ref["y"]) > 1e-2


@pytest.mark.parametrize("label", sorted(json.loads((DATA / "official_trees.json").read_text())))
def test_parameter_tree_is_the_official_one(label):
    entry = json.loads((DATA / "official_trees.json").read_text())[label]
    ours = {
        "/".join(k): tuple(v.shape)
        for k, v in flax.traverse_util.flatten_dict(
            convert.param_shapes(ml_collections.ConfigDict(entry["config"]))
        ).items()
    }
    official = {k: tuple(v) for k, v in entry["params"].items()}
    assert sorted(ours) == sorted(official)
    for key, shape in official.items():
        # flax 0.3 stored GroupNorm's scale and bias as (1, 1, 1, C); today's flax as (C,).
        assert ours[key] == shape or (len(ours[key]) == 1 and shape == (1, 1, 1) + ours[key]), key


def _official_state(params, params_ema):
    """The official JAX training state around parameter trees, GroupNorm parameters in flax 0.3's shape."""

    def old(tree):
        flat = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, tree))
        return flax.traverse_util.unflatten_dict(
            {k: v.reshape(1, 1, 1, -1) if k[-2].startswith("GroupNorm") else v for k, v in flat.items()}
        )

    return {
        "step": 3,
        "optimizer": {"target": old(params), "state": {"step": 3, "param_states": {}}},
        "lr": 2e-4,
        "model_state": {},
        "ema_rate": 0.999,
        "params_ema": old(params_ema),
        "rng": np.zeros(2, np.uint32),
    }


def _random_params(config, seed=0):
    """Random values in the shapes of the network's parameters (nothing compiled)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), convert.param_shapes(config))


def test_flax_state_round_trip_and_bare_tree(tmp_path):
    config = _config("torch_ncsnpp_ve")
    params = _random_params(config)
    params_ema = jax.tree.map(lambda p: p + 1.0, params)
    path = tmp_path / "checkpoint_7"
    path.write_bytes(flax.serialization.msgpack_serialize(_official_state(params, params_ema)))
    got, got_ema = convert.convert(str(path), config)
    for want, have in ((params, got), (params_ema, got_ema)):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), want, have)
    # The classifier's checkpoint is a bare parameter tree: it is both the parameters and their EMA.
    classifier = ml_collections.ConfigDict(
        {
            "model": dict(
                name="wideresnet_noise_conditional", blocks_per_group=1, channel_multiplier=1, num_classes=10
            ),
            "data": dict(image_size=8, num_channels=3),
        }
    )
    tree = _random_params(classifier)
    (tmp_path / "classifier").write_bytes(flax.serialization.msgpack_serialize(tree))
    got, got_ema = convert.convert(str(tmp_path / "classifier"), classifier)
    jax.tree.map(
        lambda a, b, c: (
            np.testing.assert_array_equal(np.asarray(a), b),
            np.testing.assert_array_equal(np.asarray(a), c),
        ),
        tree,
        got,
        got_ema,
    )


@pytest.mark.parametrize("listing", ["torch_ddpm_keys", "torch_ncsnpp_unconditional_keys"])
def test_torch_state_dict_names_map_in_order(listing, tmp_path):
    """A state dict with the port's names and shapes (random values) converts: every tensor lands in the Flax
    parameter of the same inner name, the port's module order follows the Flax call order, and the EMA follows.
    (DDPM; and an unconditional NCSN++, whose residual blocks have a Dense_0 in the port that nothing uses.)"""
    torch = pytest.importorskip("torch")
    listing = json.loads((DATA / f"{listing}.json").read_text())
    config = ml_collections.ConfigDict(listing["config"])
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*shape, generator=gen) for k, shape in listing["state_dict"]}
    fourier = {"module.all_modules.0.W"} if config.model.embedding_type == "fourier" else set()  # not trained
    trainable = [k for k in state if not k.endswith("sigmas") and k not in fourier]
    torch.save(
        {"model": state, "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": [2 * state[k] for k in trainable]}},
        tmp_path / "ck.pth",
    )
    params, params_ema = convert.convert(str(tmp_path / "ck.pth"), config)

    by_value = {}
    for key, value in state.items():
        value = value.numpy()
        for candidate in (value, value.T, value.transpose(2, 3, 1, 0) if value.ndim == 4 else value):
            by_value[np.ascontiguousarray(candidate).tobytes()] = key
    leaf_names = {"kernel": "weight", "weight": "weight", "scale": "weight", "bias": "bias", "W": "W", "b": "b"}
    index_of, used = {}, set()
    flat, flat_ema = flax.traverse_util.flatten_dict(params), flax.traverse_util.flatten_dict(params_ema)
    for path, value in flat.items():
        key = by_value[np.ascontiguousarray(value).tobytes()]  # KeyError: a value not taken from the checkpoint
        used.add(key)
        inner = key.split(".")[3:]  # module.all_modules.<i>.<inner...>
        assert inner == [*path[1:-1], leaf_names[path[-1]]], (path, key)
        index_of.setdefault(path[0], int(key.split(".")[2]))
        np.testing.assert_array_equal(flat_ema[path], value if key in fourier else 2 * value)
    unused = set(trainable) - used
    assert all(".Dense_0." in k for k in unused) and (len(unused) > 0) == (not config.model.conditional), unused
    for kind in {name.rsplit("_", 1)[0] for name in index_of}:
        order = sorted(
            (int(name.rsplit("_", 1)[1]), i) for name, i in index_of.items() if name.rsplit("_", 1)[0] == kind
        )
        assert [i for _, i in order] == sorted(i for _, i in order), kind


@pytest.mark.parametrize(
    "checkpoint, field, value, message",
    [
        # nf 4 -> 8: the first parameter (in sorted order) that differs is named, with both shapes: the attention
        # block at 4 x 4 px has 2 * nf channels, and the checkpoint's GroupNorm keeps flax 0.3's shape.
        (
            "flax_ddpmpp_vp.msgpack",
            "nf",
            8,
            r"parameter AttnBlockpp_0/GroupNorm_0/bias has shape \(1, 1, 1, 8\) in the checkpoint but \(16,\)",
        ),
        # Two residual blocks per resolution instead of one: one attention block more at 4 x 4 px (3 -> 4), which
        # the checkpoint lacks.
        (
            "flax_ddpmpp_vp.msgpack",
            "num_res_blocks",
            2,
            r"the checkpoint has no parameter AttnBlockpp_3/GroupNorm_0/bias "
            r"\(the config\'s network has one of shape \(8,\)\)",
        ),
        # The PyTorch path names the Flax parameter, its PyTorch name and both shapes.
        (
            "torch_ncsnpp_ve.pth",
            "nf",
            8,
            r"parameter \S+ \(all_modules\.\d+\.\S+ in the checkpoint\) has shape \(.*\) in the checkpoint but \(.*\)",
        ),
    ],
)
def test_checkpoint_not_fitting_the_config_is_refused(checkpoint, field, value, message):
    if checkpoint.endswith(".pth"):
        pytest.importorskip("torch")
    config = _config(checkpoint.rsplit(".", 1)[0])
    config.model[field] = value
    with pytest.raises(convert.CheckpointMismatch, match=message):
        convert.convert(str(DATA / checkpoint), config)


def test_released_checkpoints_are_unconditional_and_of_the_papers_formulation(tmp_path):
    """A config in EDM's formulation is refused before anything is read; a class-conditional one names the class
    embedding the checkpoint lacks."""
    config = _config("flax_ddpmpp_vp")
    config.model.formulation = "edm"
    with pytest.raises(ValueError, match=r"trained with the paper's formulation, not config.model.formulation='edm'"):
        convert.run(str(DATA / "flax_ddpmpp_vp.msgpack"), config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    config = _config("flax_ddpmpp_vp")
    config.model.num_classes = 10
    with pytest.raises(convert.CheckpointMismatch, match=r"the checkpoint has no parameter Embed_0/embedding"):
        convert.convert(str(DATA / "flax_ddpmpp_vp.msgpack"), config)


def test_reading_pth_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="pip install"):
        convert.convert(str(DATA / "torch_ncsnpp_ve.pth"), _config("torch_ncsnpp_ve"))


def test_legacy_torch_file_without_suffix_is_recognised(tmp_path):
    """The official port's checkpoint re-saved in PyTorch's format before 1.6 (not a zip) under a name without
    .pth converts as the .pth does (recognised by its first bytes); read as Flax on purpose it fails saying
    what it is not and what to do, instead of msgpack's bare "unpack(b) received extra data"."""
    torch = pytest.importorskip("torch")
    config = _config("torch_ncsnpp_ve")
    blob = torch.load(DATA / "torch_ncsnpp_ve.pth", map_location="cpu", weights_only=True)
    torch.save(blob, tmp_path / "checkpoint_26", _use_new_zipfile_serialization=False)
    want = convert.convert(str(DATA / "torch_ncsnpp_ve.pth"), config)
    got = convert.convert(str(tmp_path / "checkpoint_26"), config)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    with pytest.raises(ValueError, match=r"is not a Flax checkpoint \(msgpack cannot read it: .*--format torch"):
        convert.convert(str(tmp_path / "checkpoint_26"), config, format="flax")


def _ncsnpp_ve_flax_checkpoint(path):
    """A VE NCSN++ checkpoint in the official Flax format: the PyTorch port's test checkpoint, converted."""
    pytest.importorskip("torch")
    params, params_ema = convert.convert(str(DATA / "torch_ncsnpp_ve.pth"), _config("torch_ncsnpp_ve"))
    path.write_bytes(flax.serialization.msgpack_serialize(_official_state(params, params_ema)))
    return str(path)


@pytest.mark.parametrize("kind", ["flax", "torch"])
def test_config_of_another_family_lists_the_modules_that_differ(kind, tmp_path):
    """A VE NCSN++ checkpoint converted with a VP DDPM++ config: the error lists the top-level modules of each
    that the other lacks (NCSN++'s Fourier time embedding and BigGAN blocks against DDPM++'s), so that the user
    sees a config of another network, not only the first parameter whose shape differs."""
    checkpoint = str(DATA / "torch_ncsnpp_ve.pth") if kind == "torch" else _ncsnpp_ve_flax_checkpoint(tmp_path / "c")
    with pytest.raises(convert.CheckpointMismatch) as e:
        convert.convert(checkpoint, _config("flax_ddpmpp_vp"))
    message = str(e.value)
    assert "(is the config of another network, or of another size?)" in message
    if kind == "flax":  # Flax names the modules: the DDPM++ of the config has no Fourier features, no Downsample
        assert message.endswith(
            "modules the config's network lacks: Downsample_0, GaussianFourierProjection_0 "
            + "(is the config of another network, or of another size?)"
        )
    else:  # PyTorch numbers them: 20 in the checkpoint against 18, matched in call order
        assert message.startswith("the checkpoint has 20 modules with parameters, the config's network 18; ")
        assert "the config's network has modules the checkpoint lacks: AttnBlockpp_0, " in message
        assert "the checkpoint has modules the config's network lacks: all_modules.0, " in message
