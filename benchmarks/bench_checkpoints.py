"""Seconds to save and restore a training checkpoint (parameters, their EMA, Adam's state) replicated on
every local device: orbax's default, which cuts each replicated array into one slice per device for the
replicas to write together, against this project's one writer per array on a single host
(`score_sde.checkpoints`).

    python benchmarks/bench_checkpoints.py [--configs NAME ...] [--saves N] [--dir DIR] [--out FILE]

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 to see the cost on 8 CPU devices.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import machine  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from orbax.checkpoint._src.metadata import array_metadata_store  # noqa: E402

from score_sde import checkpoints, models, parallel, train  # noqa: E402
from score_sde.config import load_config  # noqa: E402

CONFIGS = {
    "small (digits)": "configs/small/digits.py",
    "DDPM++ (VP, CIFAR-10)": "configs/vp/cifar10_ddpmpp_continuous.py",
}


def use_writer(one_writer: bool) -> None:
    """Installs the array handler under test and keeps `checkpoints` from replacing it."""
    checkpoints._write_replicated_arrays_once = lambda: None
    cls = checkpoints._OneWriterArrayHandler if one_writer else ocp.type_handlers.ArrayHandler
    handler = cls(use_replica_parallel=not one_writer, array_metadata_store=array_metadata_store.Store())
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def measure(state, config, directory: str, *, one_writer: bool, saves: int) -> dict:
    use_writer(one_writer)
    store = checkpoints.TrainCheckpoints(directory)
    tree = {"params": state.params, "params_ema": state.params_ema, "opt_state": state.opt_state}
    times = []
    for step in range(1, saves + 2):
        start = time.perf_counter()
        store.save(step, **tree, config=config)
        store.wait()
        times.append(time.perf_counter() - start)
    target = checkpoints.abstract(tree)
    start = time.perf_counter()
    _, restored = store.restore_latest(target)
    jax.block_until_ready(restored)
    restore = time.perf_counter() - start
    store.close()
    return {"first": times[0], "save": sum(times[1:]) / saves, "restore": restore}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--saves", type=int, default=3, help="saves averaged after the first (default 3)")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    p.add_argument("--out", help="also write the table to this Markdown file")
    args = p.parse_args()

    lines = [
        f"# Checkpoint save and restore ({machine.command()})",
        "",
        f"- machine: {machine.describe()}; load average {machine.load_average()}",
        "",
        "| config | arrays | MB | writer | first save s | save s | restore s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    mesh = parallel.data_mesh(jax.local_devices())
    for name in args.configs:
        config = load_config(CONFIGS[name])
        model = models.get_model(config)
        state = train.init_state(config, model, train.get_optimizer(config), parallel.replicated(mesh))
        leaves = jax.tree.leaves((state.params, state.params_ema, state.opt_state))
        megabytes = sum(x.nbytes for x in leaves) / 1e6
        for one_writer in (False, True):
            root = tempfile.mkdtemp(dir=args.dir)
            try:
                r = measure(state, config, root, one_writer=one_writer, saves=args.saves)
            finally:
                shutil.rmtree(root)
            writer = "one per array" if one_writer else "orbax default (replica slices)"
            lines.append(
                f"| {name} | {len(leaves)} | {megabytes:.0f} | {writer} | {r['first']:.2f} | {r['save']:.2f} "
                f"| {r['restore']:.2f} |"
            )
            print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
