"""NCSNv2 on CelebA 64x64: 500 noise scales, sigma in [0.01, 90]."""

from configs.common import ncsn
from configs.default_celeba_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsnv2_64", lr=1e-4)
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.128
    config.model.scale_by_sigma = True
    config.model.num_scales = 500
    config.model.ema_rate = 0.999
    return config
