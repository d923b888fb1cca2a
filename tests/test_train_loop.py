"""The training loop on a tiny network: 8 devices equal 1, divergence stops the run, unreadable
checkpoints are skipped, EMA and Adam with warm-up follow their definitions."""

import json
import logging
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from score_sde import checkpoints, files, parallel, train, wiring
from score_sde.config import load_config


class TinyNet(nn.Module):
    """A two-layer conv net conditioned on log(sigma), with dropout: enough to exercise every code path."""

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = nn.Conv(8, (3, 3))(x) + nn.Dense(8)(jnp.log(labels)[:, None])[:, None, None, :]
        h = nn.Dropout(0.1, deterministic=not train)(nn.swish(h))
        return nn.Conv(x.shape[-1], (3, 3))(h)


MODEL = TinyNet()
SIGMA_MIN, SIGMA_MAX = 0.01, 5.0


def ve_loss(params, key, x):
    """Denoising score matching with the VE SDE, lambda(t) = sigma(t)^2, the network giving sigma * score."""
    kt, kz, kd = jax.random.split(key, 3)
    t = jax.random.uniform(kt, (x.shape[0],), minval=1e-5)
    sigma = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
    z = jax.random.normal(kz, x.shape)
    out = MODEL.apply({"params": params}, x + sigma[:, None, None, None] * z, sigma, train=True, rngs={"dropout": kd})
    return jnp.mean(jnp.sum(jnp.square(out + z), axis=(1, 2, 3)))


DIGITS = (load_digits().images.astype(np.float32)[..., None] / 16.0) * 2 - 1


def digit_batches(config):
    """Global batch of step s drawn from (seed, s) only, as the data pipeline's contract says."""

    def batches(start):
        step = start
        while True:
            rng = np.random.default_rng([config.seed, step])
            yield DIGITS[rng.integers(0, len(DIGITS), config.training.batch_size)]
            step += 1

    return batches


def small_config(**training):
    config = load_config("configs/small/digits.py")
    config.training.update(
        dict(
            batch_size=16,
            n_iters=12,
            n_jitted_steps=3,
            log_freq=1,
            eval_freq=0,
            snapshot_freq=12,
            snapshot_freq_for_preemption=6,
            snapshot_sampling=False,
        )
    )
    config.training.update(training)
    config.optim.warmup = 4
    return config


def run(config, workdir, devices=None, loss_fn=ve_loss, **options):
    return train.run_training(
        config,
        str(workdir),
        model=options.pop("model", MODEL),
        loss_fn=loss_fn,
        train_batches=digit_batches(config),
        mesh=parallel.data_mesh(devices),
        **options,
    )


