"""Checkpoints: model checkpoints (what sampling and evaluation read) and training checkpoints.

A *model checkpoint* holds the pytree ``{"params": ..., "params_ema": ...}`` (nested dicts of float32
arrays, the Flax ``params`` collection of the network) and ``config.json``, the ml_collections config
the network was built from. Converters from the released checkpoints write exactly this.

A *training checkpoint* extends it with the optimizer state. A training run's workdir holds two orbax
``CheckpointManager`` folders, each with one sub-folder per step:

    <workdir>/checkpoints/<step>/        every config.training.snapshot_freq steps, all kept
    <workdir>/checkpoints-meta/<step>/   every config.training.snapshot_freq_for_preemption steps, the
                                         last `PREEMPTION_KEEP` kept: what a preempted run resumes from
      model/    {"params", "params_ema"}      (the model checkpoint's pytree)
      train/    {"step", "opt_state"}
      config/   the config, as JSON

Orbax writes a step into a temporary folder and renames it when complete, and deletes old steps only
after a new one is complete, so a crash or a kill never leaves a half-written step in place of a good
one. A step that still cannot be read (a damaged disk, a file removed by hand) is skipped, with a
warning, for the previous readable one.

Any checkpoint restores on any devices and processes, whatever wrote it: a model checkpoint as numpy arrays,
a training state onto the shardings of the current mesh. With several processes, every process writes its
part of a step, and a step is used only if every process can read it (else all take the previous one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint._src.metadata import array_metadata_store

from score_sde import files, parallel

_TREE = "model"
_CONFIG = "config.json"
PERIODIC, PREEMPTION = "checkpoints", "checkpoints-meta"
# More than one, so that a preemption checkpoint found unreadable has a recent predecessor.
PREEMPTION_KEEP = 2

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names its path."""


class _OneWriterArrayHandler(ocp.type_handlers.ArrayHandler):
    """Orbax's handler of jax.Array, writing each replicated array from one device (see below)."""


def _write_replicated_arrays_once() -> None:
    """By default orbax cuts every replicated array into one slice per device, each replica writing its
    part ("replica-parallel"). That pays only when the replicas sit on several hosts; on one host it costs
    an eager slice per array and device: a small DDPM++ (539 arrays, 8 CPU devices) took 3 s per save
    instead of 0.8 s, 11 s instead of 1 s for the first. Called before saving, after jax.distributed
    has started (the process count is known only then)."""
    if jax.process_count() == 1 and not isinstance(
        ocp.type_handlers.get_type_handler(jax.Array), _OneWriterArrayHandler
    ):
        handler = _OneWriterArrayHandler(use_replica_parallel=False, array_metadata_store=array_metadata_store.Store())
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)  # the override is intended: no warning about it in every training log
        try:
            ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
        finally:
            absl.setLevel(level)


