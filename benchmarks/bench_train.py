"""Training throughput (images/s) of the compiled data-parallel training step.

    python benchmarks/bench_train.py [--batch-size N] [--calls N] [--configs NAME ...] [--jitted-steps N ...]
                                     [--out FILE]

For the CIFAR-10 configs of NCSN++ (VE) and DDPM++ (VP) and the small digits config, with 1 and 5 steps
per compiled call (config.training.n_jitted_steps), in float32 and, on a GPU or TPU, bfloat16 too. The
step is `score_sde.train.make_train_fn` on every local device, on random data of the config's shape
(the input pipeline has its own benchmark). Reported: compile time of the first call, then images/s
over ``--calls`` further calls, and on GPU/TPU the peak device memory. Runs unchanged on CPU, GPU, TPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import machine  # noqa: E402
import numpy as np  # noqa: E402

from score_sde import models, parallel, train, wiring  # noqa: E402
from score_sde.config import load_config  # noqa: E402

CONFIGS = {
    "NCSN++ (VE, CIFAR-10)": "configs/ve/cifar10_ncsnpp_continuous.py",
    "DDPM++ (VP, CIFAR-10)": "configs/vp/cifar10_ddpmpp_continuous.py",
    "small (digits)": "configs/small/digits.py",
}


def peak_memory_gib(devices) -> float | None:
    stats = [d.memory_stats() for d in devices]
    if not all(stats) or any("peak_bytes_in_use" not in s for s in stats):
        return None
    return max(s["peak_bytes_in_use"] for s in stats) / 2**30


def measure(path: str, *, batch_size: int, n_steps: int, dtype: str, calls: int) -> dict:
    config = load_config(
        path, [f"training.batch_size={batch_size}", f"training.n_jitted_steps={n_steps}", f"model.dtype={dtype}"]
    )
    mesh = parallel.data_mesh(jax.local_devices())
    model = models.get_model(config)
    optimizer = train.get_optimizer(config)
    state = train.init_state(config, model, optimizer, parallel.replicated(mesh))
    train_fn = train.make_train_fn(
        wiring.make_loss_fn(config, model, train=True),
        optimizer,
        ema_rate=float(config.model.ema_rate),
        mesh=mesh,
        key=jax.random.PRNGKey(0),
    )
    size, channels = config.data.image_size, config.data.num_channels
    rows = np.random.default_rng(0).uniform(size=(n_steps, batch_size, size, size, channels)).astype(np.float32)
    batches = parallel.put_batch(rows, mesh, batch_size, batch_axis=1)
    t0 = time.perf_counter()
    state, (losses, _) = train_fn(state, batches)
    losses.block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(calls):
        state, (losses, _) = train_fn(state, batches)
    losses.block_until_ready()
    seconds = time.perf_counter() - t0
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        "images_per_s": calls * n_steps * batch_size / seconds,
        "compile_s": compile_s,
        "params": params,
        "memory_gib": peak_memory_gib(mesh.devices.flat),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_cpu = jax.default_backend() == "cpu"
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8 if on_cpu else 128,
        help="global batch (default: 8 on CPU, the official 128 on accelerators)",
    )
    parser.add_argument("--small-batch-size", type=int, default=64, help="global batch of the small config")
    parser.add_argument("--calls", type=int, default=3, help="timed calls after the compiling one")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="names of CONFIGS to run")
    parser.add_argument(
        "--jitted-steps",
        nargs="*",
        type=int,
        default=[1, 5],
        help="values of config.training.n_jitted_steps to measure (default: 1 5)",
    )
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()

    dtypes = ["float32"] if on_cpu else ["float32", "bfloat16"]
    lines = [
        f"# Training throughput ({machine.command()})",
        "",
        f"- machine: {machine.describe()}",
        "",
        "| config | params | batch | steps/call | dtype | compile s | images/s | peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    for name in args.configs:
        batch = args.small_batch_size if name.startswith("small") else args.batch_size
        for n_steps in args.jitted_steps:
            for dtype in dtypes:
                r = measure(CONFIGS[name], batch_size=batch, n_steps=n_steps, dtype=dtype, calls=args.calls)
                memory = "n/a" if r["memory_gib"] is None else f"{r['memory_gib']:.2f}"
                line = (
                    f"| {name} | {r['params'] / 1e6:.1f}M | {batch} | {n_steps} | {dtype} | {r['compile_s']:.0f} | "
                    f"{r['images_per_s']:.1f} | {memory} |"
                )
                lines.append(line)
                print(line, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