def losses_by_step(workdir, key="loss"):
    """The last logged loss (or ``key``) of each step (a resumed run logs again the steps after its checkpoint)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if key in record:
                out[record["step"]] = record[key]
    return out


def test_eight_devices_equal_one(tmp_path):
    """Same global batch and seed: the 8-device run's parameters equal the 1-device run's up to float32
    round-off of differently ordered sums (the gradient is a mean of 8 partial means instead of one mean).
    Over 12 Adam steps that round-off (~1e-7 relative) grows but stays far below 1e-4, while one Adam step
    moves every weight by ~lr = 2e-3 * warm-up fraction, so a wrong gradient (e.g. the sum over devices
    instead of the mean, or per-device instead of per-example randomness) fails by orders of magnitude."""
    config = small_config()
    one = run(config, tmp_path / "one", jax.devices()[:1])
    eight = run(config, tmp_path / "eight", jax.devices())
    for a, b in zip(
        jax.tree.leaves(one.params) + jax.tree.leaves(one.params_ema),
        jax.tree.leaves(eight.params) + jax.tree.leaves(eight.params_ema),
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # The parameters did move: the comparison above is not between two untouched initialisations.
    init = train.init_state(config, MODEL, train.get_optimizer(config))
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(one.params))
    )
    assert moved > 1e-3
    l1, l8 = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "eight")
    assert sorted(l1) == list(range(1, 13))
    np.testing.assert_allclose([l1[s] for s in l1], [l8[s] for s in l1], rtol=1e-4)
    # Adam is blind to a constant factor on the gradient (and clipping hides it), so the parameters alone
    # would not catch a sum over devices instead of a mean: the gradient norms do.
    g1, g8 = losses_by_step(tmp_path / "one", "grad_norm"), losses_by_step(tmp_path / "eight", "grad_norm")
    np.testing.assert_allclose([g1[s] for s in g1], [g8[s] for s in g1], rtol=1e-4)


@pytest.mark.parametrize("ema_warmup", [False, True])
def test_update_rule_matches_definition(tmp_path, ema_warmup):
    """Two steps by hand: Adam (b2 = 0.999) on the clipped gradient with lr * min(step / warmup, 1),
    then EMA with config.model.ema_rate, exactly as the official optimization_manager and step_fn; with
    config.model.ema_warmup, the PyTorch port's decay min(rate, (1 + n) / (10 + n)) at update n = 1, 2."""
    config = small_config(n_iters=2, n_jitted_steps=1, snapshot_freq=0, snapshot_freq_for_preemption=0)
    config.optim.grad_clip = 0.5  # small enough to be active
    config.optim.warmup = 3
    config.model.ema_rate = 0.9
    config.model.ema_warmup = ema_warmup
    got = run(config, tmp_path / "w", jax.devices()[:1])

    state = train.init_state(config, MODEL, train.get_optimizer(config))
    params, ema = state.params, state.params_ema
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    key = wiring.stream_key(config, 1)
    batches = digit_batches(config)(0)
    for step in range(2):
        x = next(batches)
        keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, step), r))(jnp.arange(len(x)))
        grads = jax.grad(train.per_example_mean, argnums=1)(ve_loss, params, keys, jnp.asarray(x))
        norm = optax.tree.norm(grads)
        grads = jax.tree.map(lambda g: g * 0.5 / jnp.maximum(norm, 0.5), grads)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        lr = config.optim.lr * min(step / 3, 1.0)
        params = jax.tree.map(
            lambda p, m, v: p - lr * (m / (1 - 0.9 ** (step + 1))) / (jnp.sqrt(v / (1 - 0.999 ** (step + 1))) + 1e-8),
            params,
            m,
            v,
        )
        decay = min(0.9, (2 + step) / (11 + step)) if ema_warmup else 0.9  # 2/11, 3/12 with the warm-up
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
    for a, b in zip(jax.tree.leaves((params, ema)), jax.tree.leaves((got.params, got.params_ema))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert int(parallel.to_host(got.step)) == 2


class WiderNet(TinyNet):
    """TinyNet's parameter tree with a 16-channel first layer: another network for --init-from."""

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = nn.Conv(16, (3, 3))(x) + nn.Dense(16)(jnp.log(labels)[:, None])[:, None, None, :]
        return nn.Conv(x.shape[-1], (3, 3))(nn.swish(h))


def test_init_from_another_run(tmp_path):
    """init_from (`train --init-from`): the parameters and EMA of another run's workdir, a fresh optimizer at step 0
    (with lr 0 the first step keeps the parameters, and the EMA moves toward them); a network of other shapes is
    refused naming the first parameter that differs; once the workdir has checkpoints of its own, they win."""
    devices = jax.devices()[:1]
    source = run(small_config(n_iters=4, snapshot_freq=4), tmp_path / "source", devices)
    config = small_config(n_iters=1, snapshot_freq=1)
    config.optim.lr, config.model.ema_rate = 0.0, 0.5
    tuned = run(config, tmp_path / "tuned", devices, init_from=str(tmp_path / "source"))
    assert int(parallel.to_host(tuned.step)) == 1
    for p, e, q, f in zip(
        *(jax.tree.leaves(t) for t in (tuned.params, tuned.params_ema, source.params, source.params_ema))
    ):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
        np.testing.assert_allclose(np.asarray(e), 0.5 * np.asarray(f) + 0.5 * np.asarray(q), rtol=1e-6, atol=1e-7)
    config.training.n_iters = 2
    resumed = run(config, tmp_path / "tuned", devices, init_from=str(tmp_path / "nowhere"))  # not read: resumed
    assert int(parallel.to_host(resumed.step)) == 2
    message = r"--init-from .*source does not fit the config's network: parameter Conv_0/bias has shape \(8,\)"
    with pytest.raises(ValueError, match=message):
        run(config, tmp_path / "wider", devices, init_from=str(tmp_path / "source"), model=WiderNet())


def test_sigterm_saves_the_step_reached_and_the_run_resumes_exactly(tmp_path):
    """SIGTERM (a preemption notice) arriving while the batch of step 5 is read: the chunk of steps 4-6 (3 jitted
    steps a call) finishes, its checkpoint (step 6) is saved, and training stops with Preempted (the command line
    exits 0 with its message). Started again it resumes there, and ends with the uninterrupted run's
    parameters and EMA, bit for bit; the previous SIGTERM handler is back."""
    config = small_config(snapshot_freq_for_preemption=0)
    devices = jax.devices()[:1]
    want = run(config, tmp_path / "uninterrupted", devices)
    clean = digit_batches(config)

    def batches(start):
        for step, x in enumerate(clean(start), start=start):
            if step == 4 and start == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            yield x

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train.Preempted, match=r"preempted \(SIGTERM\) at step 6 of 12: its checkpoint is saved"):
        train.run_training(
            config, str(tmp_path / "preempted"), model=MODEL, loss_fn=ve_loss, train_batches=batches,
            mesh=parallel.data_mesh(devices),
        )  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is before
    assert [step for step, _ in checkpoints.TrainCheckpoints(str(tmp_path / "preempted")).steps()] == [6]
    got = train.run_training(
        config, str(tmp_path / "preempted"), model=MODEL, loss_fn=ve_loss, train_batches=batches,
        mesh=parallel.data_mesh(devices),
    )  # fmt: skip
    for a, b in zip(jax.tree.leaves((want.params, want.params_ema)), jax.tree.leaves((got.params, got.params_ema))):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_a_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    """The disk fills while the checkpoint of step 6 is written (orbax's metadata file, at its file layer): the run
    stops with DiskFull naming that file and the free space; the checkpoint of step 4 stays complete, and the
    same run started again resumes from it and ends with the uninterrupted run's parameters, bit for bit."""
    import errno

    from etils import epath

    config = small_config(snapshot_freq_for_preemption=2, n_jitted_steps=1)
    devices = jax.devices()[:1]
    want = run(config, tmp_path / "uninterrupted", devices)
    path_type = type(epath.Path(str(tmp_path)))
    real = path_type.write_text

    def write_text(self, *args, **kwargs):
        if f"{os.sep}6.orbax-checkpoint-tmp" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    work = tmp_path / "full"
    with monkeypatch.context() as patch:
        patch.setattr(path_type, "write_text", write_text)
        with pytest.raises(files.DiskFull, match=rf"no space left saving checkpoint {work}/checkpoints-meta/6\.orbax"):
            run(config, work, devices)
    assert max(step for step, _ in checkpoints.TrainCheckpoints(str(work)).steps()) == 4
    got = run(config, work, devices)
    for a, b in zip(jax.tree.leaves((want.params, want.params_ema)), jax.tree.leaves((got.params, got.params_ema))):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    """A NaN in the data of step 8 makes its loss NaN: the run stops with a message naming step 8 and the
    last checkpoint (step 6), which still restores to finite parameters."""
    config = small_config()
    clean = digit_batches(config)

    def batches(start):
        for step, x in enumerate(clean(start), start=start):
            yield np.full_like(x, np.nan) if step == 7 else x  # step 7 counted from 0 is the 8th step

    with pytest.raises(train.TrainingDiverged, match=r"diverged at step 8\b.*last good checkpoint is step 6"):
        train.run_training(
            config, str(tmp_path / "w"), model=MODEL, loss_fn=ve_loss, train_batches=batches, mesh=parallel.data_mesh()
        )
    assert checkpoints.TrainCheckpoints(str(tmp_path / "w")).steps() == [(6, checkpoints.PREEMPTION)]
    params, _, _ = checkpoints.load_model(str(tmp_path / "w"))
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(params))


