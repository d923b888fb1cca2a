"""Sampler comparison: FID and KID against the number of network evaluations (NFE), for a grid of
samplers (any registered one, by name) and NFE budgets or step counts, resumable after a kill.

Layout of the output folder::

    manifest.json                      what this comparison is (a restart must match it)
    samples/<setting>/shard_00000.npz  uint8 samples of one batch, its NFE and sampling seconds
    samples/<setting>/metrics.json     FID / KID / NFE / time of a finished setting
    grids/<setting>.png                the first 64 samples of each setting
    results.csv, fid_vs_nfe.png        the table and the plot, rewritten at the end of every run

Every file appears whole or not at all (written under a temporary name, then renamed), so a killed
run restarts where it stopped: finished shards and finished settings are skipped. Shard i of every
setting starts from the same prior noise (key ``fold_in(key(seed), i)``): the settings differ only
by their sampler, which makes their FIDs directly comparable. With several processes (jax.distributed), they
draw each shard together, the Inception features are split between them, and process 0 alone writes; every
process returns the same rows.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from score_sde import files, parallel, sampling
from score_sde.evaluation import images as images_lib
from score_sde.evaluation import metrics
from score_sde.evaluation.stats import FeatureStats, compute_stats

CSV_COLUMNS = (
    "sampler",
    "schedule",
    "guidance_weight",
    "budget",
    "steps",
    "tol",
    "nfe",
    "fid",
    "kid",
    "sampling_seconds",
    "num_samples",
)
GRID_IMAGES = 64


@dataclasses.dataclass(frozen=True)
class Setting:
    """One sampler configuration. ``sampler`` is a registered sampler's name (``"edm:heun"``, ``"ddim"``,
    ``"ode:rk45"``, ``"pc"``) or ``"pc:<predictor>:<corrector>"``, optionally ``@<schedule>`` (its own time
    grid); ``budget`` an NFE budget (translated to steps by `Sampler.steps`) or ``steps`` the number of
    steps (the grid's intervals; for PC its N time points, the SDE's N as in the paper); neither for an
    adaptive sampler, which takes the tolerance ``tol`` (rtol = atol of an ODE solver). ``schedule`` is the
    grid of every sampler without its own. ``guidance``: the class guidance weight of class-conditional samples
    (None: unguided samples of the model)."""

    sampler: str
    steps: int | None = None
    tol: float | None = None
    budget: int | None = None
    schedule: str = "uniform"
    guidance: float | None = None

    @property
    def grid_name(self) -> str:
        """The setting's time grid: its sampler's own ``@schedule``, else ``schedule``, "auto" being the sampler's
        published grid (`Sampler.grid`)."""
        return self.sampler.partition("@")[2] or sampling.grid_name(_parse(self.sampler)[0], self.schedule)

    @property
    def name(self) -> str:
        """A file-name-safe, unique label, e.g. ``pc-reverse_diffusion-langevin_steps20``,
        ``edm-heun-karras_nfe10``."""
        spec = self.sampler.partition("@")[0] + ("" if self.grid_name == "uniform" else f"@{self.grid_name}")
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", spec) + ("" if self.guidance is None else f"_w{self.guidance:g}")
        if self.budget is not None:
            return f"{base}_nfe{self.budget}"
        return f"{base}_steps{self.steps}" if self.steps is not None else f"{base}_tol{self.tol:g}"


def _parse(spec: str) -> tuple[sampling.Sampler, dict]:
    """The registered sampler a setting's ``sampler`` names, and the options its name fixes (a PC sampler's
    predictor and corrector); the schedule after "@" is checked."""
    name, _, schedule = spec.lower().partition("@")
    if schedule:
        sampling.GRIDS.lookup(schedule, f"the schedule of {spec!r}")
    kind, *args = name.split(":")
    if kind == "pc" and len(args) == 2:
        sampling.get_predictor(args[0]), sampling.get_corrector(args[1])  # unknown names fail here
        return sampling.get_sampler("pc"), dict(predictor=args[0], corrector=args[1])
    if name in sampling.SAMPLERS:
        return sampling.get_sampler(name), {}
    raise ValueError(
        f"sampler {spec!r}: expected 'pc:<predictor>:<corrector>' or 'ode:<method>' or a registered sampler "
        f"(optionally @<schedule>): {sorted(sampling.SAMPLERS)}"
    )


def grid(
    samplers: Sequence[str],
    steps: Sequence[int] = (),
    tolerances: Sequence[float] = (1e-5,),
    nfe: Sequence[int] = (),
    schedule: str = "auto",
    guidance_weights: Sequence[float | None] = (None,),
) -> list[Setting]:
    """Every sampler at every NFE budget and every step count, on ``schedule`` (unless its name has its own
    ``@schedule``; "auto": each sampler's published grid); adaptive samplers (ode:rk45, tsit5, bosh3,
    adaptive_sde) at every tolerance; each at every guidance weight (None: unguided). A budget below what a
    sampler needs fails here, naming it."""
    if schedule != "auto":
        sampling.GRIDS.lookup(schedule, "the schedule")
    settings = []
    for spec in samplers:
        sampler, fixed = _parse(spec)
        if not sampler.adaptive and not steps and not nfe:
            raise ValueError(f"sampler {spec!r} needs NFE budgets (--nfe) or step counts (--steps)")
        for budget in () if sampler.adaptive else nfe:
            sampler.steps(int(budget), **fixed)
        for w in guidance_weights:
            w = None if w is None else float(w)
            if sampler.adaptive:
                settings += [Setting(spec, None, float(tol), schedule=schedule, guidance=w) for tol in tolerances]
                continue
            settings += [Setting(spec, None, None, int(b), schedule, w) for b in nfe]
            settings += [Setting(spec, int(n), schedule=schedule, guidance=w) for n in steps]
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise ValueError(f"the grid repeats a setting: {names}")
    return settings


def option_keys() -> set[str]:
    """The config.sampling entries some registered sampler takes an option from (`samplers.options_from`)."""
    return {sampling.CONFIG_KEYS.get(o, o) for sampler in sampling.SAMPLERS.values() for o in sampler.options}


def sampling_fn(
    setting: Setting,
    sde,
    shape: tuple[int, ...],
    *,
    snr: float = 0.16,
    n_steps_each: int = 1,
    noise_removal: bool = True,
    sharding=None,
    **options,
) -> tuple[Callable, int | None]:
    """(``fn(key, score_fn) -> (samples, nfe)``, the steps it takes) for one setting. The options are the
    samplers' by their config.sampling names (snr, n_steps_each, noise_removal as config.sampling's defaults;
    eta, s_churn, order, ...): each sampler takes those it has, the ones its name fixes and the setting's
    tolerance overriding them."""
    sampler, fixed = _parse(setting.sampler)
    options.update(snr=snr, n_steps_each=n_steps_each, noise_removal=noise_removal)
    chosen = {**sampling.options_from(sampler, options), **fixed}
    steps = None
    if sampler.adaptive:
        chosen.update({name: setting.tol for name in sampler.tolerance})
    elif setting.budget is not None:
        steps = sampler.steps(setting.budget, **chosen)
    else:
        steps = setting.steps - 1 if sampler.name == "pc" else setting.steps
    run = functools.partial(sampling.sample, sampler, schedule=setting.grid_name, steps=steps, sharding=sharding)
    recorded = steps + 1 if sampler.name == "pc" else steps  # PC: its N time points
    return (lambda key, score_fn: run(key, score_fn, sde, shape, **chosen)), recorded


def _check_manifest(out_dir: str, manifest: dict) -> None:
    path = os.path.join(out_dir, "manifest.json")
    if parallel.from_first(np.array(os.path.exists(path))):
        with open(path) as f:
            existing = json.load(f)
        if existing != manifest:
            diff = {
                k: (existing.get(k), manifest.get(k))
                for k in set(existing) | set(manifest)
                if existing.get(k) != manifest.get(k)
            }
            raise ValueError(
                f"{out_dir} holds a different comparison ({diff}, as (there, asked)); "
                "use another output folder, or the same arguments to resume it"
            )
    elif jax.process_index() == 0:
        files.write_json(path, manifest)


def _sample_setting(
    setting: Setting,
    fn: Callable,
    score_for: Callable[[int], Callable],
    directory: str,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    to_unit: Callable,
    sharding,
    progress: Callable | None,
) -> None:
    os.makedirs(directory, exist_ok=True)
    n_shards = math.ceil(num_samples / batch_size)
    base = jax.random.key(seed)
    if sharding is not None and jax.process_count() == 1:  # the key on the samples' devices, replicated
        base = jax.device_put(base, NamedSharding(sharding.mesh, PartitionSpec()))
    # The shards an earlier run wrote, as process 0 sees them: every process draws the others.
    done = parallel.from_first(
        np.array([os.path.exists(os.path.join(directory, f"shard_{i:05d}.npz")) for i in range(n_shards)])
    )
    for i in range(n_shards):
        path = os.path.join(directory, f"shard_{i:05d}.npz")
        if done[i]:
            continue
        start = time.perf_counter()
        x, nfe = fn(jax.random.fold_in(base, i), score_for(i))
        # (waits for the devices: the time below is the sampling's; unsharded, each process drew the whole batch)
        x = parallel.gather(x) if sharding is not None else np.asarray(x)
        seconds = time.perf_counter() - start
        count = min(batch_size, num_samples - i * batch_size)
        try:
            samples = images_lib.to_uint8(np.asarray(to_unit(x[:count])))
        except ValueError as e:
            raise ValueError(f"{setting.name}, shard {i}: {e}") from e
        if jax.process_index() == 0:
            files.save_npz(path, samples=samples, nfe=parallel.to_host(nfe), seconds=np.float64(seconds))
        if progress is not None:
            progress(setting, i, n_shards)
    parallel.barrier(f"compare {directory} sampled")  # every shard written before any process reads them


def _shards(directory: str) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if re.fullmatch(r"shard_\d{5}\.npz", f))


def _evaluate_setting(
    setting: Setting,
    steps: int | None,
    directory: str,
    grid_path: str,
    *,
    extractor,
    reference: FeatureStats,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
) -> dict:
    shards = _shards(directory)
    nfes, seconds = [], 0.0
    for shard in shards:
        with np.load(shard) as f:
            nfes.append(int(f["nfe"]))
            seconds += float(f["seconds"])

    first: list[np.ndarray] = []  # the first GRID_IMAGES samples, for the grid

    def batches():
        for shard in shards:
            with np.load(shard) as f:
                samples = f["samples"]
            first.append(samples[: GRID_IMAGES - sum(map(len, first))])
            yield samples

    sample_stats = compute_stats(extractor, batches())
    if jax.process_index() == 0:
        images_lib.save_png(grid_path, images_lib.image_grid(np.concatenate(first)))
    kid = (
        metrics.kernel_distance(sample_stats.features, reference.features, kid_subsets, kid_subset_size, seed)
        if reference.features is not None
        else None
    )
    return {
        "sampler": setting.sampler,
        "schedule": setting.grid_name,
        "guidance_weight": setting.guidance,
        "budget": setting.budget,
        "steps": steps,
        "tol": setting.tol,
        "nfe": float(np.mean(nfes)),
        "fid": metrics.frechet_distance(sample_stats.mu, sample_stats.sigma, reference.mu, reference.sigma),
        "kid": kid,
        "sampling_seconds": seconds,
        "num_samples": sample_stats.n,
    }


def write_csv(path: str, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})
    files.write_text(path, buf.getvalue())


def _line(row: dict) -> str:
    """A row's line in the plot: its sampler, with its schedule unless uniform or named in the sampler, and its
    guidance weight."""
    schedule = row.get("schedule") or "uniform"
    line = row["sampler"] if schedule == "uniform" or "@" in row["sampler"] else f"{row['sampler']} ({schedule})"
    weight = row.get("guidance_weight")
    return line if weight is None or weight == "" else f"{line}, w={float(weight):g}"


_COLOURS = tuple(f"C{i}" for i in range(10))
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
_LINESTYLES = {"uniform": "-", "logsnr": "--", "karras": ":", "quadratic": "-."}
_FILLS = ("full", "none", "left", "right", "bottom", "top")


def line_style(sampler: str, schedule: str = "uniform", weight_index: int = 0) -> dict:
    """The matplotlib style of a sampler's line, the same in every plot: colour and marker by the sampler's place
    among every registered sampler and PC pair (unique for up to 80), the line style by its time grid, the
    marker's fill by its guidance weight's place in the plot."""
    names = sorted(sampling.SAMPLERS) + sorted(f"pc:{p}:{c}" for p in sampling.PREDICTORS for c in sampling.CORRECTORS)
    base = sampler.lower().partition("@")[0]
    i = names.index(base) if base in names else len(names)
    return dict(
        color=_COLOURS[i % len(_COLOURS)],
        marker=_MARKERS[(i // len(_COLOURS)) % len(_MARKERS)],
        linestyle=_LINESTYLES.get(schedule, (0, (3, 1, 1, 1, 1, 1))),
        fillstyle=_FILLS[weight_index % len(_FILLS)],
    )


def plot_fid_vs_nfe(path: str, rows: list[dict], title: str = "") -> None:
    """One line per sampler (and schedule and guidance weight) through its settings, FID against the NFE made
    (log-log), each in its `line_style`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = list(dict.fromkeys(r.get("guidance_weight") for r in rows))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for line in dict.fromkeys(map(_line, rows)):
        mine = [r for r in rows if _line(r) == line]
        points = sorted((r["nfe"], r["fid"]) for r in mine)
        first = mine[0]
        style = line_style(
            first["sampler"], first.get("schedule") or "uniform", weights.index(first.get("guidance_weight"))
        )
        ax.plot(*zip(*points), label=line, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel("FID")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with files.atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def compare(
    score_fn,
    sde,
    settings: Sequence[Setting],
    out_dir: str,
    *,
    image_shape: tuple[int, ...],
    num_samples: int,
    batch_size: int,
    extractor,
    reference: FeatureStats,
    to_unit: Callable = lambda x: x,
    seed: int = 0,
    sampler_options: dict | None = None,
    sharding=None,
    manifest: dict | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    progress: Callable[[Setting, int, int], None] | None = None,
    guide: Callable[[float, int], Callable] | None = None,
) -> list[dict]:
    """Samples ``num_samples`` images per setting in shards of ``batch_size`` with ``score_fn(x, t)`` (for a
    setting with a guidance weight w: ``guide(w, shard)``, the guided score of that shard's samples), and scores
    them against ``reference`` with ``extractor`` (an `InceptionFeatures`, or anything with its ``stream``).
    ``to_unit`` maps samples to [0, 1] (the data's inverse scaler). ``progress(setting, shard, n_shards)`` runs
    after each new shard is saved. ``manifest``: more that identifies the run (checkpoint, reference statistics),
    checked on restart with the grid and sizes. Returns the rows of ``results.csv`` (dicts keyed by
    `CSV_COLUMNS`)."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (FID needs a covariance), got {num_samples}")
    if guide is None and any(s.guidance is not None for s in settings):
        raise ValueError("settings with a guidance weight need guide(weight, shard)")
    options = dict(sampler_options or {})
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
    parallel.barrier(f"compare {out_dir} created")
    _check_manifest(
        out_dir,
        {
            **(manifest or {}),
            "settings": [s.name for s in settings],
            "num_samples": num_samples,
            "batch_size": batch_size,
            "seed": seed,
            "image_shape": list(image_shape),
            "sampler_options": options,
        },
    )
    if jax.process_index() == 0:
        os.makedirs(os.path.join(out_dir, "grids"), exist_ok=True)
    shape = (batch_size, *image_shape)
    rows = []
    for setting in settings:
        directory = os.path.join(out_dir, "samples", setting.name)
        metrics_path = os.path.join(directory, "metrics.json")
        if not parallel.from_first(np.array(os.path.exists(metrics_path))):
            fn, steps = sampling_fn(setting, sde, shape, sharding=sharding, **options)
            if setting.guidance is None:
                score_for = lambda shard: score_fn
            else:
                score_for = functools.partial(guide, setting.guidance)
            _sample_setting(
                setting,
                fn,
                score_for,
                directory,
                num_samples=num_samples,
                batch_size=batch_size,
                seed=seed,
                to_unit=to_unit,
                sharding=sharding,
                progress=progress,
            )
            row = _evaluate_setting(
                setting,
                steps,
                directory,
                os.path.join(out_dir, "grids", f"{setting.name}.png"),
                extractor=extractor,
                reference=reference,
                kid_subsets=kid_subsets,
                kid_subset_size=kid_subset_size,
                seed=seed,
            )
            if jax.process_index() == 0:
                files.write_json(metrics_path, row)
        parallel.barrier(f"compare {metrics_path}")  # written before any process reads it
        with open(metrics_path) as f:
            rows.append(json.load(f))
    if jax.process_index() == 0:
        write_csv(os.path.join(out_dir, "results.csv"), rows)
        plot_fid_vs_nfe(os.path.join(out_dir, "fid_vs_nfe.png"), rows, os.path.basename(os.path.abspath(out_dir)))
    return rows
