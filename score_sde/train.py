"""Data-parallel training over every device of every host, resumable at any step.

One training step (``config.training.n_jitted_steps`` of them per compiled call, with `jax.lax.scan`):

    loss   = mean over the global batch of the per-example score-matching loss  (core's losses.py)
    grads  = pmean over devices of d loss_local / d params
    params = Adam(clip_by_global_norm(grads, grad_clip), lr * min(step / warmup, 1))
    ema    = d * ema + (1 - d) * params,  d = ema_rate (the official JAX code), or with config.model.ema_warmup
             min(ema_rate, (1 + n) / (10 + n)) at the n-th update (the official PyTorch port)

Determinism: the global batch of step s is a function of (seed, s) (the data pipeline); the random
draws of example i of step s (diffusion time, noise, dropout) come from the key fold_in(fold_in(key, s), i).
Neither depends on how many devices or hosts share the batch, nor on where a run was resumed, so a run
on 8 devices equals one on 1 device, and a killed and restarted run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde import checkpoints as ckpt_lib
from score_sde import data as data_lib
from score_sde import models, parallel
from score_sde.evaluation.images import save_grid
from score_sde.parallel import to_host
from score_sde.wiring import (
    EVAL_STREAM,
    INIT_STREAM,
    SAMPLE_STREAM,
    TRAIN_STREAM,
    LossFn,
    class_guidance,
    formulation,
    make_classifier_loss_fn,
    make_loss_fn,
    make_sample_fn,
    stream_key,
    with_later_keys,
)

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A non-finite loss or gradient; the message names the step and the last good checkpoint."""


class Preempted(Exception):
    """Training stopped on a preemption notice (SIGTERM to any process): every process saved the checkpoint of
    the step they all reached; the same command resumes from it. The command line exits 0 with its message."""


@contextlib.contextmanager
def _preemption_notice():
    """An event that SIGTERM sets while the block runs (cloud TPUs and spot GPUs send it some seconds before
    they take the machine away), the previous handler restored after. Outside the main thread, where Python
    takes no signal handlers, the event is never set."""
    notice = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield notice
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: notice.set())
    try:
        yield notice
    finally:
        signal.signal(signal.SIGTERM, previous)


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # int32 scalar: number of steps taken
    params: Any
    params_ema: Any
    opt_state: Any


# ---------------------------------------------------------------------------------------------------
# Optimizer and state


def get_optimizer(config) -> optax.GradientTransformation:
    """Adam with the official ``optimization_manager``: linear warm-up of the learning rate over
    ``config.optim.warmup`` steps (lr = 0 at step 0), then clipping of the global gradient norm to
    ``config.optim.grad_clip`` (off when negative) before the Adam update."""
    optim = config.optim
    if optim.optimizer != "Adam":
        raise ValueError(f"config.optim.optimizer={optim.optimizer!r}: only 'Adam' is implemented")
    lr, warmup = float(optim.lr), int(optim.warmup)
    schedule = (lambda count: lr * jnp.minimum(count / warmup, 1.0)) if warmup > 0 else lr
    # flax.optim.Adam of the official code: beta2 = 0.999, weight decay added to the update (AdamW).
    adam = optax.adamw(schedule, b1=optim.beta1, b2=0.999, eps=optim.eps, weight_decay=optim.weight_decay)
    if optim.grad_clip >= 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adam)
    return adam


def example_input(config, batch_size: int = 1):
    """Dummy (x, labels) of the config's data shape, to initialise a network."""
    shape = (batch_size, config.data.image_size, config.data.image_size, config.data.num_channels)
    return jnp.zeros(shape, jnp.float32), jnp.zeros((batch_size,), jnp.float32)


