"""kill -9 in the middle of `score-sde train`, then the same command again: the resumed run's losses and
final parameters equal those of an uninterrupted run, exactly (same devices, same compiled code)."""

import os
import random
import signal
import sys
import time

import jax
import numpy as np
import pytest

from score_sde import checkpoints

from support import logged_losses, logged_steps, start_command

N_ITERS = 24
# A small DDPM++ on the digits (the README's config, narrowed) with a checkpoint every 4 steps.
COMMAND = [
    sys.executable,
    "-m",
    "score_sde",
    "train",
    "--config",
    "configs/small/digits.py",
    "--config.model.nf=8",
    "--config.training.batch_size=16",
    f"--config.training.n_iters={N_ITERS}",
    "--config.training.log_freq=1",
    "--config.training.snapshot_freq_for_preemption=4",
    f"--config.training.snapshot_freq={N_ITERS}",
    "--config.training.snapshot_sampling=false",
    "--config.training.eval_freq=0",
]


def _env(cache_dir):
    # The three runs compile the same step: share it through JAX's persistent cache (they inherit the
    # suite's XLA_FLAGS from conftest: 8 devices, LLVM's optimisations off).
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.mark.heavy
def test_kill_9_and_restart_equals_uninterrupted_run(tmp_path):
    env = _env(tmp_path / "jax_cache")
    reference = start_command(COMMAND, tmp_path / "reference", env)
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err

    # Kill at a random moment after step `after` (4..19): before, at or during a checkpoint save.
    rng = random.Random()
    after, delay = rng.randint(4, N_ITERS - 5), rng.uniform(0.0, 0.3)
    victim = start_command(COMMAND, tmp_path / "resumed", env)
    while logged_steps(tmp_path / "resumed") < after:
        assert victim.poll() is None, f"training ended before step {after}: {victim.stderr.read()}"
        time.sleep(0.05)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = logged_steps(tmp_path / "resumed")
    assert killed_at < N_ITERS, "the run finished before the kill; the test did not interrupt it"
    saved = checkpoints.TrainCheckpoints(str(tmp_path / "resumed")).steps()

    restart = start_command(COMMAND, tmp_path / "resumed", env)
    _, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err
    if saved:  # else the kill came before the first checkpoint was complete, and the run starts afresh
        assert f"resuming from step {saved[0][0]}" in err, err

    context = f"killed after step {killed_at} (after={after}, delay={delay:.3f})"
    want, got = logged_losses(tmp_path / "reference"), logged_losses(tmp_path / "resumed")
    assert sorted(want) == sorted(got) == list(range(1, N_ITERS + 1)), context
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)], context
    p_want, ema_want, _ = checkpoints.load_model(str(tmp_path / "reference"))
    p_got, ema_got, _ = checkpoints.load_model(str(tmp_path / "resumed"))
    for a, b in zip(jax.tree.leaves((p_want, ema_want)), jax.tree.leaves((p_got, ema_got))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=context)
