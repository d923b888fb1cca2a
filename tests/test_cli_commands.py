"""The score-sde command line: --help of every command, one error per kind of bad input, and `sample`
continuing after the shards an interrupted run left."""

import json
import os

import numpy as np
import pytest

from score_sde import checkpoints, cli
from score_sde import config as config_lib

from support import random_model_checkpoint

TINY = ["model.nf=8", "model.num_scales=4", "training.batch_size=8"]


def run_cli(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("command", [c.name for c in cli.COMMANDS])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: score-sde {command}")


@pytest.mark.parametrize("command", [c for c in cli.COMMANDS if c.overrides], ids=lambda c: c.name)
def test_help_shows_the_config_overrides(command, capsys):
    """Every command that reads a config (a --config file or the one saved with a model) says in its --help
    that --config.<group>.<field>=<value> overrides it, and which config that is."""
    with pytest.raises(SystemExit):
        cli.main([command.name, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config.<group>.<field>=<value>" in out and command.overrides in out


def test_overrides_for_a_command_without_config_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fid", "a", "b", "--config.eval.batch_size=8"])
    assert e.value.code == 2
    assert "fid takes no --config.* overrides (it reads no config)" in capsys.readouterr().err


DIGITS = ["--config", "configs/small/digits.py"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            DIGITS + ["--config.training.batch_sise=8"],
            "unknown config key 'training.batch_sise'; did you mean training.batch_size",
        ),
        (
            DIGITS + ["--config.training.n_iters", "ten"],
            "bad value 'ten' for config key 'training.n_iters' (int expected)",
        ),
        (["--config", "configs/nope.py"], "config file not found: configs/nope.py"),
        ([], "--config is required"),  # a workdir without checkpoints to resume from
        (
            DIGITS + ["--config.training.batch_size=12"],
            "config.training.batch_size=12 is not divisible by the number of devices (8)",
        ),
    ],
    ids=["config_key", "config_value", "config_file", "no_config", "batch_size"],
)
def test_bad_train_arguments(tmp_path, capsys, args, message):
    """Each bad input fails before anything is written, with a message naming it."""
    status, _, err = run_cli(["train", *args, "--workdir", str(tmp_path / "w")], capsys)
    assert status == 1 and message in err
    assert not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    status, _, err = run_cli(["train", *DIGITS, "--workdir", str(tmp_path / "file")], capsys)
    assert status == 1 and f"workdir {tmp_path / 'file'} exists and is not a directory" in err


def test_workdir_of_another_network(tmp_path, capsys):
    config = config_lib.load_config("configs/small/digits.py", TINY)
    store = checkpoints.TrainCheckpoints(str(tmp_path))
    w = {"w": np.zeros(1, np.float32)}
    store.save(1, params=w, params_ema=w, opt_state=w, config=config)
    store.wait()
    status, _, err = run_cli(
        [
            "train",
            "--config",
            "configs/small/digits.py",
            "--workdir",
            str(tmp_path),
            "--config.model.nf=16",
            "--config.model.num_scales=4",
        ],
        capsys,
    )
    assert status == 1 and "holds checkpoints of a different network (model.nf: 8 there, 16 now);" in err


def _tiny_model_checkpoint(path):
    """A model checkpoint of a narrow digits DDPM++ with random weights."""
    return random_model_checkpoint(path, config_lib.load_config("configs/small/digits.py", TINY))


def test_corrupt_model_checkpoint(tmp_path, capsys):
    w = {"w": np.zeros(4, np.float32)}
    checkpoints.save_model(
        str(tmp_path / "ckpt"), params=w, params_ema=w, config=config_lib.load_config("configs/small/digits.py")
    )
    for root, _, files in os.walk(tmp_path / "ckpt" / "model"):
        for name in files:
            if os.path.basename(root) == "d":
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(5)
    status, _, err = run_cli(["sample", "--model", str(tmp_path / "ckpt"), "--out", str(tmp_path / "s")], capsys)
    assert status == 1 and f"model checkpoint {tmp_path / 'ckpt'} is corrupt or incomplete" in err


def test_model_checkpoint_appears_only_when_complete(tmp_path, monkeypatch):
    """A save that fails part-way (here: writing the config, after the parameters) leaves no checkpoint under
    the name, so nothing half-written is ever read as a model; the same save then succeeds."""
    w = {"w": np.arange(4, dtype=np.float32)}
    config = config_lib.load_config("configs/small/digits.py")

    def fail(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.files, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_model(str(tmp_path / "ckpt"), params=w, params_ema=w, config=config)
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.undo()
    checkpoints.save_model(str(tmp_path / "ckpt"), params=w, params_ema=w, config=config)
    params, _, saved = checkpoints.load_model(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(params["w"], w["w"])
    assert saved.to_json() == config.to_json()


def test_missing_model_checkpoint(tmp_path, capsys):
    status, _, err = run_cli(["likelihood", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path)], capsys)
    assert status == 1 and f"{tmp_path / 'nothing'} is not a model checkpoint" in err


def test_sample_shards_resume(tmp_path, capsys):
    """Three shards of 8 with a fixed-step ODE; delete the second and leave a stray temp file as a kill
    would: the rerun rewrites exactly that shard, identical to the first run's, and keeps the others."""
    _tiny_model_checkpoint(tmp_path / "ckpt")
    argv = [
        "sample",
        "--model",
        str(tmp_path / "ckpt"),
        "--out",
        str(tmp_path / "s"),
        "--num-samples",
        "20",
        "--batch-size",
        "8",
        "--config.sampling.method=ode",
        "--config.sampling.ode_method=euler",
        "--config.sampling.ode_steps=3",
    ]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    shards = sorted(p for p in os.listdir(tmp_path / "s") if p.endswith(".npz"))
    assert shards == ["samples_00000.npz", "samples_00001.npz", "samples_00002.npz"]
    first = {p: np.load(tmp_path / "s" / p)["samples"] for p in shards}
    assert [len(v) for v in first.values()] == [8, 8, 4] and all(v.dtype == np.uint8 for v in first.values())
    assert not np.array_equal(first[shards[0]], first[shards[1]])  # each shard has its own randomness
    assert (tmp_path / "s.png").is_file()

    os.remove(tmp_path / "s" / shards[1])
    (tmp_path / "s" / "samples_00001.npz.tmp123").write_bytes(b"partial")
    stamp = os.stat(tmp_path / "s" / shards[2]).st_mtime_ns
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "s" / shards[1])["samples"], first[shards[1]])
    assert os.stat(tmp_path / "s" / shards[2]).st_mtime_ns == stamp  # kept, not redrawn
    assert sorted(os.listdir(tmp_path / "s")) == ["samples.json"] + shards  # the stray temp file is gone

    # Other settings into the same folder would mix samples: refused.
    status, _, err = run_cli(argv[:-1] + ["--config.sampling.ode_steps=4"], capsys)
    assert status == 1 and "holds results of other settings" in err


def test_eval_loss_covers_the_test_split_once(tmp_path, capsys):
    """297 test digits in batches of 64: the last batch is padded with 23 masked rows, and the reported
    count is exactly the split's size."""
    _tiny_model_checkpoint(tmp_path / "ckpt")
    status, out, err = run_cli(
        ["eval", "--model", str(tmp_path / "ckpt"), "--out", str(tmp_path / "e"), "--config.eval.batch_size=64"], capsys
    )
    assert status == 0, err
    assert "over 297 examples" in out
    record = json.loads((tmp_path / "e" / "loss.json").read_text())
    assert record["count"] == 297 and np.isfinite(record["loss"]) and record["loss"] > 0