def init_state(config, model, optimizer: optax.GradientTransformation, sharding=None) -> TrainState:
    """Step 0: network parameters from the seed, EMA equal to them, fresh optimizer state; computed in one
    compiled call, placed with ``sharding`` (e.g. `parallel.replicated`) when given."""

    def init(key):
        params_key, dropout_key = jax.random.split(key)
        variables = model.init({"params": params_key, "dropout": dropout_key}, *example_input(config), train=False)
        params = variables["params"]
        # A separate copy for the EMA: the compiled step donates (reuses) the buffers of both.
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            params_ema=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
        )

    key = stream_key(config, INIT_STREAM)
    lowered = jax.jit(init, out_shardings=sharding).lower(key)
    # It runs once: compile it fast rather than make it run fast. LLVM's optimisations took 22 of the
    # 27 s compiling the digits' DDPM++ initialisation on the CPU (the XLA:TPU compiler has no such option).
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() in ("cpu", "gpu") else None
    return lowered.compile(options)(key)


# ---------------------------------------------------------------------------------------------------
# The compiled training step


def _rows(x) -> int:
    """The number of rows of a batch: an array (B, ...) or a pytree of them (e.g. images and labels)."""
    return jax.tree.leaves(x)[0].shape[0]


def per_example_losses(loss_fn: LossFn, params, keys, x):
    """``loss_fn`` on each row of x (an array or a pytree of arrays with rows first), row i drawing its
    randomness from keys[i]: (B,)."""
    return jax.vmap(lambda k, xi: loss_fn(params, k, jax.tree.map(lambda a: a[None], xi)))(keys, x)


def per_example_mean(loss_fn: LossFn, params, keys, x):
    """Mean of ``loss_fn`` over the rows of x, row i drawing its randomness from keys[i]."""
    return jnp.mean(per_example_losses(loss_fn, params, keys, x))


def ema_decay(step, ema_rate: float, warmup: bool = False):
    """The EMA's decay at the update after ``step`` steps: ``ema_rate`` from the first update (the official JAX
    code), or with ``warmup`` min(ema_rate, (1 + n) / (10 + n)) at update n = step + 1 (the official PyTorch
    port's ExponentialMovingAverage, whose early averages forget the initial weights faster)."""
    if not warmup:
        return ema_rate
    n = step + 1
    return jnp.minimum(ema_rate, (1.0 + n) / (10.0 + n))


def make_train_fn(loss_fn: LossFn, optimizer, *, ema_rate: float, mesh, key: jax.Array, ema_warmup: bool = False):
    """Returns ``train_fn(state, batches) -> (state, (losses, grad_norms))``, compiled, running one step per
    leading entry of ``batches`` (n_steps, B, ...), or a pytree of such arrays (sharded over the batch axis,
    see `parallel.put_batch`); state is replicated (`parallel.put_replicated`) and donated. The EMA decays as
    `ema_decay` says."""
    axis = parallel.AXIS

    def one_step(state: TrainState, x):
        local_b = _rows(x)
        rows = jax.lax.axis_index(axis) * local_b + jnp.arange(local_b)
        step_key = jax.random.fold_in(key, state.step)
        keys = jax.vmap(lambda r: jax.random.fold_in(step_key, r))(rows)
        # Differentiate with respect to a per-device copy of the parameters: the gradient of the local loss.
        params = jax.lax.pcast(state.params, axis, to="varying")
        loss, grads = jax.value_and_grad(per_example_mean, argnums=1)(loss_fn, params, keys, x)
        grads = jax.lax.pmean(grads, axis)
        loss = jax.lax.pmean(loss, axis)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        decay = ema_decay(state.step.astype(jnp.float32), ema_rate, ema_warmup)
        params_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.params_ema, new_params)
        new_state = TrainState(step=state.step + 1, params=new_params, params_ema=params_ema, opt_state=opt_state)
        return new_state, (loss, optax.tree.norm(grads))

    def steps(state, batches):
        if _rows(batches) == 1:
            state, metrics = one_step(state, jax.tree.map(lambda b: b[0], batches))
            return state, jax.tree.map(lambda m: m[None], metrics)
        # XLA:CPU runs the convolutions of a loop body about 20x slower than the same ones outside a loop
        # (measured on the digits config), so on the CPU the steps are unrolled instead.
        return jax.lax.scan(one_step, state, batches, unroll=jax.default_backend() == "cpu")

    spec = jax.sharding.PartitionSpec
    sharded = jax.shard_map(steps, mesh=mesh, in_specs=(spec(), spec(None, axis)), out_specs=(spec(), spec()))
    return jax.jit(sharded, donate_argnums=0)