def test_unreadable_checkpoint_is_skipped_with_warning(tmp_path, caplog):
    """Damage the newest checkpoint's data files: the restart warns, resumes from the previous one and
    ends with the same parameters as an undisturbed run."""
    config = small_config()
    reference = run(config, tmp_path / "ref", jax.devices()[:1])
    config.training.n_iters = 9  # ends with the checkpoint of step 9, after those of steps 3 and 6
    config.training.snapshot_freq_for_preemption = 3
    run(config, tmp_path / "w", jax.devices()[:1])
    store = checkpoints.TrainCheckpoints(str(tmp_path / "w"))
    assert store.steps()[0] == (9, checkpoints.PERIODIC)
    for root, _, names in os.walk(os.path.join(store.path(9, checkpoints.PERIODIC), "model")):
        for name in names:
            if os.path.basename(root) == "d":  # the array data files
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(3)
    config.training.n_iters = 12
    config.training.snapshot_freq_for_preemption = 6
    with caplog.at_level(logging.WARNING, logger="score_sde.checkpoints"):
        resumed = run(config, tmp_path / "w", jax.devices()[:1])
    assert any("skipping unreadable checkpoint" in r.getMessage() and "/9" in r.getMessage() for r in caplog.records)
    for a, b in zip(jax.tree.leaves(reference.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resumed_on_two_devices_after_three_steps_on_four_equals_uninterrupted(tmp_path):
    """A checkpoint written by 4 devices restores onto 2 (the training state restored against the current mesh:
    nothing of the old topology is needed), and training continues as if never moved: 3 steps on 4 devices,
    then steps 4..12 on 2 equal 12 steps on 4 up to the round-off of the other split of the gradient's mean
    (2 partial means of 4 rows instead of 4 of 2; see test_eight_devices_equal_one for the tolerance)."""
    config = small_config(n_iters=3, n_jitted_steps=1, snapshot_freq=3, snapshot_freq_for_preemption=0)
    run(config, tmp_path / "moved", jax.devices()[:4])
    config.training.n_iters = 12
    moved = run(config, tmp_path / "moved", jax.devices()[4:6])
    assert moved.params["Conv_0"]["kernel"].sharding.device_set == set(jax.devices()[4:6])
    uninterrupted = run(config, tmp_path / "four", jax.devices()[:4])
    for a, b in zip(
        jax.tree.leaves((uninterrupted.params, uninterrupted.params_ema)),
        jax.tree.leaves((moved.params, moved.params_ema)),
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
    want, got = losses_by_step(tmp_path / "four"), losses_by_step(tmp_path / "moved")
    assert sorted(got) == list(range(1, 13))
    np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=1e-4)
