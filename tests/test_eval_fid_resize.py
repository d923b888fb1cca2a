"""The FID resize conventions against the library calls of the codebases that define them: pytorch-fid's
torch.nn.functional.interpolate and clean-fid's PIL bicubic resize; statistics of different conventions are
refused. (pytorch-fid and clean-fid themselves pull in torchvision, which this project does not install:
their resize is the one library call compared here.)"""

import types

import numpy as np
import pytest
from PIL import Image

from score_sde import cli
from score_sde.evaluation import commands, stats
from score_sde.evaluation.inception import RESIZES, preprocess

RNG = np.random.default_rng(0)
# Square and non-square, colour and grey, smaller and larger than 299 (clean-fid's PIL resize antialiases there).
IMAGES = [RNG.integers(0, 256, s, dtype=np.uint8) for s in [(2, 32, 32, 3), (1, 20, 36, 1), (1, 320, 310, 3)]]


def test_pytorch_fid_resize_is_torch_bilinear():
    torch = pytest.importorskip("torch")
    for imgs in IMAGES:
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).double().expand(-1, 3, -1, -1) / 255.0
        # pytorch-fid: images in [0, 1], bilinear to 299 without corner alignment, then 2x - 1.
        ref = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
        got = np.asarray(preprocess(imgs, resize="pytorch-fid"))
        # float32 products of weights and pixels <= 255, / 127.5: ~255 * 6e-8 / 127.5 per term; allow 1e-5.
        np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5, rtol=0)


def test_clean_fid_resize_is_pil_bicubic_per_channel():
    def pil(channel):
        return np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))

    for imgs in IMAGES:
        colour = np.repeat(imgs, 3, axis=-1) if imgs.shape[-1] == 1 else imgs
        ref = np.stack([np.stack([pil(im[..., c]) for c in range(3)], axis=-1) for im in colour])
        ref = np.clip(ref, 0, 255) / 128.0 - 1  # clean-fid clips, its Inception scales by x / 128 - 1
        got = np.asarray(preprocess(imgs, resize="clean-fid"))
        # PIL sums in float64 and stores float32; ours multiplies float32 matrices: ~1e-7 relative of 255 / 128.
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    # The conventions really differ (else the tests above could not tell them apart): by ~1 % of the range.
    a, b, c = (np.asarray(preprocess(IMAGES[0], resize=r)) for r in ("tf1", "pytorch-fid", "clean-fid"))
    assert min(np.abs(a - b).max(), np.abs(a - c).max(), np.abs(b - c).max()) > 1e-2


def test_statistics_of_another_resize_are_refused(tmp_path):
    def record(resize):
        fake = types.SimpleNamespace(meta={"source": "w.pt", "source_sha256": "ab"}, resize=resize)
        return stats.make_record(fake, "npz", "train")

    assert sorted(RESIZES) == ["clean-fid", "pytorch-fid", "tf1"]
    with pytest.raises(ValueError, match="made differently .*preprocessing.*clean-fid"):
        commands._check_comparable(record("tf1"), record("clean-fid"), "a.npz", "b.npz")
    commands._check_comparable(record("pytorch-fid"), record("pytorch-fid"), "a.npz", "b.npz")
    # A cached statistics file is never reused, nor overwritten, for another convention.
    path = str(tmp_path / "ref.npz")
    fs = stats.FeatureStats(np.zeros(2), np.eye(2), 3, np.zeros((3, 2), np.float32))
    stats.save_stats(path, fs, record("tf1"))
    with pytest.raises(ValueError, match="made differently"):
        stats.cached_stats(path, None, lambda: [], record("pytorch-fid"))
    assert stats.cached_stats(path, None, lambda: [], record("tf1")).n == 3
    # The option of fid-stats, fid and compare.
    for argv in (
        ["fid-stats", "o.npz"],
        ["fid", "a", "b"],
        ["compare", "--model", "m", "--out", "o", "--samplers", "x", "--steps", "1"],
    ):
        args = cli.build_parser().parse_args([*argv, "--fid-resize", "clean-fid"])
        assert cli._inception_options(args)["resize"] == "clean-fid"
        assert cli._inception_options(cli.build_parser().parse_args(argv))["resize"] == "tf1"
    with pytest.raises(ValueError, match="unknown FID resize convention 'pil'"):
        preprocess(IMAGES[0], resize="pil")
