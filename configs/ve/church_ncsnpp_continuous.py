"""NCSN++ on LSUN church_outdoor 256x256 with the VE SDE."""

from configs.common import ncsnpp, sampler
from configs.default_lsun_configs import get_default_configs


def get_config():
    config = ncsnpp(
        get_default_configs(),
        ch_mult=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2,
        fir=True,
        progressive="output_skip",
        progressive_input="input_skip",
    )
    config.training.sde = "vesde"
    config.training.continuous = True
    sampler(config, predictor="reverse_diffusion", corrector="langevin")
    config.data.category = "church_outdoor"
    config.model.sigma_max = 380.0
    config.model.scale_by_sigma = True
    config.model.ema_rate = 0.999
    return config