def make_eval_fn(loss_fn: LossFn, *, mesh):
    """``eval_fn(params, key, x, mask) -> (sum of losses, number of rows)`` over the rows of a global
    batch x (B, ...) (or a pytree of such arrays) where mask (B,) is true, both sharded over the batch axis
    (padding rows are masked)."""
    axis = parallel.AXIS
    spec = jax.sharding.PartitionSpec

    def local(params, key, x, mask):
        rows = jax.lax.axis_index(axis) * _rows(x) + jnp.arange(_rows(x))
        keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(rows)
        losses = per_example_losses(loss_fn, params, keys, x)
        return jax.lax.psum(jnp.sum(jnp.where(mask, losses, 0.0)), axis), jax.lax.psum(jnp.sum(mask), axis)

    return jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(spec(), spec(), spec(axis), spec(axis)), out_specs=(spec(), spec()))
    )


# ---------------------------------------------------------------------------------------------------
# The training loop


def check_workdir(workdir: str) -> str:
    """Creates ``workdir`` if needed; says clearly why it cannot be used."""
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir} exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create workdir {workdir}: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise PermissionError(f"workdir {workdir} is not writable")
    return workdir


def _check_same_model(saved, config, workdir):
    """Refuses to resume checkpoints of a different network (their parameters would not fit)."""
    if saved is None or "model" not in saved:
        return
    saved, config = with_later_keys(saved), with_later_keys(config)
    if formulation(saved) != formulation(config):
        raise ValueError(
            f"workdir {workdir} holds checkpoints trained with the {formulation(saved)!r} formulation, not the "
            f"{formulation(config)!r} one (config.model.formulation); use another --workdir"
        )
    now = json.loads(config.model.to_json())
    before = json.loads(saved.model.to_json())
    # Fields that change how the network is trained or run, not the shapes of its parameters.
    free = (
        "ema_rate",
        "ema_warmup",
        "dtype",
        "dropout",
        "sigma_min",
        "sigma_max",
        "num_scales",
        "beta_min",
        "beta_max",
    )
    differ = sorted(k for k in set(now) | set(before) if k not in free and now.get(k) != before.get(k))
    if differ:
        details = ", ".join(f"model.{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in differ)
        raise ValueError(
            f"workdir {workdir} holds checkpoints of a different network ({details}); use another --workdir"
        )


class _Monitor:
    """Console progress bar, TensorBoard and metrics.jsonl, on the first host only."""

    def __init__(self, workdir: str, start: int, total: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        import tensorboardX
        import tqdm

        self.writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.metrics = open(os.path.join(workdir, "metrics.jsonl"), "a")
        # Redraw often on a terminal, rarely into a log file (where every redraw is a line).
        interval = 0.5 if sys.stderr.isatty() else 60
        self.bar = tqdm.tqdm(
            total=total, initial=start, unit="step", dynamic_ncols=True, smoothing=0.1, mininterval=interval
        )

    def scalars(self, step: int, **values):
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.metrics.write(json.dumps({"step": step, **values}) + "\n")
        self.metrics.flush()
        if "loss" in values:
            self.bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)

    def advance(self, n: int):
        if self.enabled:
            self.bar.update(n)

    def image(self, step: int, name: str, grid: np.ndarray):
        if self.enabled:
            self.writer.add_image(name, grid, step, dataformats="HWC")

    def write(self, message: str):
        if self.enabled:
            self.bar.write(message)

    def close(self):
        if self.enabled:
            self.bar.close()
            self.writer.close()
            self.metrics.close()


def _initialised_from(path: str, config, state: TrainState, mesh) -> TrainState:
    """``state`` (step 0, a fresh optimizer) with the parameters and EMA of the model at ``path``, which must be
    of the network of ``config`` (the first parameter that differs is named, as `score-sde convert` does) and of
    its formulation."""
    from score_sde.convert import CheckpointMismatch, fit_to_config

    params, params_ema, saved = ckpt_lib.load_model(path)
    if formulation(with_later_keys(saved)) != formulation(config):
        raise ValueError(
            f"--init-from {path}: the model was trained with the {formulation(saved)!r} formulation, the config "
            f"is of the {formulation(config)!r} one (config.model.formulation)"
        )
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state.params)
    try:
        params, params_ema = fit_to_config(params, shapes), fit_to_config(params_ema, shapes)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"--init-from {path} does not fit the config's network: {e}") from None
    return TrainState(
        step=state.step,
        params=parallel.put_replicated(params, mesh),
        params_ema=parallel.put_replicated(params_ema, mesh),
        opt_state=state.opt_state,
    )


