"""Speed of the evaluation pipeline: Inception feature extraction (images/s) and end-to-end FID.

    python benchmarks/bench_eval.py --weights ~/.cache/score_sde/inception-2015-12-05.npz \\
        --num-images 10000 --reference-images 1000 --batch-size 200

Phase 1 streams ``--reference-images`` uint8 images (after one warm-up batch that compiles) and
reports the steady-state feature throughput; their statistics serve as the reference. Phase 2 is the
end-to-end FID of ``--num-images`` images against those statistics: streaming the images through the
network, the running mean/covariance, the Fréchet distance; KID against the reference features is
timed on its own. Images are random smooth 32x32 uint8 (CIFAR-10's size; content does not change
the speed). Runs unchanged on CPU, GPU or TPU: every device of the default backend is used.
"""

from __future__ import annotations

import argparse
import resource
import time

import machine
import numpy as np

from score_sde.evaluation import metrics, stats
from score_sde.evaluation.features import InceptionFeatures


def cpu_seconds() -> float:
    """CPU time of this process (all threads): under a shared, loaded CPU it tells the work done
    where wall time tells the share of the machine received."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def image_batches(n: int, batch: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        coarse = rng.uniform(0, 255, (m, size // 4, size // 4, 3))
        yield np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="converted Inception .npz (default: the convert-inception default)")
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--reference-images", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()

    extractor = InceptionFeatures(args.weights, batch_size=args.batch_size)
    b, size = extractor.batch_size, args.image_size
    t = time.perf_counter()
    extractor(next(image_batches(b, b, size, seed=0)))
    compile_s = time.perf_counter() - t

    load_before = machine.load_average()
    t, c = time.perf_counter(), cpu_seconds()
    ref = stats.compute_stats(extractor, image_batches(args.reference_images, b, size, seed=1))
    throughput_s, throughput_cpu = time.perf_counter() - t, cpu_seconds() - c

    t, c = time.perf_counter(), cpu_seconds()
    sample = stats.compute_stats(extractor, image_batches(args.num_images, b, size, seed=2))
    features_s, features_cpu = time.perf_counter() - t, cpu_seconds() - c
    t = time.perf_counter()
    fid = metrics.frechet_distance(sample.mu, sample.sigma, ref.mu, ref.sigma)
    frechet_s = time.perf_counter() - t
    t = time.perf_counter()
    kid = metrics.kernel_distance(sample.features, ref.features)
    kid_s = time.perf_counter() - t

    rows = [
        ("machine", machine.describe()),
        ("command", machine.command()),
        ("load average (1/5/15 min) before / after", f"{load_before}  /  {machine.load_average()}"),
        ("batch size (all devices)", str(b)),
        ("image size", f"{size}x{size}x3 uint8 -> 299x299"),
        ("compile + first batch", f"{compile_s:.1f} s"),
        (
            f"feature extraction, {args.reference_images} images",
            f"{args.reference_images / throughput_s:.2f} images/s "
            f"({throughput_cpu / args.reference_images:.3f} CPU-s per image)",
        ),
        (
            f"end-to-end FID, {args.num_images} images",
            f"{features_s + frechet_s:.1f} s "
            f"(features + running stats {features_s:.1f} s = {args.num_images / features_s:.2f} images/s, "
            f"{features_cpu / args.num_images:.3f} CPU-s per image; "
            f"Fréchet distance {frechet_s:.1f} s)",
        ),
        (f"KID, {args.num_images} vs {args.reference_images} features, 100 subsets", f"{kid_s:.1f} s"),
        ("values (random images; timing only)", f"FID {fid:.2f}, KID {kid:.4f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'quantity'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
