"""The sampler comparison on an analytic score (a Gaussian mixture under the VP SDE) with a pixel
"feature extractor" stand-in: measured NFEs, metrics from the saved shards, the outputs, and a run
killed in the middle that resumes to the same table as an uninterrupted one."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from score_sde import analytic
from score_sde.conditional import classifier_free_guided
from score_sde.evaluation import compare as cmp
from score_sde.evaluation import images, metrics, stats
from score_sde.evaluation.features import rebatch
from score_sde.sde import VPSDE

from support import data_config

SHAPE = (4, 4, 1)  # 16-dimensional "images"
NUM, BATCH = 40, 16  # 3 shards per setting: 16, 16 and 8 samples


class PixelFeatures:
    """Stand-in for InceptionFeatures: the pixels in [0, 1] as 16-d features."""

    def stream(self, batches):
        for b in rebatch(batches, 32):
            yield {"pool3": b.reshape(len(b), -1).astype(np.float32) / 255.0}


def to_unit(x):
    return (x + 1.0) / 2.0  # centred data


def _mixture():
    """Two components of flattened 4x4 images, around pixels -0.4 and 0.4 (centred data)."""
    d = int(np.prod(SHAPE))
    rng = np.random.default_rng(0)
    means = np.stack([np.full(d, -0.4), np.full(d, 0.4)]) + 0.1 * rng.standard_normal((2, d))
    return analytic.GaussianMixture.create([0.5, 0.5], means, np.stack([0.02 * np.eye(d)] * 2))


@pytest.fixture(scope="module")
def problem():
    mixture = _mixture()
    sde = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    x0, _ = mixture.sample(jax.random.key(1), 2000)
    data = images.to_uint8(to_unit(np.asarray(x0)).reshape(-1, *SHAPE))
    reference = stats.compute_stats(PixelFeatures(), [data])
    score = analytic.score_fn(mixture, sde)
    # The samplers hand the score (B, 4, 4, 1) images; the mixture is over flattened vectors.
    score_fn = jax.tree_util.Partial(lambda s, x, t: s(x.reshape(len(x), -1), t).reshape(x.shape), score)
    settings = cmp.grid(["pc:euler_maruyama:none", "ode:euler", "ode:rk45"], steps=[3, 10], tolerances=[1e-3])
    return score_fn, sde, settings, reference


def _run(problem, out, num_samples=NUM, **kw):
    score_fn, sde, settings, reference = problem
    return cmp.compare(
        score_fn,
        sde,
        settings,
        str(out),
        image_shape=SHAPE,
        num_samples=num_samples,
        batch_size=BATCH,
        extractor=PixelFeatures(),
        reference=reference,
        to_unit=to_unit,
        seed=3,
        manifest={"checkpoint": "analytic"},
        kid_subsets=5,
        **kw,
    )


def _table(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "sampling_seconds"} for row in csv.DictReader(f)]


def test_grid_names_and_bad_sampler():
    settings = cmp.grid(["pc:reverse_diffusion:langevin", "ode:rk45"], [5, 20], [1e-3, 1e-5])
    assert [s.name for s in settings] == [
        "pc-reverse_diffusion-langevin_steps5",
        "pc-reverse_diffusion-langevin_steps20",
        "ode-rk45_tol0.001",
        "ode-rk45_tol1e-05",
    ]
    with pytest.raises(ValueError, match="predictor"):
        cmp.grid(["pc:nope:langevin"], [5])
    with pytest.raises(ValueError, match="expected 'pc:<predictor>:<corrector>' or 'ode:<method>'"):
        cmp.grid(["euler"], [5])


def test_compare_outputs_and_resume_after_kill(problem, tmp_path):
    score_fn, sde, settings, reference = problem
    rows = _run(problem, tmp_path / "full")
    assert len(rows) == len(settings) == 5
    by_name = {s.name: r for s, r in zip(settings, rows)}
    # NFE as the samplers count it: one score evaluation per PC step (no corrector; noise removal
    # reuses the last step's mean) and per Euler step, plus one for the ODE's final denoising step.
    assert by_name["pc-euler_maruyama-none_steps3"]["nfe"] == 3
    assert by_name["pc-euler_maruyama-none_steps10"]["nfe"] == 10
    assert by_name["ode-euler_steps3"]["nfe"] == 4 and by_name["ode-euler_steps10"]["nfe"] == 11
    assert by_name["ode-rk45_tol0.001"]["nfe"] > 11
    # Metrics are those of every saved sample (3 shards, 40 images) against the reference.
    for s, row in zip(settings, rows):
        shards = sorted((tmp_path / "full" / "samples" / s.name).glob("shard_*.npz"))
        x = np.concatenate([np.load(p)["samples"] for p in shards])
        assert x.shape == (NUM, *SHAPE) and x.dtype == np.uint8 and row["num_samples"] == NUM
        assert len(np.unique(x.reshape(NUM, -1), axis=0)) == NUM  # each shard from its own noise
        f = x.reshape(NUM, -1).astype(np.float32) / 255.0
        assert row["fid"] == pytest.approx(
            metrics.frechet_distance(*metrics.mean_cov(f), reference.mu, reference.sigma), rel=1e-9
        )
        assert row["kid"] == pytest.approx(metrics.kernel_distance(f, reference.features, 5, 1000, seed=3), rel=1e-9)
        grid = np.asarray(Image.open(tmp_path / "full" / "grids" / f"{s.name}.png"))
        assert grid.shape == (2 + 6 * 6, 2 + 7 * 6)  # 40 images of 4x4, 7 per row, 2-px gaps
    # A 3-step Euler solve of the probability-flow ODE is far off; the adaptive solve is not.
    assert by_name["ode-euler_steps3"]["fid"] > 3 * by_name["ode-rk45_tol0.001"]["fid"]
    assert Image.open(tmp_path / "full" / "fid_vs_nfe.png").size[0] > 100

    # Killed after 7 of the 15 shards (in the middle of the third setting), with a half-written
    # shard left behind; the restart makes only the 8 missing shards and writes the same table.
    class Killed(Exception):
        pass

    made = []

    def kill_after_7(setting, i, n):
        made.append((setting.name, i))
        if len(made) == 7:
            raise Killed

    with pytest.raises(Killed):
        _run(problem, tmp_path / "resumed", progress=kill_after_7)
    assert not (tmp_path / "resumed" / "results.csv").exists()
    third = tmp_path / "resumed" / "samples" / settings[2].name
    (third / "shard_00001.npz.tmp-12345").write_bytes(b"half a shard")
    made.clear()
    _run(problem, tmp_path / "resumed", progress=lambda s, i, n: made.append((s.name, i)))
    assert made == [(settings[2].name, 1), (settings[2].name, 2)] + [
        (s.name, i) for s in settings[3:] for i in range(3)
    ]
    assert _table(tmp_path / "resumed" / "results.csv") == _table(tmp_path / "full" / "results.csv")

    with pytest.raises(ValueError, match="different comparison"):
        _run(problem, tmp_path / "full", num_samples=NUM + 1)
    assert not [p for p in os.listdir(tmp_path / "full") if ".tmp" in p]


def test_every_sampler_has_its_own_line_style():
    """Colour and marker tell apart every registered sampler and PC pair; the grid changes the line style, the
    guidance weight the marker's fill; the style of a sampler is the same whatever else is plotted."""
    from score_sde import sampling

    names = sorted(sampling.SAMPLERS) + [f"pc:{p}:{c}" for p in sampling.PREDICTORS for c in sampling.CORRECTORS]
    looks = {(s["color"], s["marker"]) for s in map(cmp.line_style, names)}
    assert len(looks) == len(names)
    a, b = cmp.line_style("edm:heun@karras", "karras"), cmp.line_style("edm:heun", "uniform", 1)
    assert (a["color"], a["marker"]) == (b["color"], b["marker"]) and a["linestyle"] != b["linestyle"]
    assert a["fillstyle"] != b["fillstyle"] and cmp.line_style("ddim") == cmp.line_style("DDIM")


