"""A small NCSN++ on MNIST (28x28) with the VE SDE and PC sampling (reverse diffusion + Langevin)."""

from configs.common import base_config, ncsnpp, sampler


def get_config():
    config = ncsnpp(base_config(), ch_mult=(1, 2, 2), num_res_blocks=1, fir=True, progressive_input="residual")
    training = config.training
    training.sde = "vesde"
    training.continuous = True
    training.batch_size = 64
    training.n_iters = 20000
    training.n_jitted_steps = 1  # XLA:CPU compiles several steps per call slowly (see train.make_train_fn)
    training.log_freq = 50
    training.eval_freq = 500
    training.snapshot_freq = 5000
    training.snapshot_freq_for_preemption = 500
    sampler(config, predictor="reverse_diffusion", corrector="langevin")
    config.eval.batch_size = 256
    config.eval.num_samples = 1000
    config.data.dataset = "MNIST"
    config.data.image_size = 28
    config.data.num_channels = 1
    config.data.random_flip = False
    model = config.model
    model.nf = 32
    model.sigma_max = 25.0  # about the largest distance between two MNIST images in [0, 1] (Technique 1 of NCSNv2)
    model.attn_resolutions = (7,)
    model.dropout = 0.0
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.fourier_scale = 16
    config.optim.lr = 1e-3
    config.optim.warmup = 500
    return config
