"""One accelerator, one command, under 10 minutes: training, sampling and FID throughput (`benchmarks/gpu.sh`).

    python benchmarks/bench_gpu.py [--out benchmarks/results/gpu_<device>.md] [--quick]

1. Training: images/s of the compiled training step (`score_sde.train.make_train_fn`: loss, backward, clipping,
   Adam, EMA) for the CIFAR-10 DDPM++ (VP) and NCSN++ (VE) configs at the paper's batch (128), float32 and
   bfloat16 compute, and the model FLOPs utilisation: XLA's cost analysis of the compiled step (FLOPs per step)
   over its time, divided by the device's dense peak (`bench_models.device_peak`: TF32 for float32 on NVIDIA).
2. The largest batch that fits: the float32 training step at doubling batches from 128 until one fails to run
   (or --max-batch), with its images/s.
3. Sampling at batch 1000 (DDPM++, float32, random weights: the speed does not depend on them): the PC sampler
   (reverse diffusion + Langevin, 1000 steps = 2000 network evaluations, timed over --pc-steps of them and
   extrapolated, as every step costs the same) and a 10-step fast sampler (the first of `FAST_SAMPLERS` in the
   sampler table, else the probability-flow ODE with 10 Euler steps).
4. FID: Inception images/s (batch 500, converted weights from `convert-inception`, or random weights of the same
   network when there are none: the speed is the same), and the end-to-end time of a 10,000-image FID (images in,
   features, running statistics, Frechet distance against statistics of 1,000 others).

Writes one Markdown table, the device named. `--tiny` runs the same code at CI sizes on any machine (the tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

NETWORKS = {
    "DDPM++ (VP)": "configs/vp/cifar10_ddpmpp_continuous.py",
    "NCSN++ (VE)": "configs/ve/cifar10_ncsnpp_continuous.py",
}
FAST_SAMPLERS = ("dpm_solver++:2m", "ddim", "dpm_solver++:3m", "edm:heun")  # the first registered one is timed
TINY = {
    "model.nf": 8,
    "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (4,),
    "data.image_size": 8,
}


def _config(path: str, args, **fields):
    from score_sde.config import load_config

    config = load_config(str(REPO / path))
    config.update_from_flattened_dict({**(TINY if args.tiny else {}), **fields})
    return config


def _best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls after a first (compiling) one."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def train_throughput(path: str, batch: int, dtype: str, args) -> dict:
    """images/s, TFLOP/s and the fraction of peak of one training step; raises on out-of-memory."""
    from bench_models import device_peak, flops

    from score_sde import models, parallel, train, wiring

    config = _config(path, args, **{"training.batch_size": batch, "model.dtype": dtype})
    mesh = parallel.data_mesh(jax.local_devices()[:1])
    model, optimizer = models.get_model(config), train.get_optimizer(config)
    state = [train.init_state(config, model, optimizer, parallel.replicated(mesh))]
    train_fn = train.make_train_fn(
        wiring.make_loss_fn(config, model, train=True), optimizer, ema_rate=0.999, mesh=mesh, key=jax.random.key(0)
    )
    size, channels = config.data.image_size, config.data.num_channels
    rows = np.random.default_rng(0).uniform(size=(1, batch, size, size, channels)).astype(np.float32)
    batches = parallel.put_batch(rows, mesh, batch, batch_axis=1)
    compiled = train_fn.lower(state[0], batches).compile()

    def step():
        state[0], (losses, _) = compiled(state[0], batches)
        return losses

    seconds = _best_seconds(step, args.repeats)
    total, (peak, _) = flops(compiled), device_peak(dtype)
    return {"images_per_s": batch / seconds, "tflops": total / seconds / 1e12, "mfu": total / seconds / peak}


def largest_batch(path: str, args, base: dict) -> tuple[int, dict]:
    """The largest doubling of the base batch whose float32 step runs (up to --max-batch), with its numbers;
    ``base``: those of the base batch."""
    batch, best = 2 * args.batch, (args.batch, base)
    while batch <= args.max_batch:
        try:
            result = train_throughput(path, batch, "float32", args)
        except Exception as e:  # XLA's out-of-memory is a runtime error of the compile or the first call
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                raise
            break
        best, batch = (batch, result), batch * 2
    return best


def sampling_throughput(args) -> list[tuple[str, float, int]]:
    """(sampler, images/s, network evaluations) at --sample-batch for the PC sampler and a fast one."""
    from score_sde import models, wiring
    from score_sde import sde as sde_lib
    from score_sde.sampling import SAMPLERS, ode_sampler, pc_sampler, time_grid

    config = _config(NETWORKS["DDPM++ (VP)"], args)
    model = models.get_model(config)
    shape = (args.sample_batch, config.data.image_size, config.data.image_size, config.data.num_channels)
    x0, labels = jnp.zeros(shape), jnp.ones(shape[:1])
    params = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x0, labels)["params"]
    sde = sde_lib.get_sde(config)
    rows = []

    # PC: reverse diffusion + Langevin, every step the same cost: time args.pc_steps of the N = 1000.
    short = dataclasses.replace(sde, N=args.pc_steps)
    pc = jax.jit(lambda p, k: pc_sampler(k, wiring.score_fn_for(config, model, p), short, shape))
    seconds = _best_seconds(lambda: pc(params, jax.random.key(1)), args.repeats)
    per_step = seconds / args.pc_steps
    rows.append(
        (
            f"PC reverse_diffusion + langevin, {sde.N} steps (timed over {args.pc_steps})",
            shape[0] / (per_step * sde.N),
            2 * sde.N,
        )
    )

    name = next((n for n in FAST_SAMPLERS if n in SAMPLERS), None)
    if name is not None:
        sampler = SAMPLERS.lookup(name, "the fast sampler")
        ts = jnp.asarray(time_grid("logsnr", sde, sampler.steps(args.fast_nfe)))

        def fast(p, k):
            x = sde.prior_sampling(k, shape)
            return sampler.fn(k, wiring.score_fn_for(config, model, p), sde, x, ts)

        label = f"{name}, NFE budget {args.fast_nfe}"
    else:
        fast = lambda p, k: ode_sampler(  # noqa: E731
            k, wiring.score_fn_for(config, model, p), sde, shape, method="euler", num_steps=args.fast_nfe
        )
        label = f"ode:euler, {args.fast_nfe} steps (no fast sampler registered)"
    fast = jax.jit(fast)
    nfe = int(jax.device_get(fast(params, jax.random.key(2))[1]))
    rows.append((label, shape[0] / _best_seconds(lambda: fast(params, jax.random.key(2)), args.repeats), nfe))
    return rows


class _TinyFeatures:
    """--tiny's stand-in for the Inception (whose 299 x 299 input takes minutes of CPU to compile): a fixed random
    projection of the pixels to 64 features, jitted, with InceptionFeatures' interface."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        w = jax.random.normal(jax.random.key(0), (32 * 32 * 3, 64)) / 64.0
        self._apply = jax.jit(lambda x: {"pool3": jnp.tanh(x.reshape(len(x), -1).astype(jnp.float32) / 255.0 @ w)})

    def stream(self, batches):
        from score_sde.evaluation.features import rebatch

        for chunk in rebatch(batches, self.batch_size):
            yield {k: np.asarray(v) for k, v in self._apply(chunk).items()}

    def __call__(self, images):
        return next(self.stream([images]))


