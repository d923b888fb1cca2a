"""The sampler comparison by NFE budget: any registered sampler by name, with a schedule, each budget turned into
steps per sampler, the NFE made recorded, every setting from the same prior noise; and bad input named."""

import csv

import jax
import numpy as np
import pytest
from test_eval_compare import PixelFeatures, to_unit

from score_sde import analytic
from score_sde.cli import build_parser
from score_sde.evaluation import compare as cmp
from score_sde.evaluation import images, stats
from score_sde.sde import VPSDE

SHAPE, NUM = (4, 4, 1), 16


@pytest.fixture(scope="module")
def problem():
    d = int(np.prod(SHAPE))
    means = np.stack([np.full(d, -0.4), np.full(d, 0.4)])
    mixture = analytic.GaussianMixture.create([0.5, 0.5], means, np.stack([0.02 * np.eye(d)] * 2))
    sde = VPSDE()
    data = images.to_uint8(to_unit(np.asarray(mixture.sample(jax.random.key(1), 500)[0])).reshape(-1, *SHAPE))
    score = analytic.score_fn(mixture, sde)
    score_fn = jax.tree_util.Partial(lambda s, x, t: s(x.reshape(len(x), -1), t).reshape(x.shape), score)
    return score_fn, sde, stats.compute_stats(PixelFeatures(), [data])


def test_budgets_become_steps_and_every_setting_starts_from_the_same_noise(problem, tmp_path):
    score_fn, sde, reference = problem
    samplers = ["ddim", "edm:euler", "edm:heun@karras", "ipndm", "pc:euler_maruyama:none"]
    settings = cmp.grid(samplers, nfe=[4, 7], schedule="logsnr", tolerances=[1e-2])
    settings += cmp.grid(["pc:euler_maruyama:none"], nfe=[4, 7])  # PC takes the uniform grid only
    assert [s.name for s in settings[:6]] == [
        "ddim-logsnr_nfe4",
        "ddim-logsnr_nfe7",
        "edm-euler-logsnr_nfe4",
        "edm-euler-logsnr_nfe7",
        "edm-heun-karras_nfe4",
        "edm-heun-karras_nfe7",
    ]
    with pytest.raises(ValueError, match="PC sampler runs on the uniform grid from T only"):
        cmp.sampling_fn(settings[8], sde, (4, *SHAPE))[0](jax.random.key(0), score_fn)
    settings = settings[:8] + settings[10:]
    rows = cmp.compare(
        score_fn,
        sde,
        settings,
        str(tmp_path),
        image_shape=SHAPE,
        num_samples=NUM,
        batch_size=NUM,
        extractor=PixelFeatures(),
        reference=reference,
        to_unit=to_unit,
        seed=3,
        kid_subsets=2,
        kid_subset_size=8,
        sampler_options=dict(noise_removal=False),  # EDM's samplers end at sigma(eps), as DDIM
    )
    made = {(r["sampler"], r["budget"]): (r["steps"], r["nfe"], r["schedule"]) for r in rows}
    assert made == {
        ("ddim", 4): (4, 4, "logsnr"),
        ("ddim", 7): (7, 7, "logsnr"),
        ("edm:euler", 4): (4, 4, "logsnr"),
        ("edm:euler", 7): (7, 7, "logsnr"),
        ("edm:heun@karras", 4): (2, 4, "karras"),  # 2 Heun steps: 2 evaluations each
        ("edm:heun@karras", 7): (3, 6, "karras"),
        ("ipndm", 4): (4, 4, "logsnr"),
        ("ipndm", 7): (7, 7, "logsnr"),
        ("pc:euler_maruyama:none", 4): (4, 4, "uniform"),  # 4 time points (3 intervals), one predictor each
        ("pc:euler_maruyama:none", 7): (7, 7, "uniform"),
    }
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["budget"] for r in table] == ["4", "7"] * 5 and table[4]["schedule"] == "karras"
    # DDIM and EDM's Euler are the same update (test_core_fast_samplers), so from the same prior noise and
    # grid they give the same images, up to a pixel rounded the other way.
    for budget in (4, 7):
        a, b = (
            np.load(tmp_path / "samples" / f"{n}_nfe{budget}" / "shard_00000.npz")["samples"]
            for n in ("ddim-logsnr", "edm-euler-logsnr")
        )
        assert np.abs(a.astype(int) - b).max() <= 1 and (a == b).mean() > 0.95
    assert (tmp_path / "fid_vs_nfe.png").stat().st_size > 1000


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"sampler 'edm:heun' needs an NFE budget of at least 2, got 0"):
        cmp.grid(["edm:heun"], nfe=[0])
    with pytest.raises(ValueError, match=r"registered sampler \(optionally @<schedule>\): \[.*'ddim'"):
        cmp.grid(["ddpm"], nfe=[5])
    with pytest.raises(ValueError, match=r"unknown time grid 'cosine' \(the schedule of 'ddim@cosine'\); known: "):
        cmp.grid(["ddim@cosine"], nfe=[5])
    with pytest.raises(ValueError, match=r"unknown time grid 'sigmoid' \(the schedule\); known: "):
        cmp.grid(["ddim"], nfe=[5], schedule="sigmoid")
    with pytest.raises(ValueError, match="needs NFE budgets"):
        cmp.grid(["ddim"])
    with pytest.raises(ValueError, match="repeats a setting"):
        cmp.grid(["ddim", "ddim"], nfe=[5])
    adaptive = cmp.grid(["adaptive_sde", "ode:rk45"], nfe=[5], tolerances=[0.05, 0.1])
    assert [s.name for s in adaptive] == [
        "adaptive_sde_tol0.05",
        "adaptive_sde_tol0.1",
        "ode-rk45_tol0.05",
        "ode-rk45_tol0.1",
    ]


def test_command_line_takes_budgets_and_a_schedule():
    args = build_parser().parse_args(
        [
            "compare",
            "--model",
            "m",
            "--out",
            "o",
            "--samplers",
            "ddim",
            "edm:heun",
            "--nfe",
            "5",
            "10",
            "--schedule",
            "karras",
        ]
    )
    assert (args.samplers, args.nfe, args.steps, args.schedule) == (["ddim", "edm:heun"], [5, 10], [], "karras")
