"""Demonstration of controllable generation with one small unconditional model, on the CPU: scikit-learn's 8x8
digits, the DDPM++ of configs/small/digits.py (VP SDE).

  - inpainting of a centre box (the paper's replacement method, PiGDM, DPS),
  - super-resolution x2 (the same three),
  - class-conditional samples with the classifier of configs/classifier/digits.py (guidance weights 1 and 3),

as PNG grids (columns: measurement, result, ground truth) in benchmarks/results/conditional_digits/ and one
markdown table: the measurement error ||A x - y|| and the PSNR against the ground truth per method, and for the
class-conditional samples how often an independent classifier of clean digits (scikit-learn's logistic
regression, trained on the train split) finds the class asked for.

    PYTHONPATH=. python benchmarks/conditional_digits.py [--workdir runs/conditional_digits] [--num-images 64]

Training both networks takes about 5 of its CPU-minutes and resumes if interrupted (the workdir keeps them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import machine
import numpy as np

from score_sde import data as data_lib
from score_sde import evaluate, solve, train
from score_sde.config import load_config

RESULTS = "benchmarks/results"
# (task, method, sigma_y, weight schedule): noiseless measurements for the replacement method and PiGDM; DPS
# needs a likelihood noise, so it and a noisy PiGDM see measurements with sigma_y = 0.05 (on the [-1, 1] data
# range). Guidance weight 1, with the 'signal' schedule; the 'constant' one (the term as derived) diverges.
SETTINGS = [
    ("inpaint", "replacement", 0.0, None),
    ("inpaint", "pigdm", 0.0, "constant"),
    ("inpaint", "pigdm", 0.0, "signal"),
    ("inpaint", "pigdm", 0.05, "signal"),
    ("inpaint", "dps", 0.05, "constant"),
    ("inpaint", "dps", 0.05, "signal"),
    ("superres", "replacement", 0.0, None),
    ("superres", "pigdm", 0.0, "signal"),
    ("superres", "pigdm", 0.05, "signal"),
    ("superres", "dps", 0.05, "signal"),
]
WEIGHTS = (1.0, 3.0)  # classifier guidance: 1 is the posterior p(x | y), 3 sharpens it
PER_CLASS = 8


def digit_evaluator(config):
    """Logistic regression on the clean train digits, (N, 64) in [0, 1] -> labels; with its test accuracy."""
    from sklearn.linear_model import LogisticRegression

    def load(split):
        source = data_lib.get_source(config, split)
        items = [source[i] for i in range(len(source))]
        return np.stack([im for im, _ in items]).reshape(len(items), -1) / 255.0, np.array([y for _, y in items])

    (x, y), (x_test, y_test) = load("train"), load("test")
    model = LogisticRegression(max_iter=2000).fit(x, y)
    return model, float(model.score(x_test, y_test))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="runs/conditional_digits")
    parser.add_argument("--num-images", type=int, default=64, help="test digits per inverse problem")
    parser.add_argument("--out", default=os.path.join(RESULTS, "conditional_digits_cpu.md"))
    args = parser.parse_args()
    load_before, cpu0 = machine.load_average(), time.process_time()
    grids = os.path.join(RESULTS, "conditional_digits")
    os.makedirs(grids, exist_ok=True)

    model_dir, classifier_dir = os.path.join(args.workdir, "model"), os.path.join(args.workdir, "classifier")
    config = load_config("configs/small/digits.py")
    train.train(config, train.check_workdir(model_dir))
    train.train_classifier(load_config("configs/classifier/digits.py"), train.check_workdir(classifier_dir))
    cpu_train = time.process_time() - cpu0

    rows = []
    for task, method, sigma_y, schedule in SETTINGS:
        name = f"{task}_{method}_sigma{sigma_y}" + (f"_{schedule}" if schedule else "")
        out = os.path.join(args.workdir, name)
        t0 = time.process_time()
        try:
            done = solve.solve_to_shards(
                model_dir,
                out,
                task=task,
                split="test",
                mask="centre_box",
                method=method,
                sigma_y=sigma_y,
                schedule=schedule or "constant",
                num_images=args.num_images,
                batch_size=args.num_images,
            )
        except ValueError as e:  # a diverged sampler's NaN images are refused
            if "diverged" not in str(e):
                raise
            rows.append(
                f"| {task} | {method} | {schedule} | {sigma_y} | diverged | | | {time.process_time() - t0:.0f} | |"
            )
            print(rows[-1], flush=True)
            continue
        shutil.copy(out + ".png", os.path.join(grids, f"{name}.png"))
        rows.append(
            f"| {task} | {method} | {schedule or ''} | {sigma_y} | {done['residual']:.4f} | {done['psnr']:.2f} | "
            f"{done['nfe']} | {time.process_time() - t0:.0f} | [grid](conditional_digits/{name}.png) |"
        )
        print(rows[-1], flush=True)

    evaluator, evaluator_accuracy = digit_evaluator(config)
    class_rows = []
    for weight in WEIGHTS:
        samples = []
        t0 = time.process_time()
        for label in range(10):
            out = os.path.join(args.workdir, f"class_{label}_weight{weight}")
            evaluate.sample_to_shards(
                model_dir,
                out,
                num_samples=PER_CLASS,
                batch_size=PER_CLASS,
                classifier=classifier_dir,
                class_label=label,
                guidance_weight=weight,
            )
            samples.append(np.load(os.path.join(out, "samples_00000.npz"))["samples"])
        samples = np.stack(samples)  # (10, PER_CLASS, 8, 8, 1): row = class
        from score_sde.evaluation.images import save_grid

        name = f"class_conditional_weight{weight}.png"
        save_grid(samples.reshape(-1, 8, 8, 1) / 255.0, os.path.join(grids, name), nrow=PER_CLASS)
        predicted = evaluator.predict(samples.reshape(10 * PER_CLASS, -1) / 255.0).reshape(10, PER_CLASS)
        hits = float(np.mean(predicted == np.arange(10)[:, None]))
        class_rows.append(
            f"| {weight} | {hits:.2f} | {time.process_time() - t0:.0f} | [grid](conditional_digits/{name}) |"
        )
        print(class_rows[-1], flush=True)

    text = f"""# Controllable generation with a small digits model (CPU)

