"""A small noise-conditional classifier for the digits model of configs/small/digits.py (VP SDE, 8x8 images
in [-1, 1]): guidance for its class-conditional samples; trains in about a CPU-minute."""

from configs.common import base_config


def get_config():
    config = base_config()
    training = config.training
    training.sde = "vpsde"
    training.batch_size = 64
    training.n_iters = 1000
    training.n_jitted_steps = 1
    training.log_freq = 50
    training.eval_freq = 250
    training.snapshot_freq = 1000
    training.snapshot_freq_for_preemption = 250
    training.snapshot_sampling = False
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.data.centered = True
    config.data.random_flip = False
    model = config.model
    model.name = "wideresnet_noise_conditional"
    model.blocks_per_group = 1
    model.channel_multiplier = 2
    model.num_classes = 10
    model.num_scales = 500  # as the digits score model (the classifier itself is continuous in t)
    model.ema_rate = 0.99
    model.input_mean = (0.5,)
    model.input_std = (0.5,)
    config.optim.lr = 2e-3
    config.optim.warmup = 100
    return config
