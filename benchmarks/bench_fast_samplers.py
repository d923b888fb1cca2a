"""Every registered sampler: end-point error against the exact solution versus NFE in 3072 dimensions, and the
time per NFE against a bare score_fn call.

1. Accuracy. Data: a mixture of 10 Gaussians in 3072 dimensions (CIFAR-10 sized), with diagonal covariances
   (variances log-uniform in [1e-3, 0.1] per dimension and component, means in [-1, 1]): a mixture whose
   covariances share one eigenbasis is this one rotated, and the isotropic kernel makes every sampler rotation
   equivariant, so diagonal loses nothing, and its exact score costs O(K D) per sample instead of O(K D^2).
   For VE (sigma_max 50), VP and sub-VP, the exact end point of the probability-flow ODE from 8 prior samples
   x_T to eps is a float64 Dopri8 solution at tolerance 1e-10; each deterministic sampler (every registered
   one whose samples do not depend on the key) runs in float32 from the same x_T at NFE budgets 5-100 on the
   grids uniform, logsnr and karras; the adaptive ODE solvers at tolerances 1e-2 to 1e-5. Error: RMS over the
   3072 dimensions, mean over the 8 samples. A table per SDE and one log-log plot (each sampler on its best grid).
2. Loop overhead. A small convolutional score network (bench_core_samplers.ConvScoreNet, VP SDE), batch
   (16, 16, 16, 3): for every registered sampler at about 50 NFE (adaptive ones at their default tolerances),
   CPU seconds per NFE divided by one bare jitted score_fn call, and by the time per call of a jitted loop
   that only calls score_fn as many times (the sampler's own loop cost); each sampler and its score-only loop
   alternate, minimum over repeats.

    PYTHONPATH=. python benchmarks/bench_fast_samplers.py [--part accuracy|overhead|both] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

import diffrax
import jax
import jax.numpy as jnp
import machine
import numpy as np
from bench_core_samplers import ConvScoreNet, _min_times

from score_sde import sampling
from score_sde.sampling import SAMPLERS, sample, time_grid
from score_sde.score import get_model_fn, get_score_fn
from score_sde.sde import VESDE, VPSDE, batch_mul, subVPSDE

SDES = {"VE": VESDE(sigma_min=0.01, sigma_max=50.0), "VP": VPSDE(), "sub-VP": subVPSDE()}
BUDGETS = (5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100)
GRIDS = ("uniform", "logsnr", "karras")
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
SKIPPED = {"ode:dopri5": "the same solver as ode:rk45"}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DiagonalMixture:
    """sum_k w_k N(mu_k, diag(var_k)): weights (K,), means (K, D), variances (K, D)."""

    weights: jax.Array
    means: jax.Array
    variances: jax.Array

    def score(self, sde, x, t):
        """grad log p_t(x) under the kernel N(m x_0, s^2 I): -sum_k r_k (x - m mu_k) / (m^2 var_k + s^2)."""
        m, s = sde.marginal_coeffs(t)
        var = m[:, None, None] ** 2 * self.variances + s[:, None, None] ** 2  # (B, K, D)
        diff = x[:, None, :] - m[:, None, None] * self.means
        log_joint = jnp.log(self.weights) - 0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=-1)
        r = jax.nn.softmax(log_joint, axis=-1)
        return -jnp.einsum("bk,bkd->bd", r, diff / var)


def cifar_sized_mixture(d: int = 3072, k: int = 10) -> DiagonalMixture:
    rng = np.random.default_rng(0)
    means = np.tanh(rng.standard_normal((k, d)))
    variances = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), (k, d)))
    return DiagonalMixture(*(jnp.asarray(a, jnp.float32) for a in (np.full(k, 1.0 / k), means, variances)))


def exact_end_point(mixture, sde, x_t, eps) -> np.ndarray:
    """The probability-flow ODE from x_t at T to eps: Dopri8 in float64, rtol = atol = 1e-10."""
    with jax.enable_x64(True):
        mix64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), mixture)

        def drift(t, y, args):
            t_vec = jnp.full(y.shape[:1], t)
            f, g = sde.sde(y, t_vec)
            return f - 0.5 * batch_mul(g**2, mix64.score(sde, y, t_vec))

        solve = jax.jit(
            lambda y: diffrax.diffeqsolve(
                diffrax.ODETerm(drift),
                diffrax.Dopri8(),
                t0=sde.T,
                t1=eps,
                dt0=-1e-3,
                y0=y,
                stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
                saveat=diffrax.SaveAt(t1=True),
                max_steps=200_000,
            ).ys[0]
        )
        return np.asarray(solve(jnp.asarray(x_t, jnp.float64)))


def _is_deterministic(name, score_fn, sde, x_t) -> bool:
    sampler = SAMPLERS[name]
    run = functools.partial(sample, name, score_fn=score_fn, sde=sde, shape=x_t.shape, z=x_t)
    budget = {} if sampler.adaptive else {"nfe": max(10, sampler.min_nfe)}
    a, _ = run(key=jax.random.key(0), **budget)
    b, _ = run(key=jax.random.key(1), **budget)
    return bool(jnp.all(a == b))


def accuracy(out_dir: str) -> list[str]:
    mixture = cifar_sized_mixture()
    lines, curves = [], {}
    for sde_name, sde in SDES.items():
        score_fn = jax.tree_util.Partial(lambda mix, x, t, sde=sde: mix.score(sde, x, t), mixture)
        eps = sde.sampling_eps
        x_t = sde.prior_sampling(jax.random.key(0), (8, 3072))
        start = time.perf_counter()
        exact = exact_end_point(mixture, sde, x_t, eps)
        reference_seconds = time.perf_counter() - start

        def error(x):
            return float(np.mean(np.sqrt(np.mean((np.asarray(x, np.float64) - exact) ** 2, axis=1))))

        rows, stochastic = [], []
        for name, sampler in SAMPLERS.items():
            if name in SKIPPED:
                continue
            if not _is_deterministic(name, score_fn, sde, x_t):
                stochastic.append(name)
                continue
            if sampler.adaptive:
                points = []
                for tol in TOLERANCES:
                    options = {option: tol for option in sampler.tolerance}
                    x, nfe = sample(name, jax.random.key(0), score_fn, sde, x_t.shape, z=x_t, **options)
                    points.append((int(nfe), error(x)))
                rows.append((f"{name} (tol {', '.join(f'{t:g}' for t in TOLERANCES)})", points))
                curves[sde_name, f"{name} (adaptive)"] = points
                continue
            by_grid = {}
            for grid in GRIDS:
                points = []
                for budget in BUDGETS:
                    ts = time_grid(grid, sde, sampler.steps(budget), eps)
                    x, nfe = sampler.fn(jax.random.key(0), score_fn, sde, x_t, ts)
                    points.append((int(nfe), error(x)))
                rows.append((f"{name} ({grid})", points))
                by_grid[grid] = points
            # The plot shows each sampler on its best grid: the smallest geometric mean error over the budgets.
            best = min(by_grid, key=lambda g: np.mean(np.log([e for _, e in by_grid[g]])))
            curves[sde_name, f"{name} ({best})"] = by_grid[best]
        lines += [
            f"### {sde_name} ({type(sde).__name__}), eps = {eps:g}; exact solution in {reference_seconds:.0f} s",
            "",
            "RMS error per dimension (mean of 8 samples), each entry `error (NFE made)`; budgets "
            + ", ".join(map(str, BUDGETS))
            + " (adaptive solvers: one entry per tolerance).",
            "",
            "| sampler (grid) | " + " | ".join(map(str, BUDGETS)) + " |",
            "|---|" + "---:|" * len(BUDGETS),
        ]
        for label, points in rows:
            cells = [f"{e:.2e} ({n})" for n, e in points] + [""] * (len(BUDGETS) - len(points))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"Stochastic (not measured against the ODE's solution): {', '.join(stochastic)}.", ""]
        print("\n".join(lines[-len(rows) - 8 :]), flush=True)
    _plot(os.path.join(out_dir, "fast_samplers_error_cpu.png"), curves)
    return lines


def _plot(path, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SDES), figsize=(6 * len(SDES), 6), sharey=True)
    colors, markers = plt.get_cmap("tab20").colors, "os^vD<>ph*"
    for ax, sde_name in zip(axes, SDES):
        labels = [label for name_sde, label in curves if name_sde == sde_name]
        for i, label in enumerate(labels):
            style = "--" if label.endswith("(adaptive)") else "-"
            points = sorted(curves[sde_name, label])
            ax.plot(*zip(*points), style, color=colors[i % 20], marker=markers[i % 10], markersize=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{sde_name}: each sampler on its best grid")
        ax.set_xlabel("NFE")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="lower left")
    axes[0].set_ylabel("RMS end-point error per dimension")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overhead(repeats: int) -> list[str]:
    sde = VPSDE()
    shape = (16, 16, 16, 3)
    net = ConvScoreNet(channels=32)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = net.init(jax.random.key(1), x, jnp.ones(shape[0]))
    score_fn = get_score_fn(sde, get_model_fn(net, variables), continuous=True)
    bare = jax.jit(lambda s, x, t: s(x, t))
    t = jnp.full((shape[0],), 0.5)
    calls = 20
    [(bare_cpu, bare_wall, _)] = _min_times([lambda: [bare(score_fn, x, t) for _ in range(calls)][-1]], repeats)
    bare_cpu, bare_wall = bare_cpu / calls, bare_wall / calls

    @functools.partial(jax.jit, static_argnums=2)
    def score_loop(score_fn, x, n):
        return jax.lax.fori_loop(0, n, lambda i, y: y - 1e-4 * score_fn(y, t), x)

    lines = [
        f"Score network: ConvScoreNet(channels=32), batch {shape}, VP SDE; one bare jitted score_fn call: "
        f"{bare_cpu * 1e3:.2f} ms CPU, {bare_wall * 1e3:.2f} ms wall",
        "",
        "| sampler | NFE | CPU per NFE (ms) | / bare call | / score-only loop | wall per NFE (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, sampler in SAMPLERS.items():
        if name in SKIPPED:
            continue
        budget = {} if sampler.adaptive else {"nfe": 50}
        run = functools.partial(sample, name, jax.random.key(2), score_fn, sde, shape, **budget)
        nfe = int(run()[1])
        (cpu, wall, _), (loop_cpu, _, _) = _min_times([run, lambda: score_loop(score_fn, x, nfe)], repeats)
        lines.append(
            f"| {name} | {nfe} | {cpu / nfe * 1e3:.2f} | {cpu / nfe / bare_cpu:.3f} | {cpu / loop_cpu:.3f} | "
            f"{wall / nfe * 1e3:.2f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("accuracy", "overhead", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    print(f"registered samplers: {sorted(sampling.SAMPLERS)}")
    header = [
        f"Machine: {machine.describe()}",
        f"Command: {machine.command()}",
        f"Load average (1/5/15 min) at the start: {machine.load_average()}",
        "",
    ]
    body = []
    if args.part in ("accuracy", "both"):
        body += accuracy(args.out)
    if args.part in ("overhead", "both"):
        body += overhead(args.repeats)
    body += ["", f"Load average (1/5/15 min) at the end: {machine.load_average()}"]
    print("\n".join(header + body))


if __name__ == "__main__":
    main()