def fid_throughput(args) -> dict:
    """Inception images/s and the end-to-end seconds of an --fid-images FID against --fid-reference others."""
    from score_sde.evaluation import metrics, stats, weights
    from score_sde.evaluation.features import InceptionFeatures
    from score_sde.evaluation.inception import INPUT_SIZE, InceptionV3

    if args.tiny:
        extractor, source = _TinyFeatures(args.fid_batch), "a random projection standing in for the Inception"
    else:
        try:
            loaded, source = weights.load(args.weights), "converted weights"
        except FileNotFoundError:  # the same network and speed with random weights
            shape = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3))
            loaded = (jax.jit(InceptionV3().init)(jax.random.key(0), shape), {"has_logits": False})
            source = "random weights (no converted weights found)"
        extractor = InceptionFeatures(loaded, batch_size=args.fid_batch, devices=jax.local_devices()[:1])

    def images(n, seed):
        rng = np.random.default_rng(seed)
        for start in range(0, n, args.fid_batch):
            m = min(args.fid_batch, n - start)
            yield np.repeat(np.repeat(rng.uniform(0, 255, (m, 8, 8, 3)), 4, 1), 4, 2).astype(np.uint8)

    batch = next(images(args.fid_batch, 0))
    per_batch = _best_seconds(lambda: extractor(batch)["pool3"], args.repeats)
    reference = stats.compute_stats(extractor, images(args.fid_reference, 1))
    start = time.perf_counter()
    sample = stats.compute_stats(extractor, images(args.fid_images, 2))
    fid = metrics.frechet_distance(sample.mu, sample.sigma, reference.mu, reference.sigma)
    seconds = time.perf_counter() - start
    return {"images_per_s": args.fid_batch / per_batch, "end_to_end_s": seconds, "fid": fid, "source": source}


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128, help="training batch (default 128, the paper's)")
    p.add_argument("--max-batch", type=int, default=4096, help="largest batch tried (default 4096)")
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--sample-batch", type=int, default=1000)
    p.add_argument("--pc-steps", type=int, default=50, help="PC steps timed (default 50 of the 1000)")
    p.add_argument("--fast-nfe", type=int, default=10)
    p.add_argument("--fid-batch", type=int, default=500)
    p.add_argument("--fid-images", type=int, default=10000)
    p.add_argument("--fid-reference", type=int, default=1000)
    p.add_argument("--weights", default=None, help="converted Inception .npz (default: convert-inception's output)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the compiling one (default 3)")
    p.add_argument("--quick", action="store_true", help="float32 only, no largest-batch search, 2,000-image FID")
    p.add_argument("--tiny", action="store_true", help="CI sizes (tiny networks, small batches) on any device")
    p.add_argument("--out", help="write the table (markdown) here (default: print only)")
    args = p.parse_args(argv)
    if args.quick:
        args.dtypes, args.max_batch, args.fid_images = ["float32"], 0, 2000
    if args.tiny:
        args.batch, args.max_batch = min(args.batch, 4), min(args.max_batch, 8)
        args.sample_batch, args.pc_steps, args.fid_batch, args.fid_images, args.fid_reference = 4, 2, 4, 8, 8

    import machine

    device = jax.devices()[0]
    started = time.perf_counter()
    lines = [
        f"# One-device benchmark: {device.device_kind} ({device.platform})" + (" (tiny CI sizes)" if args.tiny else ""),
        "",
        f"- machine: {machine.describe()}",
        f"- command: `{machine.command()}`",
        "",
        "| what | setting | images/s | TFLOP/s | model FLOPs utilisation |",
        "|---|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)

    def row(*cells):
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(lines[-1], flush=True)

    for name in args.networks:
        base = None
        for dtype in args.dtypes:
            r = train_throughput(NETWORKS[name], args.batch, dtype, args)
            base = r if dtype == "float32" else base
            row(
                f"training step, {name}",
                f"batch {args.batch}, {dtype}",
                f"{r['images_per_s']:.1f}",
                f"{r['tflops']:.2f}",
                f"{r['mfu']:.1%}",
            )
        if args.max_batch > args.batch:
            base = base or train_throughput(NETWORKS[name], args.batch, "float32", args)
            batch, r = largest_batch(NETWORKS[name], args, base)
            capped = " (the largest tried)" if 2 * batch > args.max_batch else ""
            row(
                f"largest batch, {name}",
                f"batch {batch}{capped}, float32",
                f"{r['images_per_s']:.1f}",
                f"{r['tflops']:.2f}",
                f"{r['mfu']:.1%}",
            )
    for label, rate, nfe in sampling_throughput(args):
        row("sampling, DDPM++ (VP)", f"{label}, batch {args.sample_batch}, {nfe} NFE", f"{rate:.1f}", "", "")
    r = fid_throughput(args)
    row("FID Inception", f"batch {args.fid_batch}, {r['source']}", f"{r['images_per_s']:.1f}", "", "")
    row(
        "end-to-end FID",
        f"{args.fid_images} images vs statistics of {args.fid_reference}: {r['end_to_end_s']:.1f} s",
        f"{args.fid_images / r['end_to_end_s']:.1f}",
        "",
        "",
    )
    lines += ["", f"Total time of this run: {time.perf_counter() - started:.0f} s."]
    print(lines[-1])
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
