"""``score-sde`` as the tests that start processes run it (`multihost.start`): the same command line, with

- the network "tiny" registered (`--config.model.name=tiny`): a few hundred parameters, so that each process
  compiles its training step in a second rather than a DDPM++'s ten;
- the command ``data-rows OUT``: the probe of the data pipeline (see `_data_rows`);
- hooks that environment variables switch on:
    SCORE_SDE_TEST_JOURNAL=DIR       every file a process opens for writing is listed in DIR/process-<i>.txt
    SCORE_SDE_TEST_FEATURES=fake     a small random projection stands in for the Inception network
    SCORE_SDE_TEST_FAIL=KIND:STEP    process 1 fails: KIND "data" reading the batch of step STEP (OSError),
                                     KIND "restore" reading the checkpoint of step STEP (as a damaged file)
    SCORE_SDE_TEST_STEP_SECONDS=S    each training step waits S seconds for its batch (time to kill a run)
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import cli, data, models, parallel

import multihost


@models.register_model("tiny")
class Tiny(nn.Module):
    """For the VP SDE with continuous time (labels = 999 t): sigma(t) (x + r(x, t) / 10), the exact network
    of standard normal data (score -x) while the residual r (two 3x3 convolutions, the last starting at 0,
    and a Dense layer on the label, with the config's dropout) is 0, so that samples stay of the data's size
    (not all 0 or 255) however little it is trained."""

    config: object

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        m = self.config.model
        t = labels.astype(jnp.float32) / 999.0
        log_mean = -0.25 * t**2 * (m.beta_max - m.beta_min) - 0.5 * t * m.beta_min
        sigma = jnp.sqrt(1.0 - jnp.exp(2.0 * log_mean))[:, None, None, None]
        h = nn.Conv(16, (3, 3))(x) + nn.Dense(16)(t[:, None])[:, None, None, :]
        h = nn.Dropout(float(m.dropout), deterministic=not train)(nn.swish(h))
        r = nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
        return sigma * (x + 0.1 * r)


def _journal(directory: str) -> None:
    """Lists in DIR/process-<i>.txt every path this process opens for writing (Python's open, including the
    log file's): which files each process of a job writes. A temporary file of score_sde.files counts as
    its target."""

    def record(path, mode):
        if isinstance(path, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            target = os.path.abspath(os.fspath(path)).split(".tmp-")[0]
            with real_open(os.path.join(directory, f"process-{jax.process_index()}.txt"), "a") as f:
                f.write(target + "\n")

    real_open = builtins.open

    def journaled_open(file, mode="r", *args, **kwargs):
        record(file, mode)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = journaled_open
    logging.FileHandler._builtin_open = journaled_open


def _fake_features() -> None:
    """A random projection of the pixels to 16 features replaces the Inception network (its weights and its
    compiled function), leaving `InceptionFeatures` itself, which splits the work between processes."""
    from score_sde.evaluation import features, weights

    meta = {"source": "fake", "source_sha256": "0" * 64, "sha256": "0" * 64, "has_logits": False}
    weights.load = lambda path=None: ({"w": np.random.default_rng(0).standard_normal((8 * 8, 16), np.float32)}, meta)

    def compiled(has_logits, devices, *resize):  # the fake does not resize
        mesh = jax.make_mesh((len(devices),), ("batch",), devices=devices)
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

        def apply(variables, x):
            pixels = x.astype(jnp.float32).mean(axis=-1).reshape(len(x), -1) / 255.0
            return {"pool3": jnp.tanh(pixels @ variables["w"])}

        return jax.jit(apply, in_shardings=(replicated, rows), out_shardings=rows), rows, replicated

    features._compiled = compiled


def _slow_batches(seconds: float) -> None:
    batches = data.train_batches

    def slow(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            time.sleep(seconds)
            yield batch

    data.train_batches = slow


def _fail(kind: str, step: int) -> None:
    if kind == "data":
        batches = data.train_batches

        def failing(*args, start_step=0, **kwargs):
            for s, batch in enumerate(batches(*args, start_step=start_step, **kwargs), start=start_step):
                if s == step and jax.process_index() == 1:
                    raise OSError(f"injected read error in the batch of step {step}")
                yield batch

        data.train_batches = failing
    elif kind == "restore":
        from score_sde import checkpoints

        restore = checkpoints._restore

        def failing_restore(path, target):
            if os.path.basename(os.path.dirname(path)) == str(step) and jax.process_index() == 1:
                raise ValueError(f"injected: {path} unreadable on process 1")
            return restore(path, target)

        checkpoints._restore = failing_restore
    else:
        raise ValueError(f"SCORE_SDE_TEST_FAIL: unknown kind {kind!r}")


def _add_data_rows(p):
    p.add_argument("out", help="folder for rows-<process>.npz")
    p.add_argument("--steps", type=int, default=3)


def _data_rows(args):
    """The data pipeline, as training reads it, on `multihost.probe_source` (40 images holding their index): each
    process takes its rows of the global batches of steps 0..STEPS-1 (and of one pass over the test split),
    assembles the global arrays from them (`parallel.put_batch`) and gathers them back (`parallel.gather`).
    Writes OUT/rows-<process>.npz: the indices of its own rows and of the gathered global batches."""
    source, config = multihost.probe_source(), multihost.probe_config()
    mesh = parallel.data_mesh()
    batch = int(config.training.batch_size)
    decode = multihost.probe_index
    local, whole = [], []
    for _, rows in zip(range(args.steps), data.train_batches(source, config)):
        local.append(decode(rows["image"]))
        whole.append(decode(parallel.gather(parallel.put_batch(rows["image"], mesh, batch))))
    test_local, test_whole = [], []
    for rows in data.eval_batches(source, batch, config):
        test_local.append(np.where(rows["mask"], decode(rows["image"]), -1))
        x, mask = parallel.put_batch((rows["image"], rows["mask"]), mesh, batch)
        test_whole.append(np.where(parallel.gather(mask), decode(parallel.gather(x)), -1))
    os.makedirs(args.out, exist_ok=True)
    np.savez(
        os.path.join(args.out, f"rows-{jax.process_index()}.npz"),
        local=np.stack(local),
        whole=np.stack(whole),
        test_local=np.stack(test_local),
        test_whole=np.stack(test_whole),
    )


cli.COMMANDS.append(cli.Command("data-rows", "the data pipeline's rows, per process", _add_data_rows, _data_rows))

if __name__ == "__main__":
    if os.environ.get("SCORE_SDE_TEST_JOURNAL"):
        _journal(os.environ["SCORE_SDE_TEST_JOURNAL"])
    if os.environ.get("SCORE_SDE_TEST_FEATURES") == "fake":
        _fake_features()
    if os.environ.get("SCORE_SDE_TEST_STEP_SECONDS"):
        _slow_batches(float(os.environ["SCORE_SDE_TEST_STEP_SECONDS"]))
    if os.environ.get("SCORE_SDE_TEST_FAIL"):
        kind, step = os.environ["SCORE_SDE_TEST_FAIL"].split(":")
        _fail(kind, int(step))
    sys.exit(cli.main())