def test_compare_per_guidance_weight(problem, tmp_path):
    """With guidance weights, every sampler setting is run at each, from the same noise: the guided score of a
    labelled mixture (the problem's two components are classes 0 and 1) for labels 0 draws class-0 samples at
    w = 0 and w = 3, different ones; the table and the plot have one line per weight."""
    score_fn, sde, _, reference = problem
    exact = analytic.class_score_fn(_mixture(), [0, 1], sde)
    conditional = jax.tree_util.Partial(lambda s, x, t, y: s(x.reshape(len(x), -1), t, y).reshape(x.shape), exact)

    def guide(weight, shard):
        labels = np.zeros(BATCH, np.int32)
        return classifier_free_guided(conditional, sde, labels, num_classes=2, weight=weight)

    settings = cmp.grid(["ode:euler"], steps=[10], guidance_weights=[0.0, 3.0])
    assert [s.name for s in settings] == ["ode-euler_w0_steps10", "ode-euler_w3_steps10"]
    rows = cmp.compare(
        score_fn, sde, settings, str(tmp_path), image_shape=SHAPE, num_samples=NUM, batch_size=BATCH,
        extractor=PixelFeatures(), reference=reference, to_unit=to_unit, seed=3, kid_subsets=5, guide=guide,
    )  # fmt: skip
    assert [r["guidance_weight"] for r in rows] == [0.0, 3.0]
    assert [r["guidance_weight"] for r in _table(tmp_path / "results.csv")] == ["0.0", "3.0"]
    first = [np.load(tmp_path / "samples" / s.name / "shard_00000.npz")["samples"] for s in settings]
    for samples in first:  # class 0: pixels near (1 - 0.4) / 2 = 0.3, not 0.7
        assert np.all(samples.reshape(BATCH, -1).mean(1) < 0.5 * 255)
    assert not np.array_equal(first[0], first[1])
    with pytest.raises(ValueError, match=r"need guide\(weight, shard\)"):
        cmp.compare(
            score_fn, sde, settings, str(tmp_path / "x"), image_shape=SHAPE, num_samples=NUM, batch_size=BATCH,
            extractor=PixelFeatures(), reference=reference,
        )  # fmt: skip


