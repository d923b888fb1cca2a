"""Every config file builds, names known SDEs / networks / samplers, and carries the paper's values."""

import ml_collections
import pytest

from score_sde import sde as sde_lib
from score_sde.config import REPO_ROOT, ConfigError, load_config

CONFIGS = sorted(
    str(p.relative_to(REPO_ROOT))
    for p in (REPO_ROOT / "configs").rglob("*.py")
    if p.name != "common.py" and not p.name.startswith("default_")
)
# The official configs/ tree, file for file (39 experiments), plus the small CPU ones, the classifiers and EDM's.
OFFICIAL_COUNT = 39


def test_every_official_experiment_has_a_config():
    official = [c for c in CONFIGS if not c.startswith(("configs/small/", "configs/classifier/", "configs/edm/"))]
    assert len(official) == OFFICIAL_COUNT, official
    for defaults in ("default_cifar10_configs", "default_celeba_configs", "default_lsun_configs"):
        assert (REPO_ROOT / "configs" / f"{defaults}.py").is_file()


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path):
    config = load_config(path)
    assert isinstance(config, ml_collections.ConfigDict)
    sde = sde_lib.get_sde(config)  # a known SDE with valid parameters
    assert sde.N == config.model.num_scales
    classifier = path.startswith("configs/classifier/")  # time-dependent classifiers for guidance
    assert config.model.name in (
        ("wideresnet_noise_conditional",) if classifier else ("ncsnpp", "ddpm", "ncsn", "ncsnv2_64", "ncsnv2_128")
    )
    assert config.model.dtype == "float32"
    if config.model.formulation == "edm":  # EDM's sampler and grid, its preconditioning's requirements
        assert (config.sampling.method, config.sampling.schedule) == ("edm:heun", "karras")
        assert config.data.centered and not config.model.scale_by_sigma and config.training.continuous
    else:
        assert config.model.formulation == "paper" and config.sampling.method == "pc"
        assert config.sampling.predictor in ("reverse_diffusion", "euler_maruyama", "ancestral_sampling", "none")
        assert config.sampling.corrector in ("langevin", "ald", "none")
    assert config.model.num_classes in (0, 10)
    size = config.data.image_size
    assert config.training.batch_size > 0 and size > 0
    if config.model.name in ("ncsnpp", "ddpm"):
        # Every resolution halving must divide the image size exactly.
        assert size % 2 ** (len(config.model.ch_mult) - 1) == 0
    if not config.training.continuous:
        assert config.training.sde in ("vesde", "vpsde") and not config.training.likelihood_weighting


# (config, {key: official value}): spot checks against the official configs/ of yang-song/score_sde.
OFFICIAL = {
    "configs/ve/cifar10_ncsnpp_continuous.py": {
        "training.sde": "vesde",
        "training.continuous": True,
        "training.batch_size": 128,
        "training.n_iters": 1300001,
        "training.snapshot_freq": 50000,
        "training.snapshot_freq_for_preemption": 10000,
        "training.n_jitted_steps": 5,
        "training.reduce_mean": False,
        "model.sigma_max": 50,
        "model.sigma_min": 0.01,
        "model.num_scales": 1000,
        "sampling.snr": 0.16,
        "sampling.predictor": "reverse_diffusion",
        "sampling.corrector": "langevin",
        "model.ema_rate": 0.999,
        "model.nf": 128,
        "model.ch_mult": (1, 2, 2, 2),
        "model.num_res_blocks": 4,
        "model.attn_resolutions": (16,),
        "model.fir": True,
        "model.fir_kernel": [1, 3, 3, 1],
        "model.progressive_input": "residual",
        "model.embedding_type": "fourier",
        "model.fourier_scale": 16,
        "model.scale_by_sigma": True,
        "model.dropout": 0.1,
        "optim.lr": 2e-4,
        "optim.warmup": 5000,
        "optim.grad_clip": 1.0,
        "data.centered": False,
        "seed": 42,
    },
    "configs/ve/cifar10_ncsnpp_deep_continuous.py": {"model.num_res_blocks": 8, "training.n_iters": 950001},
    "configs/subvp/cifar10_ddpmpp_deep_continuous.py": {
        "training.sde": "subvpsde",
        "training.reduce_mean": True,
        "model.num_res_blocks": 8,
        "model.fir": False,
        "model.progressive_input": "none",
        "model.embedding_type": "positional",
        "model.ema_rate": 0.9999,
        "model.beta_min": 0.1,
        "model.beta_max": 20.0,
        "data.centered": True,
        "sampling.predictor": "euler_maruyama",
        "sampling.corrector": "none",
    },
    "configs/vp/cifar10_ddpmpp.py": {"training.continuous": False, "sampling.predictor": "ancestral_sampling"},
    "configs/vp/ddpm/cifar10.py": {"model.name": "ddpm", "model.num_res_blocks": 2, "model.scale_by_sigma": False},
    "configs/vp/ddpm/cifar10_unconditional.py": {"model.conditional": False},
    "configs/vp/ddpm/church.py": {
        "data.category": "church_outdoor",
        "optim.lr": 2e-5,
        "model.ch_mult": (1, 1, 2, 2, 4, 4),
    },
    "configs/ve/ncsn/cifar10.py": {
        "model.name": "ncsn",
        "model.sigma_max": 1,
        "model.num_scales": 10,
        "sampling.corrector": "ald",
        "sampling.n_steps_each": 100,
        "sampling.snr": 0.316,
        "optim.lr": 1e-3,
        "optim.grad_clip": -1.0,
        "optim.warmup": 0,
        "model.normalization": "InstanceNorm++",
        "model.ema_rate": 0.0,
    },
    "configs/ve/ncsn/celeba_1245.py": {"model.num_scales": 500, "sampling.snr": 0.128, "model.ema_rate": 0.999},
    "configs/ve/ncsnv2/cifar10.py": {
        "model.name": "ncsnv2_64",
        "model.num_scales": 232,
        "optim.lr": 1e-4,
        "sampling.snr": 0.176,
        "sampling.n_steps_each": 5,
    },
    "configs/ve/ncsnv2/bedroom.py": {
        "model.name": "ncsnv2_128",
        "model.sigma_max": 190,
        "model.num_scales": 1086,
        "data.image_size": 128,
        "training.batch_size": 128,
        "sampling.snr": 0.095,
        "training.continuous": False,
    },
    "configs/ve/celeba_ncsnpp.py": {
        "data.dataset": "CELEBA",
        "data.image_size": 64,
        "model.sigma_max": 90,
        "sampling.snr": 0.17,
        "training.continuous": False,
    },
    "configs/ve/bedroom_ncsnpp_continuous.py": {
        "data.dataset": "LSUN",
        "data.category": "bedroom",
        "data.image_size": 256,
        "model.sigma_max": 378,
        "model.num_scales": 2000,
        "training.batch_size": 64,
        "sampling.snr": 0.075,
        "model.progressive": "output_skip",
        "model.progressive_input": "input_skip",
        "model.ch_mult": (1, 1, 2, 2, 2, 2, 2),
        "model.dropout": 0.0,
    },
    "configs/ve/church_ncsnpp_continuous.py": {"data.category": "church_outdoor", "model.sigma_max": 380},
    "configs/ve/ffhq_256_ncsnpp_continuous.py": {"data.dataset": "FFHQ", "model.sigma_max": 348},
    "configs/ve/celebahq_ncsnpp_continuous.py": {
        "data.dataset": "CelebAHQ",
        "data.image_size": 1024,
        "model.sigma_max": 1348,
        "model.nf": 16,
        "model.ch_mult": (1, 2, 4, 8, 16, 32, 32, 32),
        "model.num_res_blocks": 1,
        "training.batch_size": 8,
        "sampling.snr": 0.15,
        "model.ema_rate": 0.9999,
        "training.reduce_mean": False,
    },
    "configs/ve/ffhq_ncsnpp_continuous.py": {"training.reduce_mean": True, "model.sigma_max": 1348},
}