Command (from the repository root):

    PYTHONPATH=. {machine.command()}

Machine: {machine.describe()}; load average {load_before} before, {machine.load_average()} after;
{time.process_time() - cpu0:.0f} CPU-seconds in all, {cpu_train:.0f} of them training (or resuming) the score
model (configs/small/digits.py, 1500 steps) and the classifier (configs/classifier/digits.py, 1000 steps).

## Inverse problems

{args.num_images} test digits (8x8, data in [-1, 1]), the config's sampler (Euler-Maruyama, 500 steps, no
corrector). Inpainting: the centre 4x4 box unknown; super-resolution: 2x2 average pooling to 4x4.
||A x - y||: the mean over the images of the measurement error of the result (the data range's units; for
noisy measurements a result consistent with y has about sigma_y sqrt(M): 0.2 for the 48 known pixels, 0.2
for the 16 pooled values at sigma_y 0.05); PSNR against the ground truth on [0, 1] pixels. Each grid shows,
per row, the measurement (unknown pixels grey, or the low-resolution image), the result and the ground truth.
Guidance (PiGDM, DPS) with weight 1 times the schedule w(t): 'constant' is the term as derived, with which
the learnt model's guidance explodes near t = T (x0(x_t) carries 1/m(t) times the score's error there) and the
sampler diverges; 'signal' is w(t) = m^2 / (m^2 + s^2), which turns it off where x_t holds no signal.

| task | method | weight schedule | sigma_y | &#124;&#124;A x - y&#124;&#124; | PSNR (dB) | NFE | CPU-s | grid |
|---|---|---|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

## Class-conditional samples

{PER_CLASS} samples per class (one row per class, 0 to 9), classifier guidance of the same score model and
sampler. Hit rate: the fraction that the logistic regression of clean digits labels as the class asked for
(it classifies {evaluator_accuracy:.2f} of the clean test digits correctly).

| guidance weight | hit rate | CPU-s | grid |
|---:|---:|---:|---|
{chr(10).join(class_rows)}
"""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
