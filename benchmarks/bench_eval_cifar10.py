"""FID and KID of CIFAR-10 train (50,000 images) against CIFAR-10 test (10,000), with the time taken.

    python benchmarks/bench_eval_cifar10.py --weights ~/.cache/score_sde/inception-2015-12-05.npz \\
        --zip ../shared/data/cifar10/YoongiKim_CIFAR-10-images_jpg.zip --cache /tmp/cifar10_stats

Reads the JPEG copy of CIFAR-10 (a zip with train/<class>/*.jpg and test/<class>/*.jpg, see
../shared/data/MANIFEST.md: lossy JPEGs, about 30 dB from the exact images) through score_sde.data's
'folder' dataset, streams every image of each split through the Inception network on every device,
and caches both statistics under --cache (a second run only computes the distances). Prints a table
naming the machine. Meant for a GPU: on a 2-core CPU the 60,000 images take hours.
"""

from __future__ import annotations

import argparse
import os
import time

import machine
import ml_collections

from score_sde.evaluation import commands, metrics


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="converted Inception .npz (default: the convert-inception default)")
    p.add_argument("--zip", default="../shared/data/cifar10/YoongiKim_CIFAR-10-images_jpg.zip")
    p.add_argument("--cache", required=True, help="folder for the two statistics files")
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args()

    config = ml_collections.ConfigDict(
        {
            "seed": 0,
            "data": {
                "dataset": "folder",
                "path": os.path.abspath(args.zip),
                "image_size": 32,
                "num_channels": 3,
                "centered": False,
                "random_flip": False,
                "uniform_dequantization": False,
            },
        }
    )
    times, stats = {}, {}
    for split in ("train", "test"):
        t = time.perf_counter()
        stats[split] = commands.run_fid_stats(
            os.path.join(args.cache, f"cifar10_jpeg_{split}.npz"),
            config=config,
            split=split,
            weights=args.weights,
            batch_size=args.batch_size,
        )
        times[split] = time.perf_counter() - t
    t = time.perf_counter()
    fid = metrics.frechet_distance(stats["train"].mu, stats["train"].sigma, stats["test"].mu, stats["test"].sigma)
    fid_s = time.perf_counter() - t
    t = time.perf_counter()
    kid = metrics.kernel_distance(stats["train"].features, stats["test"].features)
    kid_s = time.perf_counter() - t

    print(f"machine: {machine.describe()}\ncommand: {machine.command()}\nbatch {args.batch_size}")
    print("| quantity | value |\n|---|---|")
    for split in ("train", "test"):
        n = stats[split].n
        print(
            f"| statistics of {split} ({n} images) | {times[split]:.1f} s ({n / times[split]:.0f} images/s; "
            "0 s if cached) |"
        )
    print(f"| FID train vs test | {fid:.4f} ({fid_s:.1f} s) |")
    print(f"| KID train vs test (100 subsets of 1000) | {kid:.6f} ({kid_s:.1f} s) |")


if __name__ == "__main__":
    main()
