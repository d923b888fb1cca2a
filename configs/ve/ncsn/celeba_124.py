"""NCSN on CelebA with NCSNv2's techniques 1, 2 and 4."""

from configs.common import ncsn
from configs.default_celeba_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsn", lr=1e-3)
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.128
    config.model.scale_by_sigma = False
    config.model.num_scales = 500
    config.model.sigma_max = 90.0
    config.model.ema_rate = 0.0
    return config
