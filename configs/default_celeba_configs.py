"""CelebA defaults (64x64 RGB)."""

from configs.common import base_config


def get_default_configs():
    config = base_config()
    config.sampling.snr = 0.17
    config.eval.begin_ckpt = 1
    config.eval.end_ckpt = 26
    config.eval.enable_sampling = True
    config.data.dataset = "CELEBA"
    config.data.image_size = 64
    config.model.sigma_max = 90.0
    return config
