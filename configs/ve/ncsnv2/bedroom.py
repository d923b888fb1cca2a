"""NCSNv2 on LSUN bedroom 128x128: 1086 noise scales, sigma in [0.01, 190].

Discrete SMLD training (the official file meant ``continuous = False`` but misspelt the field)."""

from configs.common import ncsn
from configs.default_lsun_configs import get_default_configs


def get_config():
    config = ncsn(get_default_configs(), name="ncsnv2_128", lr=1e-4)
    config.training.batch_size = 128
    config.sampling.n_steps_each = 3
    config.sampling.snr = 0.095
    config.data.category = "bedroom"
    config.data.image_size = 128
    config.model.scale_by_sigma = True
    config.model.sigma_max = 190.0
    config.model.num_scales = 1086
    config.model.ema_rate = 0.9999
    return config
