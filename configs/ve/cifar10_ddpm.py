"""The DDPM network on CIFAR-10 trained with the discrete SMLD objective."""

from configs.common import ddpm, sampler
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ddpm(get_default_configs())
    config.training.sde = "vesde"
    config.training.continuous = False
    sampler(config, predictor="reverse_diffusion", corrector="langevin")
    config.model.scale_by_sigma = True
    config.model.ema_rate = 0.999
    return config
