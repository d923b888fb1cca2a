"""NCSN on CIFAR-10 with NCSNv2's techniques 1, 2 and 4 (noise scales, sampling steps and step size)."""

from configs.common import ncsn
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsn", lr=1e-3)
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.176
    config.model.scale_by_sigma = False
    config.model.num_scales = 232
    config.model.sigma_max = 50.0
    config.model.ema_rate = 0.0
    return config
