"""Where a training step's memory goes, on the CPU: XLA's compiled memory analysis of the paper's CIFAR-10 DDPM++
and NCSN++ steps (the arguments: parameters, EMA and Adam's two moments, donated and aliased to the outputs; and
the temporaries: activations kept for the backward pass, gradients, XLA's scratch), with each activation
checkpointing setting (config.training.remat) and each XLA:CPU scheduler, and the step's time.

Each setting runs in its own process (the scheduler is an XLA flag, read when the backends start), with the
command line's host-memory setting (`score_sde.host_memory`). A markdown table goes to --out:

    python benchmarks/bench_memory.py [--batch 8] [--reps 3] [--out benchmarks/results/memory_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = {
    "DDPM++ (VP)": "configs/vp/cifar10_ddpmpp_continuous.py",
    "NCSN++ (VE)": "configs/ve/cifar10_ncsnpp_continuous.py",
}
SCHEDULERS = ("CPU_SCHEDULER_TYPE_DEFAULT", "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED")


def measure(config_path: str, batch: int, remat: str, reps: int) -> dict:
    """In this process: the compiled step's memory analysis (MiB) and the median of ``reps`` steps (s)."""
    from score_sde import host_memory

    host_memory.keep_host_memory()
    import jax
    import numpy as np

    from score_sde import models, parallel, train, wiring
    from score_sde.config import load_config

    overrides = [f"training.batch_size={batch}", "training.n_jitted_steps=1", f"training.remat={remat}"]
    config = load_config(config_path, overrides)
    model, mesh = models.get_model(config), parallel.data_mesh(jax.devices()[:1])
    optimizer = train.get_optimizer(config)
    loss_fn = wiring.make_loss_fn(config, model, train=True)
    step = train.make_train_fn(loss_fn, optimizer, ema_rate=0.999, mesh=mesh, key=jax.random.key(0))
    state = train.init_state(config, model, optimizer, parallel.replicated(mesh))
    d = config.data
    rows = np.zeros((1, batch, d.image_size, d.image_size, d.num_channels), np.float32)
    batches = parallel.put_batch(rows, mesh, batch, batch_axis=1)
    compiled = step.lower(state, batches).compile()
    analysis = compiled.memory_analysis()
    times = []
    for _ in range(reps + 1):  # the first call warms up
        start = time.perf_counter()
        state, (losses, _) = compiled(state, batches)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - start)
    mib = 2**20
    parameters = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    return {
        "parameters_mib": 4 * parameters / mib,
        "arguments_mib": analysis.argument_size_in_bytes / mib,
        "aliased_mib": analysis.alias_size_in_bytes / mib,
        "temporaries_mib": analysis.temp_size_in_bytes / mib,
        "step_s": float(np.median(times[1:])),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/memory_cpu.md")
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "BATCH", "REMAT", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a worker: one setting, its result as JSON on the last line
        config, batch, remat, reps = args.one
        print(json.dumps(measure(config, int(batch), remat, int(reps))))
        return
    load_before = machine.load_average()
    lines = []
    for label, config in NETWORKS.items():
        for scheduler in SCHEDULERS:
            for remat in ("none", "blocks", "full"):
                env = {**os.environ, "XLA_FLAGS": f"--xla_cpu_scheduler_type={scheduler}", "PYTHONPATH": REPO}
                one = [sys.executable, __file__, "--one", config, str(args.batch), remat, str(args.reps)]
                out = subprocess.run(one, env=env, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                lines.append(
                    f"| {label} | {scheduler.removeprefix('CPU_SCHEDULER_TYPE_').lower()} | {remat} | "
                    f"{r['parameters_mib']:.0f} | {r['arguments_mib']:.0f} | {r['aliased_mib']:.0f} | "
                    f"{r['temporaries_mib']:.0f} | {r['step_s']:.2f} |"
                )
                print(lines[-1], flush=True)
    text = f"""# Memory of a training step (CPU)

- command: `{machine.command()}`
- machine: {machine.describe()}
- load average (1/5/15 min): {load_before} at the start, {machine.load_average()} at the end
- CIFAR-10 configs at the paper's width, batch {args.batch}, float32; XLA's compiled memory analysis of one step
  (MiB): the arguments are the state (parameters, EMA, two Adam moments: 4 x the parameters) and the batch, donated
  and aliased to the outputs; the temporaries are everything else the step holds at its peak (activations kept
  for the backward pass, gradients, scratch). Step: the median of {args.reps} steps after a warm-up, one process per
  setting.

| network | XLA:CPU scheduler | remat | parameters | arguments | aliased | temporaries | step (s) |
|---|---|---|---:|---:|---:|---:|---:|
{chr(10).join(lines)}
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
