"""Data parallelism over every device of every host: a 1-D device mesh named 'data'.

The training state is replicated on every device; a batch is split along its batch axis, device d of
the mesh holding rows ``[d * B / D, (d + 1) * B / D)`` of the global batch of B rows. Devices are ordered
by (process, device id), so the rows of one host are contiguous and host p holds rows
``[p * B / P, (p + 1) * B / P)``: the rows `host_rows` names and the data pipeline hands it.

With several processes (hosts): `all_agree`, `from_first` and `barrier` make decisions the same on every
process (they are collectives: every process calls them at the same point), and `stop_with_peers` with
`fail` stop every process, with the message, when one fails.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
    """Joins the hosts of a multi-host job (TPU pods, SLURM and the like are detected without arguments).
    Must run before anything touches a device, on every host, with the same arguments.

    A host that has not joined after ``initialization_timeout`` seconds, or that stops responding for
    ``heartbeat_timeout`` seconds (killed, preempted), stops every other host with an error naming it,
    instead of leaving them waiting for it."""
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every host), ordered by (process, id)."""
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Splits axis ``batch_axis`` over the mesh; the leading axes (e.g. steps of a scan) are not split."""
    return NamedSharding(mesh, P(*([None] * batch_axis), AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.training.batch_size") -> int:
    """Returns the per-device batch size, or says why ``batch_size`` cannot be split over the mesh."""
    if batch_size % mesh.size:
        raise ValueError(f"{what}={batch_size} is not divisible by the number of devices ({mesh.size})")
    return batch_size // mesh.size


def host_rows(global_batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this host feeds to its devices."""
    per_device = check_batch_size(global_batch_size, mesh)
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def put_replicated(tree, mesh: Mesh):
    """Copies a pytree (the same on every host) to every device."""
    return jax.device_put(tree, replicated(mesh))


def gather(x) -> np.ndarray:
    """A global array (e.g. split over the batch axis) as numpy, whole, on every host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(x) -> np.ndarray:
    """A replicated array as numpy (works on every host of a multi-host run)."""
    return np.asarray(x.addressable_data(0))


def put_batch(host_batch, mesh: Mesh, global_batch_size: int, batch_axis: int = 0):
    """Assembles the global batch array from this host's rows (a pytree of numpy arrays whose axis
    ``batch_axis`` holds the rows `host_rows` names), split over the devices."""
    sharding = batch_sharding(mesh, batch_axis)

    def put(rows):
        rows = np.asarray(rows)
        shape = rows.shape[:batch_axis] + (global_batch_size,) + rows.shape[batch_axis + 1 :]
        return jax.make_array_from_process_local_data(sharding, rows, shape)

    return jax.tree.map(put, host_batch)


# ---------------------------------------------------------------------------------------------------
# Agreement between processes: every process calls these at the same point (they are collectives).


def all_agree(ok: bool) -> bool:
    """Whether ``ok`` holds on every process."""
    if jax.process_count() == 1:
        return bool(ok)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(bool(ok)))))


def from_first(x: np.ndarray) -> np.ndarray:
    """Process 0's value of ``x`` (same shape and dtype on every process), on every process: a decision
    taken once, e.g. from files that a shared file system may show to the hosts at different times."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))


def barrier(name: str) -> None:
    """Returns when every process has reached the barrier ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ---------------------------------------------------------------------------------------------------
# One process fails, all stop: the others would otherwise wait for it in their next collective.

_FAILED, _SEEN = "score_sde/failed/", "score_sde/seen/"
_failing = threading.Event()


def _store():
    """jax.distributed's key-value store (it has no public accessor; orbax reaches it the same way)."""
    from jax._src import distributed

    return distributed.global_state.client


def _wait_for_peers(store, timeout: float = 30.0) -> None:
    """Waits until every other process has failed or seen a failure, so that none is left waiting for a
    dead one; then process 0, which holds the coordination service, lets the others end first."""
    others = [q for q in range(jax.process_count()) if q != jax.process_index()]
    deadline = time.monotonic() + timeout
    while others and time.monotonic() < deadline:
        try:
            told = {key.rsplit("/", 1)[-1] for prefix in (_FAILED, _SEEN) for key, _ in store.key_value_dir_get(prefix)}
        except Exception:  # the service is gone (process 0 ended): nobody is left to tell
            return
        others = [q for q in others if str(q) not in told]
        time.sleep(0.1)
    if jax.process_index() == 0:
        time.sleep(1.0)


def stop_with_peers(report: Callable[[int, str], None], interval: float = 0.5) -> None:
    """Watches, in a background thread, for the failure of another process of this multi-process job (see
    `fail`): then calls ``report(process, message)`` and ends this process with exit status 1."""
    store = _store()
    if store is None:
        return

    def watch():
        while not _failing.is_set():
            try:
                failed = store.key_value_dir_get(_FAILED)
            except Exception:  # the coordination service is gone: jax.distributed ends this process itself
                return
            failed = [(int(key.rsplit("/", 1)[-1]), message) for key, message in failed]
            failed = [(q, message) for q, message in failed if q != jax.process_index()]
            if failed and not _failing.is_set():
                _failing.set()
                report(*min(failed))
                store.key_value_set(f"{_SEEN}{jax.process_index()}", "1")
                _wait_for_peers(store)
                os._exit(1)
            time.sleep(interval)

    threading.Thread(target=watch, name="score_sde-peers", daemon=True).start()


def fail(message: str) -> NoReturn:
    """Ends this process with exit status 1 after telling the other processes, which stop too, each
    reporting ``message`` (see `stop_with_peers`). Skips the normal shutdown of jax.distributed, which
    would wait for every process to reach it."""
    store = _store()
    if store is not None:
        if _failing.is_set():  # another process failed first: the watching thread is ending this one
            time.sleep(60)
        _failing.set()
        store.key_value_set(f"{_FAILED}{jax.process_index()}", message)
        _wait_for_peers(store)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