def save_model(directory: str, *, params, params_ema, config: ml_collections.ConfigDict) -> None:
    """Writes a model checkpoint to ``directory`` (which must not exist yet). It is written beside it under
    a temporary name and renamed when complete: a crash never leaves half a checkpoint under the name.
    With several processes, every process calls it with the same values; process 0 writes the config and
    renames."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(f"refusing to overwrite existing checkpoint directory {directory}")
    _write_replicated_arrays_once()
    tmp = f"{directory}.tmp"
    first = jax.process_index() == 0
    if first:
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier save that was killed
    parallel.barrier(f"save_model {tmp} clean")
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, _TREE), {"params": params, "params_ema": params_ema})
        checkpointer.wait_until_finished()
        if first:
            files.write_text(os.path.join(tmp, _CONFIG), config.to_json(indent=2))
            os.replace(tmp, directory)
    except BaseException:
        if first:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    parallel.barrier(f"save_model {directory} done")


def load_model(directory: str):
    """Reads a model checkpoint. Returns ``(params, params_ema, config)``, the parameters as numpy arrays,
    whatever the devices and processes that wrote it and those reading it.

    ``directory`` is a model checkpoint written by `save_model`, one step of a training checkpoint
    (``<workdir>/checkpoints/<step>``), or a training workdir (its latest readable step).
    """
    directory = os.path.abspath(directory)
    if any(os.path.isdir(os.path.join(directory, d)) for d in (PERIODIC, PREEMPTION)):
        return TrainCheckpoints(directory).load_latest_model()
    tree_dir = os.path.join(directory, _TREE)
    is_training_step = os.path.isdir(os.path.join(directory, "config"))
    config_path = os.path.join(directory, "config" if is_training_step else _CONFIG)
    for path in (tree_dir, config_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} is not a model checkpoint: {path} is missing")
    try:
        tree = _restore_on_host(tree_dir)
        if is_training_step:
            config = _read_json(config_path)
        else:
            with open(config_path) as f:
                config = json.load(f)
    except Exception as e:  # orbax/tensorstore raise many kinds; all mean the files are unreadable
        raise CheckpointError(f"model checkpoint {directory} is corrupt or incomplete: {_short(e)}") from e
    return tree["params"], tree["params_ema"], ml_collections.ConfigDict(config)


# Reads go through orbax's handlers, not its Checkpointer, whose restore ends with a barrier of all processes:
# when one process fails to read a step, the others must not be left waiting at that barrier while the
# first tries another step (the processes agree on each step instead, see `TrainCheckpoints.restore_latest`).


def _restore_on_host(path: str):
    """The pytree of arrays at ``path`` as numpy arrays. Without a target, orbax would restore each array
    with the sharding it was saved with, which fails on other devices ("Topology mismatch")."""
    handler = ocp.PyTreeCheckpointHandler()
    host = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), handler.metadata(epath.Path(path)).tree)
    return handler.restore(epath.Path(path), args=ocp.args.PyTreeRestore(restore_args=host))


def _restore(path: str, target):
    """The pytree at ``path`` in the structure, shapes, dtypes and shardings of ``target``."""
    return ocp.StandardCheckpointHandler().restore(epath.Path(path), args=ocp.args.StandardRestore(target))


def _read_json(path: str):
    return ocp.JsonCheckpointHandler().restore(epath.Path(path))


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _manager(directory: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    # The two managers of a workdir save concurrently (in background threads): with several processes, the
    # barriers of their saves must be told apart, or one save finds the other's barrier "already ongoing".
    barriers = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=os.path.basename(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, cleanup_tmp_directories=True, multiprocessing_options=barriers
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("model", "train", "config"))


class TrainCheckpoints:
    """The training checkpoints of one workdir (see the module docstring for the layout)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        _write_replicated_arrays_once()
        self.managers = {
            PERIODIC: _manager(os.path.join(self.workdir, PERIODIC), None),
            PREEMPTION: _manager(os.path.join(self.workdir, PREEMPTION), PREEMPTION_KEEP),
        }

    def save(self, step: int, *, params, params_ema, opt_state, config, kinds=(PREEMPTION,)) -> None:
        """Saves the state after ``step`` training steps as each kind in ``kinds`` (asynchronously: the
        files are complete after `wait`, and a step appears only when complete). A save that finds the disk
        full raises `files.DiskFull` here or at `wait`, naming the step's folder and the space left; the
        previous steps stay complete."""
        for kind in kinds:
            with self._disk_full(kind, step):
                self.managers[kind].save(
                    step,
                    args=ocp.args.Composite(
                        model=ocp.args.StandardSave({"params": params, "params_ema": params_ema}),
                        train=ocp.args.StandardSave({"step": step, "opt_state": opt_state}),
                        config=ocp.args.JsonSave(json.loads(config.to_json())),
                    ),
                )

    @contextlib.contextmanager
    def _disk_full(self, kind: str, step: int | None):
        """Turns a full disk met by orbax (now, or by the background write of an earlier step, which orbax
        reports at the next save or wait) into `files.DiskFull` naming the file (else the step's folder)."""
        try:
            yield
        except Exception as e:
            full = files.disk_full(e, self.path(step, kind) if step is not None else self.workdir, "saving checkpoint")
            if full is not None:
                raise full from e
            raise

    def steps(self) -> list[tuple[int, str]]:
        """(step, kind) of every complete checkpoint, newest first."""
        found = []
        for kind, manager in self.managers.items():
            manager.reload()
            found += [(step, kind) for step in manager.all_steps()]
        return sorted(found, reverse=True)

    def restore_latest(self, abstract_state: dict):
        """Restores the newest readable checkpoint into the structure, shapes, dtypes and shardings of
        ``abstract_state`` ({"params", "params_ema", "opt_state"} of jax.ShapeDtypeStruct). Returns
        ``(step, state)``, or None when there is no checkpoint; unreadable ones are skipped with a warning.
        """
        steps = self._agreed(self.steps())
        for step, kind in steps:
            path, problem = self.path(step, kind), None
            try:
                model = _restore(os.path.join(path, "model"), {k: abstract_state[k] for k in ("params", "params_ema")})
                train = _restore(os.path.join(path, "train"), {"step": 0, "opt_state": abstract_state["opt_state"]})
                if int(train["step"]) != step:
                    problem = f"skipping checkpoint {path}: it holds step {train['step']}"
            except Exception as e:  # corrupt or incomplete: fall back to the previous one
                problem = f"skipping unreadable checkpoint {path}: {_short(e)}"
            # Used only if every process can read it: processes resuming from different steps would train
            # different models, and wait for each other forever at the first save that differs.
            if not parallel.all_agree(problem is None):
                log.warning("%s", problem or f"skipping checkpoint {path}: another process cannot read it")
                continue
            return step, {**model, "opt_state": train["opt_state"]}
        if steps:
            raise CheckpointError(
                f"no checkpoint in {self.workdir} can be read (tried steps "
                f"{sorted({s for s, _ in steps})}); move them away to start afresh"
            )
        return None

    def _agreed(self, steps: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Process 0's list of ``steps`` on every process (a shared file system may show a new step to the
        hosts at different times; they must try the same steps in the same order)."""
        if jax.process_count() == 1:
            return steps
        kinds = list(self.managers)
        n = int(parallel.from_first(np.int32(len(steps))))
        if n == 0:
            return []
        codes = np.full((n, 2), -1, np.int32)
        codes[: min(n, len(steps))] = [(step, kinds.index(kind)) for step, kind in steps[:n]]
        return [(int(step), kinds[k]) for step, k in parallel.from_first(codes)]

    def saved_config(self):
        """The config of the newest checkpoint that has one, or None."""
        for step, kind in self.steps():
            try:
                return ml_collections.ConfigDict(_read_json(os.path.join(self.path(step, kind), "config")))
            except Exception:  # an unreadable step: the next one may do
                continue
        return None

    def load_latest_model(self):
        """``(params, params_ema, config)`` of the newest readable checkpoint, as `load_model`."""
        for step, kind in self._agreed(self.steps()):
            try:
                loaded, problem = load_model(self.path(step, kind)), None
            except CheckpointError as e:
                problem = f"skipping {e}"
            if parallel.all_agree(problem is None):  # every process samples or evaluates the same step
                return loaded
            log.warning("%s", problem or f"skipping {self.path(step, kind)}: another process cannot read it")
        raise CheckpointError(f"no readable checkpoint in {self.workdir}")

    def path(self, step: int, kind: str) -> str:
        return os.path.join(self.workdir, kind, str(step))

    def wait(self) -> None:
        for kind, manager in self.managers.items():
            with self._disk_full(kind, manager.latest_step()):
                manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves in flight and closes; called while an error propagates, it reports what closing
        raises (an earlier save's failure, again) as a warning instead of masking that error."""
        failing = sys.exc_info()[0] is not None
        for kind, manager in self.managers.items():
            try:
                with self._disk_full(kind, manager.latest_step()):
                    manager.close()
            except Exception as e:
                if not failing:
                    raise
                log.warning("closing the %s checkpoints of %s: %s", kind, self.workdir, _short(e))


def abstract(tree):
    """jax.ShapeDtypeStruct (with sharding) of every array of ``tree``: a restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