def _crossed(before: int, after: int, freq: int) -> bool:
    """Whether a multiple of ``freq`` lies in (before, after]."""
    return freq > 0 and after // freq > before // freq


def run_training(
    config,
    workdir: str,
    *,
    model,
    loss_fn: LossFn,
    train_batches,
    eval_loss_fn=None,
    eval_batch=None,
    sample_fn=None,
    mesh=None,
    init_from: str | None = None,
) -> TrainState:
    """The training loop, resuming from the newest readable checkpoint in ``workdir``; without one, from the
    parameters and EMA of the model at ``init_from`` (a model checkpoint, a workdir or one of its steps) if given,
    with a fresh optimizer at step 0 (fine-tuning), else from the seed's initialisation.

    ``train_batches(start_step)`` iterates over this host's rows of the global batches of steps
    start_step, start_step + 1, ... (numpy, scaled to the model's range; an array of images or a pytree of
    arrays, e.g. images and labels, that ``loss_fn`` takes row by row); ``eval_batch(step)`` (optional)
    gives this host's rows of a test batch of the training batch size, for ``eval_loss_fn``;
    ``sample_fn(params, key)`` (optional) returns (images in [0, 1] (N, H, W, C), nfe) for the sample
    grids. Returns the final state.
    """
    training = config.training
    workdir = check_workdir(workdir)
    mesh = parallel.data_mesh() if mesh is None else mesh
    batch_size = int(training.batch_size)
    parallel.check_batch_size(batch_size, mesh)
    n_iters, chunk = int(training.n_iters), max(1, int(training.n_jitted_steps))
    is_main = jax.process_index() == 0

    optimizer = get_optimizer(config)
    checkpoints = ckpt_lib.TrainCheckpoints(workdir)
    _check_same_model(checkpoints.saved_config(), config, workdir)
    state = init_state(config, model, optimizer, parallel.replicated(mesh))
    restored = checkpoints.restore_latest(
        ckpt_lib.abstract({"params": state.params, "params_ema": state.params_ema, "opt_state": state.opt_state})
    )
    if restored is not None:
        step, tree = restored
        state = TrainState(step=parallel.put_replicated(jnp.int32(step), mesh), **tree)
        log.info("resuming from step %d of %s", step, workdir)
    elif init_from is not None:
        state = _initialised_from(init_from, config, state, mesh)
        log.info("starting from the parameters and EMA of %s (a fresh optimizer, step 0)", init_from)
    start = int(to_host(state.step))

    train_fn = make_train_fn(
        loss_fn,
        optimizer,
        ema_rate=float(config.model.ema_rate),
        mesh=mesh,
        key=stream_key(config, TRAIN_STREAM),
        ema_warmup=bool(config.model.get("ema_warmup", False)),
    )
    eval_fn = make_eval_fn(eval_loss_fn, mesh=mesh) if eval_batch is not None else None
    batches = train_batches(start)
    monitor = _Monitor(workdir, start, n_iters, is_main)
    last_saved = restored[0] if restored is not None else None

    def check(first_step: int, losses, grad_norms):
        """Raises TrainingDiverged at the first non-finite loss or gradient of a chunk."""
        losses, grad_norms = to_host(losses), to_host(grad_norms)
        bad = np.flatnonzero(~(np.isfinite(losses) & np.isfinite(grad_norms)))
        if bad.size:
            s = first_step + int(bad[0]) + 1  # counted from 1, as in the logs
            checkpoints.wait()
            where = (
                f"the last good checkpoint is step {last_saved} in {workdir}"
                if last_saved is not None
                else "no checkpoint was saved"
            )
            raise TrainingDiverged(
                f"training diverged at step {s}: loss {losses[bad[0]]}, gradient norm "
                f"{grad_norms[bad[0]]} ({where}; restarting resumes from it)"
            )
        return losses, grad_norms

    step = start
    with _preemption_notice() as notice:
        try:
            while step < n_iters:
                n = min(chunk, n_iters - step)
                host = jax.tree.map(lambda *rows: np.stack(rows), *[next(batches) for _ in range(n)])
                state, (losses, grad_norms) = train_fn(state, parallel.put_batch(host, mesh, batch_size, batch_axis=1))
                losses, grad_norms = check(step, losses, grad_norms)
                before, step = step, step + n
                monitor.advance(n)
                for i, (loss, grad_norm) in enumerate(zip(losses, grad_norms)):  # the chunk's steps on log_freq
                    if (before + i + 1) % max(1, training.log_freq) == 0:
                        monitor.scalars(before + i + 1, loss=float(loss), grad_norm=float(grad_norm))

                if eval_fn is not None and _crossed(before, step, training.eval_freq):
                    rows = eval_batch(step)
                    x, mask = parallel.put_batch((rows, np.ones(_rows(rows), bool)), mesh, batch_size)
                    key = jax.random.fold_in(stream_key(config, EVAL_STREAM), step)
                    total, count = eval_fn(state.params_ema, key, x, mask)  # as the official loop: the EMA
                    monitor.scalars(step, eval_loss=float(to_host(total)) / max(1, int(to_host(count))))

                kinds = [
                    kind
                    for kind, freq in (
                        (ckpt_lib.PERIODIC, training.snapshot_freq),
                        (ckpt_lib.PREEMPTION, training.snapshot_freq_for_preemption),
                    )
                    if _crossed(before, step, freq)
                ]
                if step == n_iters:
                    kinds = [ckpt_lib.PERIODIC]
                # A preemption notice to any process stops every one at this step (they agree on it), saved.
                preempted = step < n_iters and not parallel.all_agree(not notice.is_set())
                if preempted and not kinds:
                    kinds = [ckpt_lib.PREEMPTION]
                if kinds:
                    checkpoints.save(
                        step,
                        params=state.params,
                        params_ema=state.params_ema,
                        opt_state=state.opt_state,
                        config=config,
                        kinds=kinds,
                    )
                    last_saved = step
                if (
                    sample_fn is not None
                    and training.snapshot_sampling
                    and ckpt_lib.PERIODIC in kinds
                    and not preempted
                ):
                    images, _ = sample_fn(state.params_ema, jax.random.fold_in(stream_key(config, SAMPLE_STREAM), step))
                    images = parallel.gather(images)
                    if is_main:
                        grid = save_grid(images, os.path.join(workdir, "samples", f"step_{step}.png"))
                        monitor.image(step, "samples", grid)
                if preempted:
                    checkpoints.wait()
                    raise Preempted(
                        f"preempted (SIGTERM) at step {step} of {n_iters}: its checkpoint is saved in {workdir}; "
                        "the same command resumes from it"
                    )
            checkpoints.wait()
        finally:
            monitor.close()
            checkpoints.close()
    return state


