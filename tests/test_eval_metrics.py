"""FID / KID / IS formulas against closed forms and independent computations; streaming statistics,
their cache, and image-set readers. No Inception weights needed."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from score_sde.evaluation import images, metrics, stats
from score_sde.evaluation.features import rebatch


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# float64 eigendecompositions of well-conditioned 16x16 / 2x2 matrices: errors ~1e-13 of the trace.
FID_RTOL = 1e-9


def test_fid_commuting_gaussians_closed_form():
    # sigma_k = R diag(a_k) R^T commute: tr((s1 s2)^(1/2)) = sum sqrt(a1 a2), so
    # FID = |mu1 - mu2|^2 + sum (sqrt(a1) - sqrt(a2))^2.
    rng = np.random.default_rng(0)
    d = 16
    r = _rotation(d, rng)
    a1, a2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    exact = lambda a1: np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a1) - np.sqrt(a2)) ** 2)  # noqa: E731
    got = metrics.frechet_distance(mu1, (r * a1) @ r.T, mu2, (r * a2) @ r.T)
    assert got == pytest.approx(exact(a1), rel=FID_RTOL)
    # A singular covariance (fewer images than dimensions): a zero eigenvalue comes out as
    # ~eps64 * |sigma| ~ 1e-15 and its square root as ~3e-8, twice (sigma1^(1/2), then the trace).
    a1[3] = 0.0
    got = metrics.frechet_distance(mu1, (r * a1) @ r.T, mu2, (r * a2) @ r.T)
    assert got == pytest.approx(exact(a1), abs=1e-6)


def test_fid_non_commuting_2x2_closed_form():
    # For 2x2 M with positive eigenvalues, tr(M^(1/2)) = sqrt(tr M + 2 sqrt(det M)); M = s1 s2.
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=FID_RTOL)
    assert abs(metrics.frechet_distance(mu1, s1, mu1, s1)) < 1e-12 * np.trace(s1)


def test_fid_from_features_few_rows_equals_covariance_form():
    rng = np.random.default_rng(6)
    d = 64
    for n1, n2 in ((20, 30), (100, 90)):  # fewer rows than dimensions (row-space form), and more
        f1 = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3
        f2 = rng.standard_normal((n2, d)) + 0.2
        mu1, s1 = metrics.mean_cov(f1)
        mu2, s2 = metrics.mean_cov(f2)
        exact = metrics.frechet_distance(mu1, s1, mu2, s2)
        # The covariance form takes square roots of the ~d null eigenvalues' round-off, eps64 |s|^2:
        # error up to 2 d sqrt(eps64) |s| (twice over, from s1^(1/2) and from the trace).
        tol = 4 * d * np.sqrt(np.finfo(np.float64).eps) * max(np.linalg.norm(s1, 2), np.linalg.norm(s2, 2))
        assert metrics.fid_from_features(f1, f2) == pytest.approx(exact, abs=tol)
        assert abs(metrics.fid_from_features(f1, f1)) < 1e-10 * np.trace(s1)


def _mmd2_unbiased(x, y):
    """Independent KID: kernel entries one by one over index pairs, float64 throughout."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / m**2


def test_kid_equals_independent_unbiased_mmd():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 24)).astype(np.float32)
    y = (rng.standard_normal((40, 24)) * 1.3 + 0.4).astype(np.float32)
    exact = _mmd2_unbiased(x, y)
    # subset_size >= N: each "subset" is a permutation of the whole set, and the MMD estimate is
    # permutation invariant, so KID is exactly the full-set estimate for any number of subsets.
    # Gram matrices in float32 over 24 dims: ~1e-6 relative per kernel entry; KID here is O(1).
    assert metrics.kernel_distance(x, y, num_subsets=3, subset_size=1000) == pytest.approx(exact, rel=1e-5)
    # Same distribution: the unbiased estimate is centred on 0 (the biased one, keeping i == j,
    # would be ~ 2 E k(x, x) / m > 0); its spread here is ~0.05.
    same = metrics.kernel_distance(x, rng.standard_normal((40, 24)).astype(np.float32), 1, 1000)
    assert abs(same) < 0.2 < exact


def test_kid_subsets_average_estimates():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    y = (rng.standard_normal((25, 8)) + 0.5).astype(np.float32)
    # Replays the subset draws (x subset, then y subset, per subset) with the same generator.
    draws = np.random.default_rng(7)
    expected = []
    for _ in range(4):
        ix, iy = draws.choice(30, 10, replace=False), draws.choice(25, 10, replace=False)
        expected.append(_mmd2_unbiased(x[ix], y[iy]))
    got = metrics.kernel_distance(x, y, num_subsets=4, subset_size=10, seed=7)
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


