"""Inverse problems with a trained score model: inpainting, colorization, super-resolution, deblurring of given
images, written in resumable shards (the `score-sde solve` command).

Each input image x (from a folder, an .npz / .npy file, or a split of the model's dataset) is measured,
y = A x + sigma_y n (n standard Gaussian, sigma_y in the units of the model's data range), and a solution is
sampled from the model's posterior given y with one of the methods:

    replacement   the paper's method (Appendix I.2-I.3; noiseless y, operators with a pseudo-inverse), with the
                  config's PC sampler (config.sampling.method = 'pc')
    dps, pigdm    posterior-sampling guidance (conditional/guidance.py), with the config's sampler, any kind

OUT/results_00000.npz, ... hold per batch the results `samples` (uint8, so `score-sde fid` reads them), the
ground truth `truth` (uint8), the measurement `measurement` (float32, the model's range) and its picture
`view` (uint8), for inpainting the `mask` (uint8, 1 = known), the `residual`
||A x - y|| and the `psnr` (dB, on [0, 1] pixels) of each result; each shard is written atomically, and shard
i depends only on the seed and i, so a restarted command continues after the shards already there. Then
OUT.png shows, for the first 16 images, the measurement (A^+ y, or y for the blur), the result and the
ground truth side by side, and OUT/results.json the mean PSNR and residual.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import data as data_lib
from score_sde import files, parallel, sampling
from score_sde import sde as sde_lib
from score_sde.conditional import (
    GUIDANCE,
    AveragePool,
    GaussianBlur,
    GreyScale,
    Mask,
    replaced_predictor,
    replacement_sampler,
)
from score_sde.conditional.masks import MASKS
from score_sde.evaluation import images as images_lib
from score_sde.evaluation.images import save_grid
from score_sde.parallel import to_host
from score_sde.wiring import load_for_eval, score_fn_for

TASKS = ("inpaint", "colorize", "superres", "deblur")
GRID_IMAGES = 16


def methods() -> tuple[str, ...]:
    """The method names: the replacement method and every registered guidance."""
    return ("replacement", *sorted(GUIDANCE))


def load_inputs(config, *, images: str | None = None, split: str | None = None, num_images: int | None = None):
    """Ground-truth images (N, H, W, C) float32 in [0, 1]: from ``images`` (a folder of image files or shards,
    or an .npz / .npy array: uint8, or float in [0, 1]) or from ``split`` of the config's dataset; the first
    ``num_images`` of them. Raises ValueError naming the file if their shape is not the model's or their
    values lie outside [0, 1]."""
    if (images is None) == (split is None):
        raise ValueError("give the input images either as --images PATH or as --split train|test, not both")
    want = (config.data.image_size, config.data.image_size, config.data.num_channels)
    if split is not None:
        source = data_lib.get_source(config, split)
        n = len(source) if num_images is None else min(int(num_images), len(source))
        x, name = np.stack([source[i][0] for i in range(n)]), f"the {split} split of {config.data.dataset}"
    elif images.endswith((".npz", ".npy")) and os.path.isfile(images):
        x, name = _read_array(images), images
    else:
        x, name = np.concatenate(list(images_lib.iter_batches(images))), images
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(
            f"the images of {name} have shape {x.shape}, but the model takes (N, {', '.join(map(str, want))})"
        )
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.floating) or not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        lo, hi = (float(np.nanmin(x)), float(np.nanmax(x))) if x.size else (0.0, 0.0)
        raise ValueError(
            f"the images of {name} must be uint8 or floats in [0, 1]; they hold {x.dtype} values in [{lo}, {hi}]"
        )
    x = np.asarray(x, np.float32)[: None if num_images is None else int(num_images)]
    if not len(x):
        raise ValueError(f"{name} holds no images")
    return x


def _read_array(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as f:
        keys = [k for k in ("images", "samples") if k in f.files] or (f.files if len(f.files) == 1 else [])
        if not keys:
            raise ValueError(f"{path} holds {f.files}: expected one array, or one named 'images' or 'samples'")
        return f[keys[0]]


def make_mask(spec: str, shape, seed: int, first: int) -> np.ndarray:
    """The masks (B, H, W, C) of images first .. first + B - 1: a registered mask (conditional/masks.py, drawn
    from a generator seeded by (seed, first)), or a file (.npy / .npz: (H, W), (H, W, C), or one per image
    (N, H, W, C); 1 = known, 0 = to inpaint)."""
    b, h, w, c = shape
    if spec.lower() in MASKS:
        return MASKS.lookup(spec)(np.random.default_rng([seed, first]), shape)
    if not spec.endswith((".npy", ".npz")):
        raise ValueError(f"--mask {spec!r} is neither a mask file (.npy, .npz) nor one of {sorted(MASKS)}")
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"mask file not found: {spec}")
    mask = np.asarray(_read_array(spec), np.float32)
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.ndim == 3:
        mask = np.broadcast_to(mask, (first + b, *mask.shape))
    if mask.ndim != 4 or mask.shape[1:3] != (h, w) or mask.shape[3] not in (1, c) or len(mask) < first + b:
        raise ValueError(
            f"the mask {spec} has shape {_read_array(spec).shape}; the images need (H, W) = ({h}, {w}), (H, W, C) "
            f"or one per image (N, {h}, {w}, {c}) for their {first + b if mask.ndim == 4 else 'N'} images"
        )
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"the mask {spec} must hold only 0 (to inpaint) and 1 (known)")
    return np.broadcast_to(mask[first : first + b], shape).copy()


def make_operator(task: str, shape, *, mask=None, factor: int = 2, blur_sigma: float = 1.0):
    """The operator of ``task`` for image batches of ``shape`` (B, H, W, C)."""
    if task == "inpaint":
        return Mask.create(mask)
    if task == "colorize":
        return GreyScale(tuple(shape[1:]))
    if task == "superres":
        return AveragePool(tuple(shape[1:]), int(factor))
    if task == "deblur":
        return GaussianBlur(tuple(shape[1:]), float(blur_sigma))
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def _solver(config, method: str, sde, shape, *, sigma_y: float, weight: float, schedule: str, sharding):
    """solve(key, score_fn, operator, y) -> (x (B, H, W, C) in the model's range, nfe), and check(operator, y)
    raising ValueError if the method cannot take the operator (or the measurement's shape)."""
    s = config.sampling
    if method == "replacement":
        if str(s.method).lower() != "pc":
            raise ValueError(
                f"the replacement method runs the PC sampler: it needs config.sampling.method='pc', not {s.method!r}"
            )
        if sigma_y > 0:
            raise ValueError("the replacement method takes noiseless measurements (--sigma-y 0); use dps or pigdm")
        options = dict(snr=s.snr, n_steps=s.n_steps_each, probability_flow=s.probability_flow)

        def solve(key, score_fn, operator, y):
            return replacement_sampler(
                key,
                score_fn,
                sde,
                operator,
                y,
                predictor=s.predictor,
                corrector=s.corrector,
                denoise=s.noise_removal,
                sharding=sharding,
                **options,
            )

        def check(operator, y):
            replaced_predictor(s.predictor, operator, jnp.zeros(y.shape, y.dtype))

        return solve, check
    guidance = GUIDANCE.lookup(method, "--method")
    sampling_fn = sampling.get_sampling_fn(config, sde, shape, sharding=sharding)

    def solve(key, score_fn, operator, y):
        return sampling_fn(key, guidance(score_fn, sde, operator, y, sigma_y=sigma_y, weight=weight, schedule=schedule))

    def check(operator, y):
        guidance(
            lambda x, t: x,
            sde,
            operator,
            jnp.zeros(y.shape, y.dtype),
            sigma_y=sigma_y,
            weight=weight,
            schedule=schedule,
        )

    return solve, check


def _measurement_view(operator, y) -> jax.Array:
    """The measurement as an image of the input's shape: A^+ y, or y itself for the blur."""
    return operator.pinv(y) if operator.has_pinv else y


def psnr(x, truth) -> np.ndarray:
    """Peak signal-to-noise ratio (dB) of images in [0, 1] against the truth, per image."""
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(truth, np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def solve_to_shards(
    model_path: str,
    out: str,
    *,
    task: str,
    images: str | None = None,
    split: str | None = None,
    mask: str = "centre_box",
    method: str = "replacement",
    sigma_y: float = 0.0,
    weight: float = 1.0,
    schedule: str = "constant",
    factor: int = 2,
    blur_sigma: float = 1.0,
    num_images: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    overrides=(),
) -> dict:
    """Solves ``task`` for the input images with ``method`` into OUT (see the module's docstring). Returns the
    summary written to OUT/results.json: task, method, count, psnr and residual (means), nfe (per batch)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if method != "replacement" and method.lower() not in GUIDANCE:
        raise ValueError(f"unknown method {method!r}; choose one of {methods()}")
    if sigma_y < 0:
        raise ValueError(f"--sigma-y must be >= 0, got {sigma_y}")
    model, params, config, step = load_for_eval(model_path, overrides)
    truth = load_inputs(config, images=images, split=split, num_images=num_images)
    mesh = parallel.data_mesh()
    batch_size = int(config.eval.batch_size if batch_size is None else batch_size)
    batch_size = min(batch_size, -(-len(truth) // mesh.size) * mesh.size)
    parallel.check_batch_size(batch_size, mesh, "the batch size")
    shape = (batch_size, *truth.shape[1:])
    scaler, inverse_scaler = data_lib.get_data_scaler(config), data_lib.get_data_inverse_scaler(config)
    sde = sde_lib.get_sde(config)
    sharding = parallel.batch_sharding(mesh)
    solve, check = _solver(
        config, method, sde, shape, sigma_y=float(sigma_y), weight=float(weight), schedule=schedule, sharding=sharding
    )
    # Every argument is checked before anything is written: the task's operator, and the method on it.
    probe = make_operator(
        task,
        shape,
        mask=make_mask(mask, shape, seed, 0) if task == "inpaint" else None,
        factor=factor,
        blur_sigma=blur_sigma,
    )
    check(probe, jax.eval_shape(probe.A, jax.ShapeDtypeStruct(shape, jnp.float32)))

    meta = {
        "model": os.path.abspath(model_path),
        "step": step,
        "task": task,
        "method": method,
        "sigma_y": float(sigma_y),
        "weight": float(weight),
        "schedule": schedule if method != "replacement" else None,
        "mask": mask if task == "inpaint" else None,
        "factor": int(factor) if task == "superres" else None,
        "blur_sigma": float(blur_sigma) if task == "deblur" else None,
        "inputs": os.path.abspath(images) if images is not None else f"split:{split}",
        "seed": seed,
        "batch_size": batch_size,
        "sampling": json.loads(config.sampling.to_json()),
    }
    os.makedirs(out, exist_ok=True)
    files.claim_folder(out, "results_settings.json", meta, write=jax.process_index() == 0, count=len(truth))
    score_fn = score_fn_for(config, model, parallel.put_replicated(params, mesh))
    num_shards = -(-len(truth) // batch_size)
    nfe = None
    for i in range(num_shards):
        path = os.path.join(out, f"results_{i:05d}.npz")
        if os.path.exists(path):  # written by an earlier run of this command
            continue
        rows = truth[i * batch_size : (i + 1) * batch_size]
        padded = np.concatenate([rows, np.repeat(rows[-1:], batch_size - len(rows), axis=0)])  # one compiled shape
        masks = make_mask(mask, shape, seed, i * batch_size) if task == "inpaint" else None
        operator = make_operator(
            task,
            shape,
            mask=None if masks is None else jax.device_put(masks, sharding),
            factor=factor,
            blur_sigma=blur_sigma,
        )
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        x0 = jax.device_put(scaler(padded), sharding)
        y = operator.measure(jax.random.fold_in(key, 0), x0, float(sigma_y))
        x, nfe = solve(jax.random.fold_in(key, 1), score_fn, operator, y)
        residual = np.sqrt(np.sum(np.square(parallel.gather(operator.A(x) - y)).reshape(batch_size, -1), axis=1))
        view = np.clip(parallel.gather(inverse_scaler(_measurement_view(operator, y))), 0.0, 1.0)
        result = np.clip(parallel.gather(inverse_scaler(x)), 0.0, 1.0)
        n = len(rows)
        if jax.process_index() == 0:
            files.save_npz(
                path,
                samples=images_lib.to_uint8(result[:n]),
                truth=images_lib.to_uint8(rows),
                measurement=np.asarray(parallel.gather(y))[:n],
                view=images_lib.to_uint8(view[:n]),
                residual=residual[:n].astype(np.float32),
                psnr=psnr(result[:n], rows).astype(np.float32),
                **({} if masks is None else {"mask": masks[:n].astype(np.uint8)}),
            )
    return _summarise(out, meta, num_shards, None if nfe is None else int(to_host(nfe)))


def _summarise(out: str, meta: dict, num_shards: int, nfe) -> dict:
    """OUT.png (measurement, result, truth of the first images) and OUT/results.json from the shards."""
    shards = [np.load(os.path.join(out, f"results_{i:05d}.npz")) for i in range(num_shards)]
    psnrs = np.concatenate([s["psnr"] for s in shards])
    residuals = np.concatenate([s["residual"] for s in shards])
    summary = {
        "task": meta["task"],
        "method": meta["method"],
        "count": int(len(psnrs)),
        "psnr": float(psnrs.mean()),
        "residual": float(residuals.mean()),
        "sigma_y": meta["sigma_y"],
        "nfe": nfe,
    }
    if jax.process_index() == 0:
        first = {k: np.concatenate([s[k] for s in shards])[:GRID_IMAGES] for k in ("view", "samples", "truth")}
        columns = np.stack([first["view"], first["samples"], first["truth"]], axis=1).reshape(
            -1, *first["truth"].shape[1:]
        )
        save_grid(columns / 255.0, os.path.abspath(out).rstrip(os.sep) + ".png", nrow=3)
        files.write_json(os.path.join(out, "results.json"), summary)
    return summary
