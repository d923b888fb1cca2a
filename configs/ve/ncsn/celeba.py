"""NCSN (Song & Ermon, 2019) on CelebA 64x64: 10 noise scales, sigma in [0.01, 1]."""

from configs.common import ncsn
from configs.default_celeba_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsn", lr=1e-3)
    config.sampling.n_steps_each = 100
    config.sampling.snr = 0.316
    config.model.scale_by_sigma = False
    config.model.num_scales = 10
    config.model.sigma_max = 1.0
    config.model.ema_rate = 0.0
    return config
