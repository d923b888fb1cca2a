"""NCSN++ on CelebA 64x64 with the discrete SMLD objective."""

from configs.common import ncsnpp, sampler
from configs.default_celeba_configs import get_default_configs


def get_config():
    config = ncsnpp(get_default_configs(), fir=True, progressive_input="residual")
    config.training.sde = "vesde"
    config.training.continuous = False
    sampler(config, predictor="reverse_diffusion", corrector="langevin")
    config.model.scale_by_sigma = True
    config.model.ema_rate = 0.999
    config.model.embedding_type = "positional"
    return config
