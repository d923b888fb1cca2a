"""Speed of the paper's networks: NCSN++ and DDPM++ at their CIFAR-10 configs, float32 and bfloat16 compute.

For each: time per image of the forward pass (``model.apply``) and of forward + backward (the gradient of a
mean-square loss through the network in training mode, dropout on), the FLOPs of each per image from XLA's
cost analysis of the compiled function, and the fraction of the device's peak they reach.

    python benchmarks/bench_models.py [--batch 8] [--repeats 5] [--out benchmarks/results/models_cpu.md]

Peaks assumed: on a CPU, cores x the clock of /proc/cpuinfo x FLOPs per cycle per core from the vector units
its flags show (AVX-512: 2 FMA units x 16 float32 lanes x 2 = 64; AVX2: 2 x 8 x 2 = 32), the same figure for
bfloat16 (XLA's CPU backend converts it to float32); on a GPU, NVIDIA's dense peaks (H100 SXM and H200:
494.7 TFLOP/s for float32 through TF32 tensor cores, which XLA uses for float32 convolutions by default, and
989.4 for bfloat16).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import machine  # noqa: E402

from score_sde.config import load_config  # noqa: E402
from score_sde.models import get_model  # noqa: E402

NETWORKS = {"NCSN++": "configs/ve/cifar10_ncsnpp_continuous.py", "DDPM++": "configs/vp/cifar10_ddpmpp_continuous.py"}
GPU_PEAKS = {  # device_kind substring: (float32 via TF32, bfloat16), FLOP/s, dense
    "H100": (494.7e12, 989.4e12),
    "H200": (494.7e12, 989.4e12),
}


def cpu_peak() -> tuple[float, str]:
    """(FLOP/s, how it was obtained) for float32 on the CPU cores this process may use."""
    flags, mhz = set(), None
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("cpu MHz") and mhz is None:
            mhz = float(line.split(":", 1)[1])
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    cores = len(os.sched_getaffinity(0))
    return cores * mhz * 1e6 * per_cycle, f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} FLOP/cycle"


def device_peak(dtype: str) -> tuple[float, str]:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak()
    for kind, peaks in GPU_PEAKS.items():
        if kind in device.device_kind:
            peak = peaks[dtype == "bfloat16"]
            return peak, f"{device.device_kind} dense {'bfloat16' if dtype == 'bfloat16' else 'TF32'} peak"
    return float("nan"), f"no peak known for {device.device_kind}"


def flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def time_call(fn, args, repeats: int) -> float:
    """Median seconds of fn(*args) over `repeats` calls, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(network: str, dtype: str, batch: int, repeats: int) -> list[dict]:
    config = load_config(NETWORKS[network], [f"model.dtype={dtype}"])
    model = get_model(config)
    size, channels = config.data.image_size, config.data.num_channels
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (batch, size, size, channels))
    if config.model.embedding_type == "fourier":
        labels = jnp.exp(jax.random.uniform(key, (batch,), minval=jnp.log(0.01), maxval=jnp.log(50.0)))
    else:
        labels = jax.random.uniform(key, (batch,)) * 999
    params = jax.jit(model.init)({"params": key, "dropout": key}, x, labels)["params"]

    def forward(params, x, labels):
        return model.apply({"params": params}, x, labels)

    def forward_backward(params, x, labels, key):
        def loss(params):
            y = model.apply({"params": params}, x, labels, train=True, rngs={"dropout": key})
            return jnp.mean(y.astype(jnp.float32) ** 2)

        return jax.grad(loss)(params)

    peak, _ = device_peak(dtype)
    rows = []
    for name, fn, args in [
        ("forward", forward, (params, x, labels)),
        ("forward+backward", forward_backward, (params, x, labels, key)),
    ]:
        compiled = jax.jit(fn).lower(*args).compile()
        seconds = time_call(compiled, args, repeats)
        total = flops(compiled)
        rows.append(
            dict(
                network=network,
                dtype=dtype,
                pass_=name,
                ms_per_image=1e3 * seconds / batch,
                gflop_per_image=total / batch / 1e9,
                tflops=total / seconds / 1e12,
                peak_fraction=total / seconds / peak,
            )
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8 if jax.devices()[0].platform == "cpu" else 128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()

    _, peak32 = device_peak("float32")
    _, peak16 = device_peak("bfloat16")
    header = [
        f"# Networks: time per image, CIFAR-10 configs (32 x 32 x 3), batch {args.batch}",
        "",
        f"- machine: {machine.describe()}",
        f"- peak assumed: float32 {peak32}; bfloat16 {peak16}",
        f"- command: `{machine.command()}`",
        f"- load average (1/5/15 min) at the start: {machine.load_average()} (other processes on these cores slow "
        "the timings down)",
        "- FLOPs: XLA cost analysis of the compiled function, divided by the batch size; time: median of "
        f"{args.repeats} calls after a warm-up",
        "",
        "| network | compute dtype | pass | ms / image | GFLOP / image | TFLOP/s | fraction of peak |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    lines = []
    for network in NETWORKS:
        for dtype in ("float32", "bfloat16"):
            for row in bench(network, dtype, args.batch, args.repeats):
                line = (
                    f"| {row['network']} | {row['dtype']} | {row['pass_']} | {row['ms_per_image']:.1f} | "
                    f"{row['gflop_per_image']:.2f} | {row['tflops']:.3f} | {row['peak_fraction']:.1%} |"
                )
                print(line, flush=True)
                lines.append(line)
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
