"""The README's first command: a small model trained, sampled and evaluated on a CPU in minutes."""

from __future__ import annotations

import os
import time

import jax

from score_sde import evaluate, files
from score_sde.config import load_config
from score_sde.train import train

QUICKSTART_CONFIG = "configs/small/digits.py"
QUICKSTART_BPD_BATCHES = 2  # 128 of the 297 test digits: the ODE likelihood is the slowest part on a CPU


def quickstart(workdir: str = "runs/quickstart", overrides=()) -> dict:
    """Trains the small digits model (configs/small/digits.py), samples a grid with the PC sampler
    (reverse diffusion + Langevin) and one with the probability-flow ODE (RK45), and computes bits/dim on
    128 images of the test split. Everything lands in ``workdir``; rerunning resumes / reuses what is there."""
    config = load_config(QUICKSTART_CONFIG, overrides)
    t0 = time.time()
    train(config, workdir)
    results = {"train_seconds": round(time.time() - t0, 1)}
    samplers = {
        "pc": ["sampling.method=pc", "sampling.predictor=reverse_diffusion", "sampling.corrector=langevin"],
        "ode": ["sampling.method=ode"],
    }
    for name, sampler in samplers.items():
        t0 = time.time()
        done = evaluate.sample_to_shards(
            workdir,
            os.path.join(workdir, f"samples_{name}"),
            overrides=[*overrides, *sampler],
            num_samples=64,
            batch_size=64,
        )
        results[f"{name}_nfe"] = done["nfe"]
        results[f"{name}_grid"] = evaluate.grid_path(os.path.join(workdir, f"samples_{name}"))
        results[f"{name}_seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    bpd = evaluate.evaluate_bpd(workdir, overrides=overrides, split="test", num_batches=QUICKSTART_BPD_BATCHES)
    results.update(bpd=bpd["bpd"], bpd_stderr=bpd["bpd_stderr"], bpd_seconds=round(time.time() - t0, 1))
    if jax.process_index() == 0:
        print(
            f"\nquickstart results in {os.path.abspath(workdir)}:\n"
            f"  training ({config.training.n_iters} steps): {results['train_seconds']} s, "
            f"TensorBoard logs in {os.path.join(workdir, 'tensorboard')}\n"
            f"  PC sampler  ({results['pc_nfe']} network evaluations): {results['pc_grid']}\n"
            f"  ODE sampler ({results['ode_nfe']} network evaluations): {results['ode_grid']}\n"
            f"  test bits/dim: {bpd['bpd']:.3f} ± {bpd['bpd_stderr']:.3f} over {bpd['count']} images"
        )
        files.write_json(os.path.join(workdir, "quickstart.json"), results)
    return results
