"""A small DDPM++ on MNIST (28x28) with the sub-VP SDE: minutes per thousand steps on a laptop CPU."""

from configs.common import base_config, ncsnpp, sampler


def get_config():
    config = ncsnpp(base_config(), ch_mult=(1, 2, 2), num_res_blocks=1, fir=False, progressive_input="none")
    training = config.training
    training.sde = "subvpsde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 64
    training.n_iters = 20000
    training.n_jitted_steps = 1  # XLA:CPU compiles several steps per call slowly (see train.make_train_fn)
    training.log_freq = 50
    training.eval_freq = 500
    training.snapshot_freq = 5000
    training.snapshot_freq_for_preemption = 500
    sampler(config, predictor="euler_maruyama", corrector="none")
    config.eval.batch_size = 256
    config.eval.num_samples = 1000
    config.data.dataset = "MNIST"
    config.data.image_size = 28
    config.data.num_channels = 1
    config.data.centered = True
    config.data.random_flip = False
    model = config.model
    model.nf = 32
    model.attn_resolutions = (7,)
    model.dropout = 0.0
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.embedding_type = "positional"
    config.optim.lr = 1e-3
    config.optim.warmup = 500
    return config
