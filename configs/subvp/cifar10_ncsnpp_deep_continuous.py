"""NCSN++ (deep) on CIFAR-10 with the sub-VP SDE."""

from configs.common import ncsnpp, sampler
from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = ncsnpp(get_default_configs(), num_res_blocks=8, fir=True, progressive_input="residual")
    config.training.sde = "subvpsde"
    config.training.continuous = True
    config.training.reduce_mean = True
    config.training.n_iters = 950001
    sampler(config, predictor="euler_maruyama", corrector="none")
    config.data.centered = True
    config.model.scale_by_sigma = False
    config.model.ema_rate = 0.9999
    config.model.embedding_type = "positional"
    return config
