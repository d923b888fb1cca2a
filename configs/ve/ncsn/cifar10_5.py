"""NCSN on CIFAR-10 with NCSNv2's technique 5 only (EMA of the parameters)."""

from configs.common import ncsn
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsn", lr=1e-3)
    config.sampling.n_steps_each = 100
    config.sampling.snr = 0.316
    config.model.scale_by_sigma = False
    config.model.num_scales = 10
    config.model.sigma_max = 1.0
    config.model.ema_rate = 0.999
    return config