@pytest.mark.parametrize("path", sorted(OFFICIAL))
def test_official_values(path):
    config = load_config(path)
    for key, expected in OFFICIAL[path].items():
        value = config
        for part in key.split("."):
            value = value[part]
        if isinstance(expected, (list, tuple)):
            value, expected = list(value), list(expected)
        assert value == expected, f"{path}: {key} = {value!r}, official {expected!r}"


def test_overrides_are_typed():
    config = load_config(
        "configs/ve/cifar10_ncsnpp_continuous.py",
        [
            "training.batch_size=64",
            "model.sigma_max=60",
            "data.centered=true",
            "model.ch_mult=1,2",
            "model.attn_resolutions=()",
            "sampling.predictor=euler_maruyama",
            "data.tfds_data_dir=/data/tfds",
            "optim.lr=1e-3",
            "model.dropout=None",
            "sampling.corrector=None",
        ],
    )
    assert config.training.batch_size == 64 and isinstance(config.training.batch_size, int)
    assert config.model.sigma_max == 60.0 and isinstance(config.model.sigma_max, float)
    assert config.data.centered is True
    assert tuple(config.model.ch_mult) == (1, 2) and tuple(config.model.attn_resolutions) == ()
    assert config.sampling.predictor == "euler_maruyama"
    assert config.data.tfds_data_dir == "/data/tfds"
    assert config.optim.lr == 1e-3
    assert config.model.dropout is None and config.sampling.corrector == "None"  # "None" unsets all but strings


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.batch_sise=3", r"unknown config key 'training.batch_sise'.*did you mean training.batch_size"),
        ("trainin.batch_size=3", r"unknown config key 'trainin.batch_size': 'trainin' is not a group"),
        ("training.batch_size=3.5", r"bad value '3.5' for config key 'training.batch_size' \(int expected\)"),
        ("data.centered=maybe", r"bad value 'maybe' for config key 'data.centered' \(bool expected\)"),
        ("model.ch_mult=1,x", r"bad value '1,x' for config key 'model.ch_mult'"),
        ("training=3", r"config key 'training' is a group"),
        ("training.batch_size", r"not of the form key=value"),
    ],
)
def test_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/ve/cifar10_ncsnpp_continuous.py", [override])


def test_missing_config_file():
    with pytest.raises(ConfigError, match=r"config file not found: configs/ve/nope.py"):
        load_config("configs/ve/nope.py")


def test_config_file_without_get_config(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=rf"{path} has no get_config\(\) function"):
        load_config(str(path))
    path.write_text("def get_config():\n  raise KeyError('oops')\n")
    with pytest.raises(ConfigError, match=r"failed to load: KeyError"):
        load_config(str(path))
