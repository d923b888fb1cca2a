"""Sampler loop overhead and the on-device adaptive ODE solver against scipy's RK45 on the host.

1. For each sampler: wall time per score evaluation (NFE) divided by the time of one bare jitted
   score_fn call on the same batch. 1.00 means the sampling loop adds nothing; the goal is < 1.05.
2. Probability-flow ODE, same score function, same tolerances, same starting noise: diffrax Dopri5 inside
   jit (ode_sampler, method="RK45") against scipy.integrate.solve_ivp(method="RK45") calling the jitted
   drift from the host (as the official code does): NFE and wall time.

The score function is a small convolutional network (Flax; residual 3x3 convolutions, GroupNorm, a time
embedding), randomly initialised, wrapped by score_sde.score.get_score_fn for a continuous VP SDE: the
same path a trained network takes. Times are the minimum over repeats (the least disturbed by other
processes), after one compiling call.

    python benchmarks/bench_core_samplers.py [--batch 16] [--size 16] [--channels 32] [--steps 50]
"""

from __future__ import annotations

import argparse
import platform
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate

from score_sde.sampling import ode_sampler, pc_sampler
from score_sde.score import get_model_fn, get_score_fn
from score_sde.sde import VPSDE


class ConvScoreNet(nn.Module):
    channels: int = 32
    blocks: int = 4

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        half = self.channels // 2
        freqs = jnp.exp(-np.log(10000.0) * jnp.arange(half) / half)
        emb = labels[:, None] * freqs[None]
        emb = nn.Dense(self.channels)(jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1))
        h = nn.Conv(self.channels, (3, 3))(x)
        for _ in range(self.blocks):
            r = nn.swish(nn.GroupNorm(num_groups=8)(h) + emb[:, None, None, :])
            h = h + nn.Conv(self.channels, (3, 3))(r)
        return nn.Conv(x.shape[-1], (3, 3))(nn.swish(nn.GroupNorm(num_groups=8)(h)))


def _min_time(fn, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times), out


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return (f"CPU: {cpu} ({jax.local_device_count()} JAX device(s), {platform.machine()}); "
            f"JAX device: {dev.device_kind} ({dev.platform}); jax {jax.__version__}; "
            f"load average {os.getloadavg()[0]:.1f} at the start")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="N, the SDE's discretisation steps")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    sde = VPSDE(N=args.steps)
    shape = (args.batch, args.size, args.size, 3)
    net = ConvScoreNet(channels=args.channels)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = net.init(jax.random.key(1), x, jnp.ones(args.batch))
    score_fn = get_score_fn(sde, get_model_fn(net, variables), continuous=True)

    bare = jax.jit(lambda s, x, t: s(x, t))
    t = jnp.full((args.batch,), 0.5)
    bare_time, _ = _min_time(lambda: bare(score_fn, x, t), 10 * args.repeats)

    key = jax.random.key(2)
    samplers = {
        "PC reverse_diffusion + langevin": lambda: pc_sampler(key, score_fn, sde, shape),
        "PC euler_maruyama + none": lambda: pc_sampler(key, score_fn, sde, shape, predictor="euler_maruyama",
                                                       corrector="none"),
        "PC ancestral_sampling + none": lambda: pc_sampler(key, score_fn, sde, shape,
                                                           predictor="ancestral_sampling", corrector="none"),
        "PC none + ald (n_steps=2)": lambda: pc_sampler(key, score_fn, sde, shape, predictor="none",
                                                        corrector="ald", n_steps=2),
        f"ODE euler ({args.steps} steps)": lambda: ode_sampler(key, score_fn, sde, shape, method="euler",
                                                               num_steps=args.steps),
        f"ODE heun ({args.steps} steps)": lambda: ode_sampler(key, score_fn, sde, shape, method="heun",
                                                              num_steps=args.steps),
        "ODE RK45 (diffrax, rtol=atol=1e-5)": lambda: ode_sampler(key, score_fn, sde, shape, method="RK45"),
    }
    lines = [
        f"Machine: {_machine()}",
        f"Score network: ConvScoreNet(channels={args.channels}), batch {shape}, VP SDE with N={args.steps}; "
        f"bare jitted score_fn call: {bare_time * 1e3:.2f} ms",
        "",
        "| sampler | NFE | wall (s) | per NFE (ms) | per NFE / bare score_fn |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in samplers.items():
        wall, (_, nfe) = _min_time(run, args.repeats)
        per = wall / int(nfe)
        lines.append(f"| {name} | {int(nfe)} | {wall:.3f} | {per * 1e3:.2f} | {per / bare_time:.3f} |")

    # Adaptive RK45: diffrax on the device vs scipy on the host, same drift, tolerances and noise.
    z = sde.prior_sampling(jax.random.key(3), shape)
    diffrax_time, (x_dx, nfe_dx) = _min_time(lambda: ode_sampler(key, score_fn, sde, shape, z=z), args.repeats)
    drift = jax.jit(lambda s, x, t: sde.reverse(s, probability_flow=True).sde(x, jnp.full((shape[0],), t))[0])
    fun = lambda t, y: np.asarray(drift(score_fn, jnp.asarray(y, jnp.float32).reshape(shape), t), np.float64).ravel()
    fun(1.0, np.asarray(z, np.float64).ravel())  # compile
    scipy_times, sol = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        sol = scipy.integrate.solve_ivp(fun, (sde.T, sde.sampling_eps), np.asarray(z, np.float64).ravel(),
                                        method="RK45", rtol=1e-5, atol=1e-5)
        scipy_times.append(time.perf_counter() - start)
    x_sp = sol.y[:, -1].reshape(shape)
    rel = float(np.linalg.norm(np.asarray(x_dx) - x_sp) / np.linalg.norm(x_sp))
    lines += [
        "",
        "Probability-flow ODE to eps = 1e-3 with rtol = atol = 1e-5 from the same noise:",
        "",
        "| solver | NFE | wall (s) |",
        "|---|---:|---:|",
        f"| diffrax Dopri5 in jit (ode_sampler RK45) | {int(nfe_dx)} | {diffrax_time:.3f} |",
        f"| scipy solve_ivp RK45 on the host | {sol.nfev} | {min(scipy_times):.3f} |",
        "",
        f"Relative difference of the two solutions: {rel:.2e}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