def test_inception_score_known_values():
    # p(y|x) one-hot (logit gap 50: off-class mass e^-50) and classes balanced: IS = #classes.
    logits = 50.0 * np.eye(4)[np.arange(40) % 4]
    assert metrics.inception_score(logits, splits=1)[0] == pytest.approx(4.0, rel=1e-12)
    mean, std = metrics.inception_score(logits, splits=2)
    assert mean == pytest.approx(4.0, rel=1e-12) and std < 1e-12
    assert metrics.inception_score(np.zeros((10, 5)), splits=1)[0] == pytest.approx(1.0, abs=1e-12)
    # Two classes with probabilities (p, 1-p) per image, half the images each way: KL is
    # log 2 + p log p + (1-p) log(1-p) for every image.
    p = 0.8
    half = np.log([[p, 1 - p]] * 5 + [[1 - p, p]] * 5)
    exact = np.exp(np.log(2) + p * np.log(p) + (1 - p) * np.log(1 - p))
    assert metrics.inception_score(half, splits=1)[0] == pytest.approx(exact, rel=1e-12)


def test_running_moments_equal_all_at_once():
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((97, 12)) * 3.0 + 50.0).astype(np.float32)  # offset: cancellation matters
    running = stats.RunningMoments()
    start = 0
    for size in (1, 7, 30, 2, 57):
        running.update(rows[start : start + size])
        start += size
    mu, sigma = running.mean_cov()
    assert running.n == 97
    np.testing.assert_allclose(mu, rows.astype(np.float64).mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(rows.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-11)


def test_rebatch_keeps_every_row_in_order():
    parts = [np.arange(n) + 100 * i for i, n in enumerate((3, 0, 8, 1, 5))]
    chunks = list(rebatch(parts, 4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(parts))


class _StandIn:
    """Feature extractor stand-in: the first 5 pixel values of each image as 'features'."""

    meta = {"sha256": "w", "source": "stand-in", "source_sha256": "s", "has_logits": False}
    resize = "tf1"

    def __init__(self):
        self.images_seen = 0

    def stream(self, batches):
        for b in rebatch(batches, 4):
            self.images_seen += len(b)
            yield {"pool3": b.reshape(len(b), -1)[:, :5].astype(np.float32)}


def test_stats_cache_reuses_only_matching_record(tmp_path):
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 256, (11, 4, 4, 3), dtype=np.uint8)
    path = str(tmp_path / "ref.npz")
    fx = _StandIn()
    record = stats.make_record(fx, "toy", "train")
    s1 = stats.cached_stats(path, fx, lambda: iter([imgs[:6], imgs[6:]]), record)
    feats = imgs.reshape(11, -1)[:, :5].astype(np.float64)
    assert s1.n == 11 and fx.images_seen == 11  # nothing dropped at the last (short) batch
    np.testing.assert_allclose(s1.mu, feats.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s1.sigma, np.cov(feats, rowvar=False), rtol=1e-10)
    rec = json.load(open(path + ".json"))
    assert rec["num_images"] == 11 and rec["dataset"] == "toy" and rec["split"] == "train"
    assert rec["weights_file_sha256"] == "w" and rec["weights_source_sha256"] == "s"
    assert "resize" in rec["preprocessing"]

    def fail():
        raise AssertionError("the cache should have been used")

    s2 = stats.cached_stats(path, fx, fail, record)
    np.testing.assert_array_equal(s2.sigma, s1.sigma)
    np.testing.assert_array_equal(s2.features, s1.features)
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match="made differently.*split"):
        stats.cached_stats(path, fx, fail, {**record, "split": "test"})
    assert open(path, "rb").read() == before  # never overwritten
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_image_sources_read_every_image_in_order(tmp_path):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    (tmp_path / "png" / "sub").mkdir(parents=True)
    for i, im in enumerate(imgs):  # sorted names, recursive: 00..03 top level, 04..06 in sub/
        Image.fromarray(im).save(tmp_path / "png" / ("sub" if i > 3 else "") / f"{i:02d}.png")
    (tmp_path / "shards").mkdir()
    np.savez(tmp_path / "shards" / "samples_0.npz", samples=imgs[:4])
    np.savez(tmp_path / "shards" / "samples_1.npz", samples=imgs[4:])
    np.save(tmp_path / "all.npy", imgs)
    for source in ("png", "shards", "all.npy"):
        got = np.concatenate(list(images.iter_batches(str(tmp_path / source), batch_size=3)))
        np.testing.assert_array_equal(got, imgs, err_msg=source)
    grey = imgs[..., 0]
    np.savez(tmp_path / "grey.npz", grey)
    np.testing.assert_array_equal(next(images.iter_batches(str(tmp_path / "grey.npz"), 10)), grey[..., None])
    with pytest.raises(ValueError, match="uint8"):
        np.save(tmp_path / "float.npy", imgs.astype(np.float32))
        next(images.iter_batches(str(tmp_path / "float.npy")))
    assert images.to_uint8(np.array([-0.1, 0.0, 0.5 / 255, 0.49, 1.2])).tolist() == [0, 0, 0, 125, 255]
    assert images.to_uint8(np.array([-1.0, 1.0]), centered=True).tolist() == [0, 255]
    # A diverged sampler's NaN would otherwise become an arbitrary pixel value and a silently wrong FID.
    with pytest.raises(ValueError, match="1 of 3 images hold NaN or inf values"):
        images.to_uint8(np.array([[0.5, 0.5], [0.5, np.nan], [0.2, 0.1]]))