# ---------------------------------------------------------------------------------------------------
# The job: the network, data, loss and sampler of a config (wiring.py) through the loop


def train(config, workdir: str, init_from: str | None = None) -> TrainState:
    """Trains the network of ``config`` on its dataset in ``workdir``, resuming if checkpoints are there. A
    class-conditional network (config.model.num_classes > 0) trains on (images, labels), with label dropout
    (config.training.label_dropout), and its sample grids show the classes in turn (unguided). ``init_from``: a
    model to fine-tune (`run_training`)."""
    model = models.get_model(config)
    classes = models.num_classes(config)
    sample_fn = None
    if config.training.snapshot_sampling:
        n = min(64, int(config.training.batch_size))
        unguided = make_sample_fn(config, model, num_samples=n)
        sample_fn = unguided
        if classes:
            guide = class_guidance(config).guide(np.arange(n) % classes)

            def sample_fn(params, key):
                return unguided(params, key, guide)

    return _train_on_data(
        config,
        workdir,
        model,
        make_loss_fn(config, model, train=True),
        make_loss_fn(config, model, train=False),
        classes,
        sample_fn,
        init_from,
    )


def train_classifier(config, workdir: str, init_from: str | None = None) -> TrainState:
    """Trains the time-dependent classifier of ``config`` (a classifier config, e.g. configs/classifier/) with
    the cross-entropy of the labels given x_t ~ p_t(x_t | x_0) at t ~ U(eps, T) of config.training.sde
    (`wiring.make_classifier_loss_fn`): the data, checkpoints, resume and progress bar of `train`."""
    for key in ("num_classes", "input_mean", "input_std"):
        if key not in config.model:
            raise ValueError(
                f"config.model.{key} is missing: train-classifier needs a classifier config (e.g. configs/classifier/)"
            )
    model = models.get_model(config)
    loss_fn = make_classifier_loss_fn(config, model)
    return _train_on_data(config, workdir, model, loss_fn, loss_fn, int(config.model.num_classes), None, init_from)


