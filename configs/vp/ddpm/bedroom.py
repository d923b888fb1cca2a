"""DDPM on LSUN bedroom 256x256."""

from configs.common import ddpm, sampler
from configs.default_lsun_configs import get_default_configs


def get_config():
    config = ddpm(get_default_configs(), ch_mult=(1, 1, 2, 2, 4, 4))
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True
    sampler(config, predictor="ancestral_sampling", corrector="none")
    config.data.dataset = "LSUN"
    config.data.category = "bedroom"
    config.data.centered = True
    config.model.scale_by_sigma = False
    config.model.num_scales = 1000
    config.model.ema_rate = 0.9999
    config.optim.lr = 2e-5
    return config
