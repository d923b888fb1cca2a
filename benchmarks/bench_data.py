"""Throughput of the training input pipeline (score_sde.data.train_batches) in images per second.

Sources: CIFAR-10-sized images (a synthetic in-memory npz of 50,000 32x32x3 images; the shared CIFAR-10
JPEGs extracted to a folder, and read in place from the zip, when ../shared/data has them) and the
scikit-learn digits (8x8 as stored, and resized to 32x32). Augmentation as the CIFAR-10 configs: random
flips, no dequantisation; one row per source also with uniform dequantisation.

Columns: prefetch 0 (each batch made when asked for) against prefetch 4 with 2 threads, first for the
pipeline alone, then with a simulated training step (a sleep of --step-ms, which like a jitted step on an
accelerator leaves the CPU to the pipeline): without prefetch a step costs batch time + step time, with
prefetch about the larger of the two.

  python benchmarks/bench_data.py [--batch 128] [--steps 40] [--step-ms 20] [--cifar-zip PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time
import zipfile

import grain  # noqa: F401  (version below)
import machine
import numpy as np

from score_sde import data
from score_sde.config import load_config

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_ZIP = SHARED / "cifar10" / "YoongiKim_CIFAR-10-images_jpg.zip"


def config(dataset, image_size, num_channels, batch, dequantize=False, path=""):
    """The data settings of the CIFAR-10 configs (centred, random flips) for another source and batch size."""
    cfg = load_config("configs/vp/cifar10_ddpmpp_continuous.py")
    cfg.seed = 0
    cfg.training.batch_size = batch
    cfg.data.update(
        dict(
            dataset=dataset,
            image_size=image_size,
            num_channels=num_channels,
            uniform_dequantization=dequantize,
            path=path,
        )
    )
    return cfg


def measure(source, cfg, steps, prefetch, step_s):
    """(images per second of wall time, CPU microseconds of this process per image)."""
    it = data.train_batches(
        source, cfg, prefetch=prefetch, num_threads=2, process_index=0, process_count=1, num_devices=1
    )
    next(it)  # start-up (thread pool, first batch) is not counted
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(it)
        if step_s:
            time.sleep(step_s)
    images = steps * cfg.training.batch_size
    return images / (time.perf_counter() - start), (time.process_time() - cpu) / images * 1e6


def versions() -> str:
    import PIL

    return f"grain {getattr(grain, '__version__', '?')}, numpy {np.__version__}, Pillow {PIL.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch size (one process)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--step-ms", type=float, default=20.0, help="simulated training step, milliseconds")
    parser.add_argument(
        "--cifar-zip",
        type=pathlib.Path,
        default=CIFAR_ZIP,
        help="the CIFAR-10 JPEG zip (train/<class>/NNNN.jpg); rows skipped if absent",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        rng = np.random.default_rng(0)
        np.savez(
            tmp / "cifar_like.npz",
            x_train=rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8),
            y_train=rng.integers(0, 10, 50000),
        )
        rows = [
            (
                "npz in memory, 32x32x3 (50,000 synthetic)",
                config("npz", 32, 3, args.batch, path=str(tmp / "cifar_like.npz")),
            ),
            (
                "  same, with uniform dequantisation",
                config("npz", 32, 3, args.batch, True, path=str(tmp / "cifar_like.npz")),
            ),
        ]
        if args.cifar_zip.exists():
            with zipfile.ZipFile(args.cifar_zip) as archive:
                archive.extractall(tmp / "cifar10", [n for n in archive.namelist() if n.startswith("train/")])
            rows += [
                (
                    "CIFAR-10 JPEG folder, 32x32x3 (50,000 files)",
                    config("folder", 32, 3, args.batch, path=str(tmp / "cifar10")),
                ),
                ("CIFAR-10 JPEG zip, read in place", config("folder", 32, 3, args.batch, path=str(args.cifar_zip))),
            ]
        rows += [
            ("digits 8x8x1 (1,500)", config("digits", 8, 1, args.batch)),
            ("digits resized to 32x32x1", config("digits", 32, 1, args.batch)),
        ]

        print(f"machine: {machine.describe()}; {versions()}; load average (1/5/15 min) {machine.load_average()}")
        print(f"command: {machine.command()}")
        print(f"global batch {args.batch}, {args.steps} timed steps per cell, simulated step {args.step_ms:g} ms\n")
        step_s = args.step_ms / 1000
        ideal = args.batch / step_s
        print("images/s (wall); CPU us/image is this process's CPU time per image, without prefetch\n")
        print(
            f"| source | CPU us/image | prefetch 0 | prefetch 4, 2 threads | + step, prefetch 0 "
            f"| + step, prefetch 4 (ideal {ideal:,.0f}) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, cfg in rows:
            source = data.get_source(cfg, "train")
            cells = [measure(source, cfg, args.steps, prefetch, s) for s in (0.0, step_s) for prefetch in (0, 4)]
            print(f"| {name} | {cells[0][1]:.0f} | " + " | ".join(f"{c[0]:,.0f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
