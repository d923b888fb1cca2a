"""The README's default: a small DDPM++ on scikit-learn's 8x8 digits with the VP SDE, a few CPU minutes.

Real data that ships inside a package, so it runs on a fresh machine without downloads."""

from configs.common import base_config, ncsnpp, sampler


def get_config():
    config = ncsnpp(base_config(), ch_mult=(1, 2), num_res_blocks=1, fir=False, progressive_input="none")
    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 64
    training.n_iters = 1500
    training.n_jitted_steps = 1  # XLA:CPU compiles several steps per call slowly (see train.make_train_fn)
    training.log_freq = 50
    training.eval_freq = 250
    training.snapshot_freq = 1500
    training.snapshot_freq_for_preemption = 250
    training.snapshot_sampling = False  # the quickstart samples after training
    sampler(config, predictor="euler_maruyama", corrector="none")
    config.sampling.snr = 0.16
    config.eval.batch_size = 64
    config.eval.num_samples = 64
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.data.centered = True
    config.data.random_flip = False
    model = config.model
    model.nf = 16
    model.num_scales = 500  # sampling steps of the PC sampler; 8x8 images need no more
    model.attn_resolutions = ()
    model.dropout = 0.0
    model.scale_by_sigma = False
    model.ema_rate = 0.99  # averages the last ~100 of 1500 steps; 0.999 would lag behind so short a run
    model.embedding_type = "positional"
    config.optim.lr = 2e-3
    config.optim.warmup = 100
    return config
