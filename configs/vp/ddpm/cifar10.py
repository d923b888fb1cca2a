"""DDPM (Ho et al., 2020) on CIFAR-10: discrete objective, 1000 steps, ancestral sampling."""

from configs.common import ddpm, sampler
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ddpm(get_default_configs())
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    sampler(config, predictor="ancestral_sampling", corrector="none")
    config.data.centered = True
    config.model.scale_by_sigma = False
    config.model.ema_rate = 0.9999
    return config
