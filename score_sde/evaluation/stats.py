"""Feature statistics of an image set, streamed in batches, and cached reference statistics.

A statistics file is an ``.npz`` with ``mu`` (2048,) and ``sigma`` (2048, 2048) in float64, ``n``,
and ``features`` (n, 2048) float32 (KID needs the features themselves), written beside a JSON record
of how it was made (``<file>.json``: dataset, split, number of images, image shape, weights file
hash, resize convention and scaling). pytorch-fid / clean-fid statistics (``mu``, ``sigma``) and the official
score_sde ones (``pool_3`` features) load too, without a record.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Callable, Iterable

import numpy as np

from score_sde import files
from score_sde.evaluation import metrics
from score_sde.evaluation.features import InceptionFeatures
from score_sde.evaluation.inception import RESIZE_DESCRIPTIONS


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Statistics of N images' pool3 features: mean (D,) and unbiased covariance (D, D), float64;
    the features (N, D) float32 when kept (for KID); the Inception Score (mean, std over 10 splits)
    when the weights have logits."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None
    inception_score: tuple[float, float] | None = None


class RunningMoments:
    """Mean and covariance of rows arriving in batches, merged exactly in float64 (Chan et al.'s
    pairwise update: M2 = M2_a + M2_b + delta delta^T n_a n_b / n), so no batch boundary matters."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64)
        nb = len(rows)
        if nb == 0:
            return
        mean_b = rows.mean(axis=0)
        centred = rows - mean_b
        m2_b = centred.T @ centred
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"statistics need at least 2 images, got {self.n}")
        return self.mean, self.m2 / (self.n - 1)


def compute_stats(
    extractor: InceptionFeatures, batches: Iterable[np.ndarray], progress: Callable[[int], None] | None = None
) -> FeatureStats:
    """Streams uint8 image batches (any lengths; every image is used) through the Inception network.
    Holds one batch of images at a time and the (N, 2048) features; ``progress(images_done)`` is
    called after each batch."""
    moments, feats, logits = RunningMoments(), [], []
    for out in extractor.stream(batches):
        moments.update(out["pool3"])
        feats.append(out["pool3"])
        if "logits" in out:
            logits.append(out["logits"])
        if progress is not None:
            progress(moments.n)
    mu, sigma = moments.mean_cov()
    score = metrics.inception_score(np.concatenate(logits)) if logits else None
    return FeatureStats(mu, sigma, moments.n, np.concatenate(feats), score)


def save_stats(path: str, stats: FeatureStats, record: dict) -> None:
    """Writes ``path`` (.npz) and ``path + ".json"``; each appears whole or not at all, the record
    last, so a record always describes a complete statistics file."""
    path = os.path.abspath(path)
    arrays = dict(mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n))
    if stats.features is not None:
        arrays["features"] = stats.features
    if stats.inception_score is not None:
        arrays["inception_score"] = np.asarray(stats.inception_score)
    files.save_npz(path, **arrays)
    files.write_json(path + ".json", {**record, "num_images": stats.n})


def is_stats_file(path: str) -> bool:
    """Whether ``path`` is an .npz of statistics (ours, pytorch-fid's or the official ``pool_3``)."""
    if not (os.path.isfile(path) and path.endswith(".npz")):
        return False
    with np.load(path, allow_pickle=False) as f:
        return {"mu", "sigma"} <= set(f.files) or "pool_3" in f.files


def load_stats(path: str) -> tuple[FeatureStats, dict | None]:
    """Reads a statistics file; returns it and its JSON record (None where there is none)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no statistics file at {path}")
    with np.load(path, allow_pickle=False) as f:
        if "pool_3" in f.files:  # the official score_sde assets/stats/*.npz hold the features
            feats = f["pool_3"].astype(np.float32)
            mu, sigma = metrics.mean_cov(feats)
            stats = FeatureStats(mu, sigma, len(feats), feats)
        elif {"mu", "sigma"} <= set(f.files):
            feats = f["features"] if "features" in f.files else None
            n = int(f["n"]) if "n" in f.files else (len(feats) if feats is not None else 0)
            score = tuple(float(s) for s in f["inception_score"]) if "inception_score" in f.files else None
            stats = FeatureStats(f["mu"].astype(np.float64), f["sigma"].astype(np.float64), n, feats, score)
        else:
            raise ValueError(f"{path} is not a statistics file: it has {f.files}, expected mu and sigma, or pool_3")
    record = None
    if os.path.isfile(path + ".json"):
        with open(path + ".json") as f:
            record = json.load(f)
    return stats, record


def make_record(extractor: InceptionFeatures, dataset: str, split: str, **extra) -> dict:
    """The identity of a statistics file: what data, which weights (the hash of the original PyTorch
    file: a re-conversion gives the same network), which preprocessing."""
    return {
        "dataset": dataset,
        "split": split,
        "weights_source": extractor.meta["source"],
        "weights_source_sha256": extractor.meta["source_sha256"],
        "preprocessing": RESIZE_DESCRIPTIONS[extractor.resize],
        "feature": "pool3",
        **extra,
    }


def cached_stats(
    path: str,
    extractor: InceptionFeatures,
    batches: Callable[[], Iterable[np.ndarray]],
    record: dict,
    progress: Callable[[int], None] | None = None,
) -> FeatureStats:
    """Statistics at ``path`` if it exists with a record matching ``record`` (every key of it); else,
    if there is no file, computed from ``batches()`` (uint8 image batches) and saved there with the
    record (plus ``num_images``, ``weights_file_sha256`` and ``created``). A file made differently is
    never overwritten: that is an error naming the differences."""
    if os.path.exists(path):
        stats, existing = load_stats(path)
        if existing is None:
            raise ValueError(
                f"{path} holds statistics without a record ({path}.json) of how they were made; "
                "pass another path, or use it directly where a statistics file is taken"
            )
        diff = {k: (existing.get(k), v) for k, v in record.items() if existing.get(k) != v}
        if diff:
            raise ValueError(
                f"{path} holds statistics made differently ({diff}, as (there, asked)); pass another path or delete it"
            )
        return stats
    stats = compute_stats(extractor, batches(), progress)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    save_stats(path, stats, {**record, "weights_file_sha256": extractor.meta["sha256"], "created": created})
    return stats
