"""A trained model, evaluated: its score function and sampler, the test loss, samples in resumable shards,
bits/dim.

Every command takes a training workdir (its newest checkpoint), one checkpoint of it
(WORKDIR/checkpoints/STEP) or a model checkpoint (`checkpoints.save_model`), runs data-parallel over every
device of every host, and writes its result atomically, by default into WORKDIR/eval.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from score_sde import checkpoints as ckpt_lib
from score_sde import data as data_lib
from score_sde import files, likelihood, models, parallel
from score_sde import sde as sde_lib
from score_sde.evaluation import images as images_lib
from score_sde.evaluation.images import save_grid
from score_sde.parallel import to_host
from score_sde.train import make_eval_fn
from score_sde.wiring import (
    EVAL_STREAM,
    class_guidance,
    load_for_eval,
    make_loss_fn,
    make_sample_fn,
    score_fn_for,
    stream_key,
)


def _result_dir(model_path: str, out) -> str:
    if out is not None:
        return out
    path = os.path.abspath(model_path)
    if os.path.isdir(os.path.join(path, ckpt_lib.PERIODIC)):
        return os.path.join(path, "eval")
    raise ValueError(f"--out is required: {model_path} is not a training workdir")


def _named(stem: str, step) -> str:
    return f"{stem}.json" if step is None else f"{stem}_{step}.json"


def evaluate_loss(model_path: str, *, overrides=(), out=None) -> dict:
    """The model's mean loss (EMA parameters, no dropout) over the whole test split, every example once; a
    class-conditional model's with the test labels (and its label dropout, the training objective). Written to
    OUT/loss_<step>.json (loss.json for a model checkpoint without a step). Returns {"loss", "count", "step"}."""
    model, params, config, step = load_for_eval(model_path, overrides)
    conditional = models.num_classes(config) > 0
    mesh = parallel.data_mesh()
    batch_size = int(config.eval.batch_size)
    parallel.check_batch_size(batch_size, mesh, "config.eval.batch_size")
    eval_fn = make_eval_fn(make_loss_fn(config, model, train=False), mesh=mesh)
    params = parallel.put_replicated(params, mesh)
    total, count = 0.0, 0
    source = data_lib.get_source(config, "test")
    if conditional and not source.num_classes:
        raise ValueError(f"the model is class-conditional, but dataset {config.data.dataset!r} has no labels")
    for i, batch in enumerate(data_lib.eval_batches(source, batch_size, config)):
        rows = (batch["image"], batch["label"]) if conditional else batch["image"]
        x, mask = parallel.put_batch((rows, batch["mask"]), mesh, batch_size)
        s, n = eval_fn(params, jax.random.fold_in(stream_key(config, EVAL_STREAM), i), x, mask)
        total, count = total + float(to_host(s)), count + int(to_host(n))
    result = {"loss": total / count, "count": count, "step": step}
    if jax.process_index() == 0:
        files.write_json(os.path.join(_result_dir(model_path, out), _named("loss", step)), result)
    return result


def sample_to_shards(
    model_path: str,
    out: str,
    *,
    overrides=(),
    num_samples=None,
    batch_size=None,
    seed=0,
    classifier: str | None = None,
    class_label: int | str | None = None,
    guidance_weight: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
) -> dict:
    """Draws ``num_samples`` (default config.eval.num_samples) with config.sampling's sampler into
    OUT/samples_00000.npz, ... (uint8 "samples" (batch, H, W, C)), each shard written atomically. Shard i
    comes from the key fold_in(PRNGKey(seed), i): a restarted command keeps the shards already written
    and continues, giving the same samples as an uninterrupted one. OUT.png shows the first 64 (beside
    OUT, whose shards `score-sde fid` reads).

    With ``class_label`` (a class index, or 'random': each sample's class uniform, drawn per shard from (seed,
    shard)) the samples are of that class, and each shard also holds their "labels": classifier guidance with
    the time-dependent classifier ``classifier`` (workdir or model checkpoint) if given, else classifier-free
    guidance of the class-conditional model (`wiring.class_guidance`), with ``guidance_weight`` (default: the
    exact conditional, 1 for a classifier, 0 for classifier-free) and ``guidance_interval`` (classifier-free)."""
    model, params, config, step = load_for_eval(model_path, overrides)
    if class_label is None and (classifier, guidance_weight, guidance_interval) != (None, None, None):
        raise ValueError("--classifier, --guidance-weight and --guidance-interval need --class-label")
    guidance = None
    if class_label is not None:
        guidance = class_guidance(config, classifier=classifier, weight=guidance_weight, interval=guidance_interval)
        guidance.labels(class_label, 1, seed, 0)  # an unknown spec or a class outside the model's fails here
    num_samples = int(config.eval.num_samples if num_samples is None else num_samples)
    batch_size = int(config.eval.batch_size if batch_size is None else batch_size)
    if num_samples <= 0 or batch_size <= 0:
        raise ValueError(f"--num-samples ({num_samples}) and --batch-size ({batch_size}) must be positive")
    batch_size = min(batch_size, num_samples)
    os.makedirs(out, exist_ok=True)
    meta = {
        "model": os.path.abspath(model_path),
        "step": step,
        "seed": seed,
        "batch_size": batch_size,
        "sampling": json.loads(config.sampling.to_json()),
        "sde": config.training.sde,
    }
    if guidance is not None:
        meta.update(class_label=class_label, guidance=guidance.method, guidance_weight=guidance.weight)
        if classifier is not None:
            meta.update(classifier=os.path.abspath(classifier))
        if guidance.interval is not None:
            meta.update(guidance_interval=list(guidance.interval))
    files.claim_folder(out, "samples.json", meta, write=jax.process_index() == 0, num_samples=num_samples)

    mesh = parallel.data_mesh()
    sample_fn = make_sample_fn(config, model, num_samples=batch_size, mesh=mesh)
    params = parallel.put_replicated(params, mesh)
    num_shards = -(-num_samples // batch_size)
    # The shards an earlier run of this command wrote, as process 0 sees them: every process draws the others.
    done = parallel.from_first(
        np.array([os.path.exists(os.path.join(out, f"samples_{i:05d}.npz")) for i in range(num_shards)])
    )
    nfe = None
    bar = _progress(num_shards, "shards")
    for i in range(num_shards):
        path = os.path.join(out, f"samples_{i:05d}.npz")
        if done[i]:
            bar.update(1)
            continue
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        count = min(batch_size, num_samples - i * batch_size)
        if guidance is None:
            images, nfe = sample_fn(params, key)
            extra = {}
        else:
            labels = guidance.labels(class_label, batch_size, seed, i)
            images, nfe = sample_fn(params, key, guidance.guide(labels))
            extra = {"labels": labels[:count]}
        images = parallel.gather(images)[:count]
        if jax.process_index() == 0:
            files.save_npz(path, samples=images_lib.to_uint8(images), **extra)
        bar.update(1)
    bar.close()
    if jax.process_index() == 0:
        first = np.concatenate(
            [
                np.load(os.path.join(out, f"samples_{i:05d}.npz"))["samples"]
                for i in range(min(num_shards, -(-64 // batch_size)))
            ]
        )[:64]
        save_grid(first / 255.0, grid_path(out))
    return {
        "num_samples": num_samples,
        "nfe": None if nfe is None else int(to_host(nfe)),
        "out": out,
        "sampler": sample_fn.description,
    }


def evaluate_bpd(
    model_path: str, *, overrides=(), split=None, num_batches=None, batch_size=None, num_repeats=None, out=None
) -> dict:
    """Bits/dim of the split (default config.eval.bpd_dataset) under the probability-flow ODE (core's
    likelihood, Hutchinson-Skilling divergence, RK45), on uniformly dequantised data, averaged over
    ``num_repeats`` (default config.eval.bpd_num_repeats) passes over the data, each example once per pass;
    every pass draws fresh dequantisation noise and fresh Hutchinson probes (the official code makes 5 passes
    over the test split). The standard error is that of the mean over examples of their per-example means.
    Written to OUT/bpd_<split>_<step>.json. Returns {"bpd", "bpd_stderr", "bpd_per_repeat", "count" (examples
    per pass), "repeats", "split", "step"}."""
    model, params, config, step = load_for_eval(model_path, overrides)
    split = str(config.eval.bpd_dataset if split is None else split).lower()
    num_repeats = int(config.eval.get("bpd_num_repeats", 1) if num_repeats is None else num_repeats)
    if num_repeats < 1:
        raise ValueError(f"config.eval.bpd_num_repeats / --num-repeats must be at least 1, got {num_repeats}")
    mesh = parallel.data_mesh()
    batch_size = int(config.eval.batch_size if batch_size is None else batch_size)
    parallel.check_batch_size(batch_size, mesh, "the likelihood batch size")
    likelihood_fn = likelihood.get_likelihood_fn(
        sde_lib.get_sde(config), data_lib.get_data_inverse_scaler(config), sharding=parallel.batch_sharding(mesh)
    )
    score_fn = score_fn_for(config, model, parallel.put_replicated(params, mesh))
    source = data_lib.get_source(config, split)
    total = -(-len(source) // batch_size) if num_batches is None else min(num_batches, -(-len(source) // batch_size))
    key = stream_key(config, EVAL_STREAM)
    passes = []  # per pass, the bits/dim of every example
    bar = _progress(num_repeats * total, "batches")
    for repeat in range(num_repeats):
        bpds = []
        batches = data_lib.eval_batches(source, batch_size, config, dequantize=True, repeat=repeat)
        for i, batch in zip(range(total), batches):
            x, mask = parallel.put_batch((batch["image"], batch["mask"]), mesh, batch_size)
            # The probes of batch i of pass r: a key of their own, as the official evaluation's bpd rounds.
            bpd, _, _ = likelihood_fn(jax.random.fold_in(key, repeat * total + i), score_fn, x)
            bpds.append(parallel.gather(bpd)[parallel.gather(mask)])
            bar.update(1)
        passes.append(np.concatenate(bpds))
    bar.close()
    per_example = np.mean(passes, axis=0)
    n = len(per_example)
    result = {
        "bpd": float(per_example.mean()),
        "bpd_stderr": float(per_example.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "bpd_per_repeat": [float(p.mean()) for p in passes],
        "count": n,
        "repeats": num_repeats,
        "split": split,
        "step": step,
    }
    if jax.process_index() == 0 and (out is not None or os.path.isdir(os.path.join(model_path, ckpt_lib.PERIODIC))):
        files.write_json(os.path.join(_result_dir(model_path, out), _named(f"bpd_{split}", step)), result)
    return result


def grid_path(out: str) -> str:
    """The PNG beside the sample folder ``out`` that shows its first 64 samples."""
    return os.path.abspath(out).rstrip(os.sep) + ".png"


def _progress(total: int, unit: str):
    import tqdm

    return tqdm.tqdm(total=total, unit=unit, dynamic_ncols=True, disable=jax.process_index() != 0)
