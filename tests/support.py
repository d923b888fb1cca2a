"""What several test files share: where the real data beside the checkout is, and a minimal data config.

The data is ../shared/data (see its MANIFEST.md). CI clones the repository with shared/ beside it; a git
worktree may sit deeper, so every ancestor of the repository is tried. SCORE_SDE_SHARED_DATA overrides.
Tests that need a file of it skip when it is absent."""

import os
import pathlib

import ml_collections
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _find_shared_data() -> pathlib.Path:
    if os.environ.get("SCORE_SDE_SHARED_DATA"):
        return pathlib.Path(os.environ["SCORE_SDE_SHARED_DATA"])
    found = (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir())
    return next(found, REPO.parent / "shared" / "data")


SHARED_DATA = _find_shared_data()


def needs_shared(*relative: str) -> pytest.MarkDecorator:
    """Skips the test unless every named file or folder exists under SHARED_DATA."""
    missing = [r for r in relative if not (SHARED_DATA / r).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"absent from {SHARED_DATA}: {', '.join(missing)}")


def data_config(dataset: str, image_size: int = 4, num_channels: int = 1, **fields) -> ml_collections.ConfigDict:
    """The config keys score_sde.data reads, global batch 8; by default pixels in [0, 1], no flips, no
    dequantisation (``fields`` override or add config.data entries)."""
    data = dict(centered=False, random_flip=False, uniform_dequantization=False)
    data.update(dataset=dataset, image_size=image_size, num_channels=num_channels, **fields)
    return ml_collections.ConfigDict(dict(seed=0, training=dict(batch_size=8), data=data))


def convergence_order(steps, errors) -> float:
    """The measured order p of a solver whose end-point error behaves as C steps^-p: minus the least-squares
    slope of log(error) against log(steps). ``errors`` (len(steps), n_points) holds each point's error at each
    step count; the median over points is fitted, since at few steps a point may change mode and be far off."""
    import numpy as np

    median = np.median(np.asarray(errors, np.float64).reshape(len(steps), -1), axis=1)
    return -float(np.polyfit(np.log(np.asarray(steps, np.float64)), np.log(median), 1)[0])


def random_model_checkpoint(path, config):
    """Writes a model checkpoint of the network of ``config`` with random weights (0.1 N(0, 1), drawn with
    numpy: compiling the network's init costs more CPU than a small test), for commands that need a model."""
    import jax
    import numpy as np

    from score_sde import checkpoints, models, train

    model = models.get_model(config)
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    shapes = jax.eval_shape(model.init, keys, *train.example_input(config))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    checkpoints.save_model(str(path), params=params, params_ema=params, config=config)
    return config


def start_command(command: list[str], workdir, env, **kwargs):
    """``command`` (a score-sde command line as a list) with ``--workdir workdir``, started from the repository
    root as a subprocess (stdout dropped, stderr piped) that a test may kill at any moment."""
    import subprocess

    return subprocess.Popen(
        command + ["--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def logged_losses(workdir) -> dict[int, float]:
    """step -> loss of a training workdir's metrics.jsonl, the last record of each step (a resumed run logs again
    the steps after its checkpoint); a partial last line, which a kill may leave, is passed over."""
    import json

    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            if line.endswith("\n"):
                record = json.loads(line)
                out[record["step"]] = record["loss"]
    return out


def logged_steps(workdir) -> int:
    """The last step a training workdir has logged, 0 before its metrics.jsonl exists."""
    try:
        return max(logged_losses(workdir), default=0)
    except FileNotFoundError:
        return 0


def mmd(x, y, bandwidth: float = 1.0) -> float:
    """The biased estimate of the maximum mean discrepancy between samples x (m, D) and y (m, D) with the Gaussian
    kernel exp(-|a - b|^2 / (2 bandwidth^2)) (Gretton et al. 2012, eq. 5), in float64."""
    import numpy as np

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d2 = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0.0) / (2 * bandwidth**2))

    return float(np.sqrt(max(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean(), 0.0)))


def mmd_bound(m: int, false_failure: float = 1e-4) -> float:
    """What `mmd` of two samples of size m from the same law stays below with probability 1 - false_failure, for a
    kernel bounded by 1 (Gretton et al. 2012, Corollary 9): sqrt(2 / m) (1 + sqrt(2 log(1 / false_failure)))."""
    import math

    return math.sqrt(2 / m) * (1 + math.sqrt(2 * math.log(1 / false_failure)))


def full_disk(monkeypatch, part: str) -> None:
    """Makes every write through score_sde.files whose target's path contains ``part`` fail as on a full disk
    (ENOSPC at its fsync), for the rest of the test."""
    import errno

    from score_sde import files

    real = os.fsync

    def fsync(fd):
        if part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
