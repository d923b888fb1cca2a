"""Data parallelism over every device of every host: a 1-D device mesh named 'data'.

The training state is replicated on every device; a batch is split along its batch axis, device d of
the mesh holding rows ``[d * B / D, (d + 1) * B / D)`` of the global batch of B rows. Devices are ordered
by (process, device id), so the rows of one host are contiguous and host p holds rows
``[p * B / P, (p + 1) * B / P)``: the rows `host_rows` names and the data pipeline hands it.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins the hosts of a multi-host job (TPU pods, SLURM and the like are detected without arguments).
    Must run before anything touches a device, on every host, with the same arguments."""
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
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
