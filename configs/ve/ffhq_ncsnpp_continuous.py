"""NCSN++ on FFHQ 1024x1024 with the VE SDE (the paper's high-resolution samples)."""

from configs.common import ncsnpp, sampler
from configs.default_lsun_configs import get_default_configs


def get_config():
    config = ncsnpp(
        get_default_configs(),
        ch_mult=(1, 2, 4, 8, 16, 32, 32, 32),
        num_res_blocks=1,
        fir=True,
        progressive="output_skip",
        progressive_input="input_skip",
    )
    training = config.training
    training.batch_size = 8
    training.sde = "vesde"
    training.continuous = True
    training.reduce_mean = True
    sampler(config, predictor="reverse_diffusion", corrector="langevin")
    config.sampling.snr = 0.15
    config.eval.begin_ckpt = 1
    config.eval.end_ckpt = 96
    config.eval.batch_size = 1024
    config.data.dataset = "FFHQ"
    config.data.tfrecords_path = ""  # the dataset's TFRecord file, as the official code reads it
    config.data.image_size = 1024
    model = config.model
    model.nf = 16
    model.sigma_max = 1348.0
    model.num_scales = 2000
    model.scale_by_sigma = True
    model.ema_rate = 0.9999
    model.dropout = 0.0
    return config
