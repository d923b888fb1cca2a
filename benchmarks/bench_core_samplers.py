"""Sampler loop overhead and the on-device adaptive ODE solver against scipy's RK45 on the host.

1. For each sampler: time per score evaluation (NFE) divided by the time of one bare jitted score_fn call
   on the same batch, and divided by the time per call of a jitted loop that does nothing but call
   score_fn NFE times (the part of the first ratio that is the sampler's own loop). 1.00 means the
   sampling loop adds nothing; the goal is < 1.05.
2. Probability-flow ODE, same score function, same tolerances, same starting noise: diffrax Dopri5 inside
   jit (ode_sampler, method="RK45") against scipy.integrate.solve_ivp(method="RK45") calling the jitted
   drift from the host (as the official code does): NFE and time.

The score function is a small convolutional network (Flax; residual 3x3 convolutions, GroupNorm, a time
embedding), randomly initialised, wrapped by score_sde.score.get_score_fn for a continuous VP SDE: the
same path a trained network takes. Times are process CPU seconds (all threads), which a machine shared
with other jobs disturbs far less than wall-clock time; wall-clock is given beside them. Each figure is
the minimum over repeats after one compiling call; a sampler and its score-only loop run alternately.

    python benchmarks/bench_core_samplers.py [--batch 16] [--size 16] [--channels 32] [--steps 50]
"""

from __future__ import annotations

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import machine
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


def _timed(fn) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.process_time() - cpu, time.perf_counter() - wall, out


def _min_times(fns, repeats: int):
    """Compiles each fn, then runs them in turn `repeats` times: per fn, (min CPU s, min wall s, output)."""
    outs = [jax.block_until_ready(fn()) for fn in fns]
    best = [[np.inf, np.inf] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            cpu, wall, outs[i] = _timed(fn)
            best[i] = [min(best[i][0], cpu), min(best[i][1], wall)]
    return [(c, w, o) for (c, w), o in zip(best, outs)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="N, the SDE's discretisation steps")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_at_start = machine.load_average()

    sde = VPSDE(N=args.steps)
    shape = (args.batch, args.size, args.size, 3)
    net = ConvScoreNet(channels=args.channels)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = net.init(jax.random.key(1), x, jnp.ones(args.batch))
    score_fn = get_score_fn(sde, get_model_fn(net, variables), continuous=True)

    bare = jax.jit(lambda s, x, t: s(x, t))
    t = jnp.full((args.batch,), 0.5)
    calls = 20
    [(bare_cpu, bare_wall, _)] = _min_times([lambda: [bare(score_fn, x, t) for _ in range(calls)][-1]], args.repeats)
    bare_cpu, bare_wall = bare_cpu / calls, bare_wall / calls

    @functools.partial(jax.jit, static_argnums=2)
    def score_loop(score_fn, x, n):  # n evaluations and nothing else (the update keeps them all live)
        return jax.lax.fori_loop(0, n, lambda i, y: y - 1e-4 * score_fn(y, t), x)

    key = jax.random.key(2)
    samplers = {
        "PC reverse_diffusion + langevin": lambda: pc_sampler(key, score_fn, sde, shape),
        "PC euler_maruyama + none": lambda: pc_sampler(
            key, score_fn, sde, shape, predictor="euler_maruyama", corrector="none"
        ),
        "PC ancestral_sampling + none": lambda: pc_sampler(
            key, score_fn, sde, shape, predictor="ancestral_sampling", corrector="none"
        ),
        "PC none + ald (n_steps=2)": lambda: pc_sampler(
            key, score_fn, sde, shape, predictor="none", corrector="ald", n_steps=2
        ),
        f"ODE euler ({args.steps} steps)": lambda: ode_sampler(
            key, score_fn, sde, shape, method="euler", num_steps=args.steps
        ),
        f"ODE heun ({args.steps} steps)": lambda: ode_sampler(
            key, score_fn, sde, shape, method="heun", num_steps=args.steps
        ),
        "ODE RK45 (diffrax, rtol=atol=1e-5)": lambda: ode_sampler(key, score_fn, sde, shape, method="RK45"),
    }
    lines = [
        f"Machine: {machine.describe()}; load average (1/5/15 min) {load_at_start} at the start",
        f"Command: {machine.command()}",
        f"Score network: ConvScoreNet(channels={args.channels}), batch {shape}, VP SDE with N={args.steps}; "
        f"one bare jitted score_fn call: {bare_cpu * 1e3:.2f} ms CPU, {bare_wall * 1e3:.2f} ms wall",
        "",
        "| sampler | NFE | CPU per NFE (ms) | / bare call | / score-only loop | wall per NFE (ms) | / bare call |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in samplers.items():
        nfe = int(run()[1])
        (cpu, wall, _), (loop_cpu, _, _) = _min_times([run, lambda: score_loop(score_fn, x, nfe)], args.repeats)
        lines.append(
            f"| {name} | {nfe} | {cpu / nfe * 1e3:.2f} | {cpu / nfe / bare_cpu:.3f} | "
            f"{cpu / loop_cpu:.3f} | {wall / nfe * 1e3:.2f} | {wall / nfe / bare_wall:.3f} |"
        )

    # Adaptive RK45: diffrax on the device vs scipy on the host, same drift, tolerances and noise.
    z = sde.prior_sampling(jax.random.key(3), shape)
    drift = jax.jit(lambda s, x, t: sde.reverse(s, probability_flow=True).sde(x, jnp.full((shape[0],), t))[0])
    fun = lambda t, y: np.asarray(drift(score_fn, jnp.asarray(y, jnp.float32).reshape(shape), t), np.float64).ravel()
    solve = lambda: scipy.integrate.solve_ivp(
        fun, (sde.T, sde.sampling_eps), np.asarray(z, np.float64).ravel(), method="RK45", rtol=1e-5, atol=1e-5
    )
    (dx_cpu, dx_wall, (x_dx, nfe_dx)), (sp_cpu, sp_wall, sol) = _min_times(
        [lambda: ode_sampler(key, score_fn, sde, shape, z=z), solve], args.repeats
    )
    x_sp = sol.y[:, -1].reshape(shape)
    rel = float(np.linalg.norm(np.asarray(x_dx) - x_sp) / np.linalg.norm(x_sp))
    lines += [
        "",
        "Probability-flow ODE to eps = 1e-3 with rtol = atol = 1e-5 from the same noise:",
        "",
        "| solver | NFE | CPU (s) | wall (s) |",
        "|---|---:|---:|---:|",
        f"| diffrax Dopri5 in jit (ode_sampler RK45) | {int(nfe_dx)} | {dx_cpu:.3f} | {dx_wall:.3f} |",
        f"| scipy solve_ivp RK45 on the host | {sol.nfev} | {sp_cpu:.3f} | {sp_wall:.3f} |",
        "",
        f"Relative difference of the two solutions: {rel:.2e}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
