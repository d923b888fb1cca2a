"""`score-sde solve` and `score-sde sample --class-label`: results in resumable shards with the known pixels
returned exactly, and one clear error per kind of bad input (before anything is written)."""

import json
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import cli
from score_sde import config as config_lib
from score_sde.models import layers, register_model

from support import full_disk, random_model_checkpoint


@register_model("test_conv")
class _Conv(nn.Module):
    """Stands in for a score network (one convolution): the commands' logic is under test here, not the
    quality of the results, and a U-Net's compilation would cost most of the test's CPU time."""

    config: object

    @nn.compact
    def __call__(self, x, labels, train=False):
        return nn.Conv(x.shape[-1], (3, 3))(x) + 0.0 * labels[:, None, None, None]


@register_model("test_conv_conditional")
class _ConditionalConv(nn.Module):
    """A class-conditional stand-in: one convolution plus a learnt per-class offset (layers.add_class_embedding)."""

    config: object

    @nn.compact
    def __call__(self, x, labels, class_labels=None, train=False):
        temb = layers.add_class_embedding(labels[:, None] * 0.0, class_labels, self.config.model.num_classes)
        return nn.Conv(x.shape[-1], (3, 3))(x) + temb[:, :, None, None]


@register_model("test_logits")
class _Logits(nn.Module):
    """Stands in for the noise-conditional classifier: logits (B, num_classes) of the image and its noise level."""

    config: object

    @nn.compact
    def __call__(self, x, sigmas, train=False):
        features = jnp.concatenate([x.reshape(x.shape[0], -1), jnp.log(sigmas)[:, None]], axis=-1)
        return nn.Dense(self.config.model.num_classes)(features)


