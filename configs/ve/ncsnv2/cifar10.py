"""NCSNv2 (Song & Ermon, 2020) on CIFAR-10: 232 noise scales, sigma in [0.01, 50]."""

from configs.common import ncsn
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsnv2_64", lr=1e-4)
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.176
    config.model.scale_by_sigma = True
    config.model.num_scales = 232
    config.model.ema_rate = 0.999
    return config
