"""The DDPM network on CIFAR-10 with the sub-VP SDE."""

from configs.common import ddpm, sampler
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ddpm(get_default_configs())
    config.training.sde = "subvpsde"
    config.training.continuous = True
    config.training.reduce_mean = True
    sampler(config, predictor="euler_maruyama", corrector="none")
    config.data.centered = True
    config.model.scale_by_sigma = False
    config.model.ema_rate = 0.9999
    return config
