"""`score-sde train-classifier` on the digits: the trained time-dependent classifier is accurate on slightly
noisy images and at chance on pure noise, and a run killed with kill -9 and started again ends exactly as an
uninterrupted one (losses and parameters), as `score-sde train` does (tests/test_train_resume.py)."""

import os
import random
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import checkpoints, models
from score_sde import data as data_lib
from score_sde import sde as sde_lib
from score_sde.conditional import network_log_prob_fn

from support import logged_losses, logged_steps, start_command

N_ITERS = 120
# A narrow classifier of configs/classifier/digits.py (VP SDE), a checkpoint every 20 steps.
COMMAND = [
    sys.executable,
    "-m",
    "score_sde",
    "train-classifier",
    "--config",
    "configs/classifier/digits.py",
    "--config.model.channel_multiplier=1",
    "--config.training.batch_size=32",
    f"--config.training.n_iters={N_ITERS}",
    "--config.training.log_freq=1",
    "--config.training.snapshot_freq_for_preemption=20",
    f"--config.training.snapshot_freq={N_ITERS}",
    "--config.training.eval_freq=0",
]


@pytest.fixture(scope="session")  # the suite runs heavy tests first, apart from this module's others
def runs(tmp_path_factory):
    """The workdir of an uninterrupted run, and the environment sharing its compilations with later runs."""
    tmp = tmp_path_factory.mktemp("classifier")
    env = {
        **os.environ,
        # The suite's 8 devices, with LLVM's optimisations on: 120 steps run, where they save more than their
        # compilation costs (which the runs share through the persistent cache).
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    reference = start_command(COMMAND, tmp / "reference", env)
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    return tmp, env


def test_accuracy_is_high_on_clean_images_and_chance_on_noise(runs):
    """Accuracy on the whole test split (360 digits): at t = 0.01 the digits are barely perturbed, at t = T
    (m(T) = 0.007) the input holds no information, so a classifier can only guess: 0.10 for the 10
    balanced classes, give or take 0.016 (binomial standard error); 0.07 allows 4 of them plus the test
    split's class imbalance. 120 steps reach about 0.7 at t = 0.01, far above chance."""
    tmp, _ = runs
    params, _, config = checkpoints.load_model(str(tmp / "reference"))
    model, sde = models.get_model(config), sde_lib.get_sde(config)
    classifier = network_log_prob_fn(model, params, config)
    logits = jax.jit(lambda x, t: classifier.func.logits(params, x, t))
    source = data_lib.get_source(config, "test")
    accuracy = {}
    for t in (0.01, sde.T):
        hits = count = 0
        for i, batch in enumerate(data_lib.eval_batches(source, 128, config)):
            x0, mask = jnp.asarray(batch["image"]), batch["mask"]
            tt = jnp.full((len(mask),), t)
            mean, std = sde.marginal_prob(x0, tt)
            x = mean + std[:, None, None, None] * jax.random.normal(jax.random.key(i), x0.shape)
            hits += int(np.sum((np.argmax(logits(x, tt), -1) == batch["label"])[mask]))
            count += int(mask.sum())
        accuracy[t] = hits / count
    assert count == len(source)
    assert accuracy[0.01] > 0.5, accuracy
    assert abs(accuracy[sde.T] - 0.1) < 0.07, accuracy


@pytest.mark.heavy
def test_killed_classifier_training_resumes_exactly(runs):
    tmp, env = runs
    rng = random.Random()
    after, delay = rng.randint(20, N_ITERS - 30), rng.uniform(0.0, 0.3)
    victim = start_command(COMMAND, tmp / "resumed", env)
    while logged_steps(tmp / "resumed") < after:
        assert victim.poll() is None, f"training ended before step {after}: {victim.stderr.read()}"
        time.sleep(0.05)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = logged_steps(tmp / "resumed")
    assert killed_at < N_ITERS, "the run finished before the kill; the test did not interrupt it"
    saved = checkpoints.TrainCheckpoints(str(tmp / "resumed")).steps()

    restart = start_command(COMMAND, tmp / "resumed", env)
    _, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err
    if saved:
        assert f"resuming from step {saved[0][0]}" in err, err

    context = f"killed after step {killed_at} (after={after}, delay={delay:.3f})"
    want, got = logged_losses(tmp / "reference"), logged_losses(tmp / "resumed")
    assert sorted(want) == sorted(got) == list(range(1, N_ITERS + 1)), context
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)], context
    for a, b in zip(
        jax.tree.leaves(checkpoints.load_model(str(tmp / "reference"))[:2]),
        jax.tree.leaves(checkpoints.load_model(str(tmp / "resumed"))[:2]),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=context)