# The digits config (VP SDE, 8x8x1 in [-1, 1]) with 4 sampler steps.
TINY = ["model.name=test_conv", "model.num_scales=4", "training.batch_size=8"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "ckpt"
    random_model_checkpoint(path, config_lib.load_config("configs/small/digits.py", TINY))
    return str(path)


@pytest.fixture(scope="module")
def conditional_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "conditional"
    overrides = ["model.name=test_conv_conditional", "model.num_scales=4", "training.batch_size=8"]
    random_model_checkpoint(path, config_lib.load_config("configs/small/digits_cond.py", overrides))
    return str(path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """Random classifiers for the digits: one for the model's VP SDE, one for the VE SDE."""
    root = tmp_path_factory.mktemp("classifier")
    for name, extra in (("vp", []), ("ve", ["training.sde=vesde"])):
        config = config_lib.load_config("configs/classifier/digits.py", ["model.name=test_logits", *extra])
        random_model_checkpoint(root / name, config)
    return str(root)


def run_cli(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_inpainting_shards_resume_and_keep_the_known_pixels(model, tmp_path, capsys):
    """10 test digits in shards of 8 and 2, centre box masked, the replacement method with the config's PC sampler. The
    known pixels of each result are those of the ground truth, exactly (uint8); deleting the second shard and
    leaving a kill's stray temp file, the rerun rewrites that shard identically and keeps the first."""
    out = tmp_path / "inpaint"
    argv = ["solve", "--model", model, "--task", "inpaint", "--split", "test", "--out", str(out)]
    argv += ["--num-images", "10", "--batch-size", "8"]
    status, stdout, err = run_cli(argv, capsys)
    assert status == 0, err
    shards = ["results_00000.npz", "results_00001.npz"]
    assert sorted(p for p in os.listdir(out) if p.endswith(".npz")) == shards
    first = [dict(np.load(out / s)) for s in shards]
    assert [len(s["samples"]) for s in first] == [8, 2]
    for s in first:
        known = s["mask"] == 1
        assert known.mean() == 0.75 and s["samples"].dtype == np.uint8
        np.testing.assert_array_equal(s["samples"][known], s["truth"][known])
        assert np.all(s["residual"] < 1e-5)  # ||A x - y||: the known pixels, rewritten exactly
    summary = json.loads((out / "results.json").read_text())
    assert summary["count"] == 10 and summary["task"] == "inpaint" and "PSNR" in stdout
    assert (tmp_path / "inpaint.png").is_file()

    os.remove(out / shards[1])
    (out / "results_00001.npz.tmp7").write_bytes(b"partial")
    stamp = os.stat(out / shards[0]).st_mtime_ns
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    again = dict(np.load(out / shards[1]))
    for key in first[1]:
        np.testing.assert_array_equal(again[key], first[1][key], err_msg=key)
    assert os.stat(out / shards[0]).st_mtime_ns == stamp
    assert not any(".tmp" in p for p in os.listdir(out))
    status, _, err = run_cli(argv + ["--mask", "half"], capsys)
    assert status == 1 and "holds results of other settings" in err


def test_superres_with_pigdm_and_an_ode_sampler(model, tmp_path, capsys):
    """Posterior-sampling guidance runs with any sampler: here a 3-step Euler probability-flow ODE."""
    argv = ["solve", "--model", model, "--task", "superres", "--split", "test", "--out", str(tmp_path / "sr")]
    argv += ["--num-images", "8", "--method", "pigdm", "--sigma-y", "0.05", "--config.sampling.method=ode"]
    argv += ["--config.sampling.ode_method=euler", "--config.sampling.ode_steps=3"]
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    shard = np.load(tmp_path / "sr" / "results_00000.npz")
    assert shard["measurement"].shape == (8, 4, 4, 1) and np.all(np.isfinite(shard["residual"]))


def _write(path, array):
    np.save(path, array)
    return str(path)


def test_bad_solve_input_is_named(model, tmp_path, capsys):
    solve = ["solve", "--model", model, "--out", str(tmp_path / "o")]
    cases = [
        (
            ["--task", "colorize", "--split", "test"],
            "grey-scale needs RGB images (..., 3), got examples of shape (8, 8, 1)",
        ),
        (["--task", "deblur", "--split", "test"], "the replacement method needs an operator with a pseudo-inverse"),
        (["--task", "inpaint", "--split", "test", "--sigma-y", "0.1"], "the replacement method takes noiseless"),
        (["--task", "inpaint", "--split", "test", "--method", "dps"], "dps needs the measurement noise sigma_y > 0"),
        (["--task", "superres", "--split", "test", "--factor", "3"], "needs images (H, W, C) with H and W divisible"),
        (
            ["--task", "inpaint", "--split", "test", "--mask", _write(tmp_path / "m.npy", np.ones((4, 4)))],
            "the mask " + str(tmp_path / "m.npy") + " has shape (4, 4); the images need (H, W) = (8, 8)",
        ),
        (["--task", "inpaint", "--split", "test", "--mask", "ring"], "--mask 'ring' is neither a mask file"),
        (["--task", "inpaint", "--split", "test", "--method", "ddrm"], "unknown method 'ddrm'; choose one of"),
        (
            ["--task", "superres", "--split", "test", "--method", "pigdm", "--weight-schedule", "cosine"],
            "unknown guidance weight schedule 'cosine'; known: constant, signal",
        ),
        (
            ["--task", "inpaint", "--images", _write(tmp_path / "big.npy", np.full((2, 8, 8, 1), 1.5, np.float32))],
            "must be uint8 or floats in [0, 1]; they hold float32 values in [1.5, 1.5]",
        ),
        (
            ["--task", "inpaint", "--images", _write(tmp_path / "wide.npy", np.zeros((2, 8, 9), np.uint8))],
            "have shape (2, 8, 9, 1), but the model takes (N, 8, 8, 1)",
        ),
        (
            ["--task", "inpaint", "--split", "test", "--config.sampling.method=ode"],
            "the replacement method runs the PC sampler: it needs config.sampling.method='pc'",
        ),
    ]
    for args, message in cases:
        status, _, err = run_cli(solve + args, capsys)
        assert status == 1 and message in err, (args, err)
        assert not (tmp_path / "o").exists(), args


def test_class_conditional_samples(model, classifier, tmp_path, capsys):
    sample = ["sample", "--model", model, "--num-samples", "8", "--config.sampling.method=ode"]
    sample += ["--config.sampling.ode_method=euler", "--config.sampling.ode_steps=2"]
    vp, ve = os.path.join(classifier, "vp"), os.path.join(classifier, "ve")
    status, _, err = run_cli(sample + ["--out", str(tmp_path / "s"), "--class-label", "3", "--classifier", vp], capsys)
    assert status == 0, err
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert meta["class_label"] == 3 and meta["classifier"] == vp
    assert np.load(tmp_path / "s" / "samples_00000.npz")["samples"].shape == (8, 8, 8, 1)
    cases = [
        (["--class-label", "10", "--classifier", vp], "class label 10 is outside the classifier's classes 0..9"),
        (["--class-label", "1", "--classifier", ve], "the classifier was trained for the SDE VESDE"),
        (["--class-label", "1"], "class labels need a class-conditional model (config.model.num_classes > 0) or a"),
        (["--guidance-weight", "2"], "--classifier, --guidance-weight and --guidance-interval need --class-label"),
        (["--class-label", "1", "--classifier", vp, "--guidance-interval", "0.1", "1"], "applies to classifier-free"),
        (["--class-label", "1", "--classifier", model], "is not a classifier"),
    ]
    for args, message in cases:
        status, _, err = run_cli(sample + ["--out", str(tmp_path / "bad"), *args], capsys)
        assert status == 1 and message in err, (args, err)
        assert not (tmp_path / "bad").exists(), args
    with pytest.raises(SystemExit):  # argparse's usage error
        cli.main(sample + ["--out", str(tmp_path / "bad"), "--class-label", "cat"])
    assert "expected a class index or 'random', got 'cat'" in capsys.readouterr().err


def test_classifier_free_guided_samples_resume_with_their_labels(conditional_model, tmp_path, capsys):
    """A class-conditional model with --class-label random: each shard holds its samples' labels, drawn from
    (seed, shard), and a rerun after losing a shard rewrites it identically; --class-label K gives all K. The
    command records the guidance; a label outside the classes and a bad interval are refused before anything is
    written. `eval` takes the test labels."""
    sample = ["sample", "--model", conditional_model, "--num-samples", "12", "--batch-size", "8"]
    sample += ["--config.sampling.method=ode", "--config.sampling.ode_method=euler", "--config.sampling.ode_steps=2"]
    out = tmp_path / "random"
    argv = sample + ["--out", str(out), "--class-label", "random", "--guidance-weight", "2"]
    status, stdout, err = run_cli(argv, capsys)
    assert status == 0, err
    assert "12 samples in" in stdout and "(ode:euler on the uniform grid, 2 steps: 3 network evaluations" in stdout
    meta = json.loads((out / "samples.json").read_text())
    assert (meta["class_label"], meta["guidance"], meta["guidance_weight"]) == ("random", "classifier-free", 2.0)
    shards = [dict(np.load(out / f"samples_0000{i}.npz")) for i in range(2)]
    for i, (shard, n) in enumerate(zip(shards, (8, 4))):
        want = np.random.default_rng([0, i]).integers(0, 10, 8)[:n]
        np.testing.assert_array_equal(shard["labels"], want)
        assert shard["samples"].shape == (n, 8, 8, 1)
    os.remove(out / "samples_00001.npz")
    assert run_cli(argv, capsys)[0] == 0
    again = dict(np.load(out / "samples_00001.npz"))
    for key in shards[1]:
        np.testing.assert_array_equal(again[key], shards[1][key], err_msg=key)
    status, stdout, err = run_cli(["eval", "--model", conditional_model, "--out", str(tmp_path / "eval")], capsys)
    assert status == 0 and "test loss" in stdout and "over 297 examples" in stdout, err  # with the test labels
    status, _, err = run_cli(sample + ["--out", str(tmp_path / "three"), "--class-label", "3"], capsys)
    assert status == 0, err
    assert np.all(np.load(tmp_path / "three" / "samples_00000.npz")["labels"] == 3)
    assert json.loads((tmp_path / "three" / "samples.json").read_text())["guidance_weight"] == 0.0
    cases = [
        (["--class-label", "10"], "class label 10 is outside the model's classes 0..9"),
        (["--class-label", "1", "--guidance-interval", "0.5", "0.2"], "the guidance interval [0.5, 0.2] must lie"),
    ]
    for args, message in cases:
        status, _, err = run_cli(sample + ["--out", str(tmp_path / "bad"), *args], capsys)
        assert status == 1 and message in err, (args, err)
        assert not (tmp_path / "bad").exists(), args


def test_compare_per_guidance_weight_from_a_conditional_model(conditional_model, tmp_path):
    """The compare command with --class-label and two guidance weights: one row per weight, and the labels of
    each shard as sample draws them."""
    from test_eval_compare import PixelFeatures

    from score_sde.evaluation import commands

    class Features(PixelFeatures):
        meta = {"sha256": "pixels", "source": "pixels", "source_sha256": "pixels", "has_logits": False}
        resize = "tf1"

    kw = dict(samplers=["ode:euler"], steps=[2], num_samples=8, batch_size=8, extractor=Features())
    rows = commands.run_compare(
        conditional_model, str(tmp_path / "cmp"), class_label=4, guidance_weights=[0.0, 1.5], **kw
    )
    assert [(r["guidance_weight"], r["nfe"]) for r in rows] == [(0.0, 3), (1.5, 3)]
    manifest = json.loads((tmp_path / "cmp" / "manifest.json").read_text())
    assert (manifest["class_label"], manifest["guidance"]) == (4, "classifier-free")
    with pytest.raises(ValueError, match="need --class-label"):
        commands.run_compare(conditional_model, str(tmp_path / "bad"), guidance_weights=[1.0], **kw)


def test_a_full_disk_while_sampling_keeps_the_shards_written(model, tmp_path, capsys, monkeypatch):
    """The disk fills while the second shard is written: the command fails naming that shard and the free space,
    the first shard stays readable, and the same command, once there is room, writes the rest: the shards of an
    uninterrupted run."""
    sample = ["sample", "--model", model, "--num-samples", "16", "--batch-size", "8"]
    sample += ["--config.sampling.method=ode", "--config.sampling.ode_method=euler", "--config.sampling.ode_steps=2"]
    assert run_cli(sample + ["--out", str(tmp_path / "whole")], capsys)[0] == 0
    out = tmp_path / "full"
    with monkeypatch.context() as patch:
        full_disk(patch, "samples_00001.npz")
        status, _, err = run_cli(sample + ["--out", str(out)], capsys)
    assert status == 1 and f"no space left writing {out / 'samples_00001.npz'}: " in err and "MiB free" in err, err
    assert sorted(p for p in os.listdir(out) if p.endswith(".npz")) == ["samples_00000.npz"]
    assert run_cli(sample + ["--out", str(out)], capsys)[0] == 0
    for name in ("samples_00000.npz", "samples_00001.npz"):
        np.testing.assert_array_equal(np.load(out / name)["samples"], np.load(tmp_path / "whole" / name)["samples"])