def test_run_compare_from_checkpoint(tmp_path):
    """The command path: a (tiny, untrained) DDPM checkpoint, reference statistics of its dataset's
    training split computed and cached, one setting; a second call finds everything done."""

    from score_sde import checkpoints, models
    from score_sde.evaluation import commands

    data = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x_train=data)
    config = data_config("npz", 8, 1, path=str(tmp_path / "data.npz"), centered=True)
    config.update(
        {
            "model": {
                "name": "ddpm",
                "normalization": "GroupNorm",
                "nonlinearity": "swish",
                "nf": 32,
                "ch_mult": (1,),
                "num_res_blocks": 1,
                "attn_resolutions": (),
                "dropout": 0.0,
                "resamp_with_conv": True,
                "conditional": True,
                "scale_by_sigma": False,
                "beta_min": 0.1,
                "beta_max": 20.0,
                "num_scales": 1000,
                "sigma_min": 0.01,
                "sigma_max": 50.0,
                "ema_rate": 0.999,
            },
            "training": {"sde": "vpsde", "continuous": True},
            "sampling": {"snr": 0.16, "n_steps_each": 1, "noise_removal": True},
        }
    )
    model = models.get_model(config)
    x, labels = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,))
    params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, labels)["params"]
    checkpoints.save_model(str(tmp_path / "ckpt"), params=params, params_ema=params, config=config)

    class Features(PixelFeatures):
        meta = {"sha256": "pixels", "source": "pixels", "source_sha256": "pixels", "has_logits": False}
        resize = "tf1"

    out = str(tmp_path / "cmp")
    kw = dict(
        samplers=["pc:euler_maruyama:none"],
        steps=[2],
        num_samples=8,
        batch_size=8,
        extractor=Features(),
        overrides=["sampling.noise_removal=False"],
    )
    rows = commands.run_compare(str(tmp_path / "ckpt"), out, **kw)
    assert len(rows) == 1 and rows[0]["nfe"] == 2 and rows[0]["num_samples"] == 8
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["sampler_options"] == {"snr": 0.16, "n_steps_each": 1, "noise_removal": False}  # the override
    ref, record = stats.load_stats(os.path.join(out, "reference_train.npz"))
    assert ref.n == 20 and record["split"] == "train" and record["image_size"] == 8
    np.testing.assert_allclose(ref.mu, data.reshape(20, -1).mean(0) / 255.0, rtol=1e-6)
    shard = os.path.join(out, "samples", "pc-euler_maruyama-none_steps2", "shard_00000.npz")
    mtime = os.path.getmtime(shard)
    assert commands.run_compare(str(tmp_path / "ckpt"), out, **kw) == rows
    assert os.path.getmtime(shard) == mtime
