"""Bits/dim of a checkpoint over config.eval.bpd_num_repeats passes: each pass with its own dequantisation noise
and its own Hutchinson probes, the result their average.

The network's score is replaced by analytic ones (monkeypatching `evaluate.score_fn_for`), for which the answer
is known or the randomness of one kind can be switched off; everything else (checkpoint, data, sharding over the
8 devices, the ODE likelihood) is the command's own path.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import checkpoints, evaluate, likelihood
from score_sde import data as data_lib
from score_sde.config import load_config

BATCH = 8  # one 8x8 digit per device, one batch per pass
OVERRIDES = ["eval.bpd_num_repeats=2"]


@pytest.fixture
def model(tmp_path):
    """A model checkpoint of the digits config (VP SDE, data in [-1, 1]); its parameters are never used."""
    w = {"w": np.zeros(1, np.float32)}
    config = load_config("configs/small/digits.py")
    checkpoints.save_model(str(tmp_path / "ckpt"), params=w, params_ema=w, config=config)
    return str(tmp_path / "ckpt"), config


def test_repeats_average_passes_with_fresh_noise(model, monkeypatch):
    """score(x, t) = -x is the exact score of N(0, I) data under the VP SDE: the probability-flow drift
    f - g^2 score / 2 = -beta x / 2 + beta x / 2 vanishes, so z = x and the divergence is exactly 0 (no probe
    enters). Bits/dim of pass r is then known in closed form on the data of pass r:
    (D log(2 pi) / 2 + |x|^2 / 2) / (D ln 2) + offset, with offset 7 for data in [-1, 1]."""
    path, config = model
    monkeypatch.setattr(evaluate, "score_fn_for", lambda config, model, params: lambda x, t: -x)
    got = evaluate.evaluate_bpd(path, overrides=OVERRIDES, split="test", num_batches=1, batch_size=BATCH)

    source = data_lib.get_source(config, "test")
    offset = likelihood.bpd_offset(data_lib.get_data_inverse_scaler(config))
    expected = []
    for repeat in range(2):
        x = next(data_lib.eval_batches(source, BATCH, config, dequantize=True, repeat=repeat))["image"]
        x = x.reshape(BATCH, -1).astype(np.float64)
        d = x.shape[1]
        expected.append(np.mean((d * np.log(2 * np.pi) / 2 + np.sum(x**2, 1) / 2) / (d * np.log(2)) + offset))
    # Tolerance: the log-density of an example, ~90 nats summed over 64 pixels in float32, carries a few
    # roundings of ulp(90) = 8e-6 nats = 2e-7 bits/dim each (measured: 1e-7 and 4e-7). The passes differ by their
    # noise alone, by 7e-5 bits/dim here (fixed by the seed; a pixel moves by up to 1/128 in [-1, 1]).
    assert abs(expected[0] - expected[1]) > 20 * 2e-6
    np.testing.assert_allclose(got["bpd_per_repeat"], expected, rtol=0, atol=2e-6)
    assert got["bpd"] == pytest.approx(np.mean(expected), rel=0, abs=2e-6)
    assert got["count"] == BATCH and got["repeats"] == 2


def test_repeats_draw_fresh_probes(model, monkeypatch):
    """With both passes on the same data (the pipeline's `repeat` forced to 0) they can only differ through
    their probes. score(x, t) = -x - roll(x) makes the drift beta(t) roll(x) / 2, whose divergence is exactly 0
    (a cyclic shift has no diagonal) while a probe v gives v . roll(v) != 0: a reused probe gives the same
    number twice, a fresh one another."""
    path, config = model
    real = data_lib.eval_batches
    monkeypatch.setattr(data_lib, "eval_batches", lambda *a, repeat=0, **k: real(*a, repeat=0, **k))
    shift = lambda x: jnp.roll(x.reshape(x.shape[0], -1), 1, axis=1).reshape(x.shape)  # noqa: E731
    monkeypatch.setattr(evaluate, "score_fn_for", lambda config, model, params: lambda x, t: -x - shift(x))
    got = evaluate.evaluate_bpd(path, overrides=OVERRIDES, split="test", num_batches=1, batch_size=BATCH)
    first, second = got["bpd_per_repeat"]
    # A reused probe repeats the computation to the last bit; fresh ones differ by 0.34 bits/dim here.
    assert abs(first - second) > 1e-3, (first, second)
    assert got["bpd"] == pytest.approx((first + second) / 2, rel=1e-6)