def _loss_rows(config, source, num_classes: int):
    """rows(batch) -> what the losses take from a data batch of ``source``: the images, or for ``num_classes`` > 0
    (images, labels), refusing a dataset without labels or with more classes than ``num_classes``."""
    if not num_classes:
        return lambda batch: batch["image"]
    dataset = config.data.dataset
    if not source.num_classes:
        raise ValueError(
            f"config.model.num_classes={num_classes} asks for class labels, but dataset {dataset!r} has none "
            "(a folder needs class sub-folders, an npz file y_train / y_test or labels)"
        )
    if source.num_classes > num_classes:
        raise ValueError(
            f"dataset {dataset!r} has labels 0..{source.num_classes - 1}, outside config.model.num_classes="
            f"{num_classes} (labels 0..{num_classes - 1})"
        )
    return lambda batch: (batch["image"], batch["label"])


def _train_on_data(config, workdir, model, loss_fn, eval_loss_fn, num_classes, sample_fn, init_from) -> TrainState:
    """`run_training` on the config's train split, the loss on its test split; the losses take the images, or
    (images, labels) with ``num_classes`` > 0."""
    parallel.check_batch_size(int(config.training.batch_size), parallel.data_mesh())
    train_source = data_lib.get_source(config, "train")
    test_source = data_lib.get_source(config, "test")
    rows, test_rows = (_loss_rows(config, source, num_classes) for source in (train_source, test_source))

    def train_batches(start: int):
        for batch in data_lib.train_batches(train_source, config, start_step=start):
            yield rows(batch)

    test_batches = data_lib.train_dataset(test_source, config)  # random access by step, as the training data
    return run_training(
        config,
        workdir,
        model=model,
        loss_fn=loss_fn,
        train_batches=train_batches,
        eval_loss_fn=eval_loss_fn,
        eval_batch=lambda step: test_rows(test_batches[step]),
        sample_fn=sample_fn,
        init_from=init_from,
    )
