"""The paper's noise-conditional classifier for class-conditional CIFAR-10 samples (Section 5, Appendix I.4):
WRN-28-10 on the VE SDE of configs/ve/cifar10_ncsnpp_continuous.py, for data in [0, 1].

`score-sde convert` takes it to convert the released classifier checkpoint; `score-sde train-classifier` trains
one. The official code releases the classifier but not its training script: the optimiser settings below are
ours (Adam as for the score models, shorter)."""

from configs.common import base_config
from score_sde.models.wideresnet import CIFAR10_MEAN, CIFAR10_STD


def get_config():
    config = base_config()
    training = config.training
    training.sde = "vesde"
    training.batch_size = 128
    training.n_iters = 200000
    training.snapshot_freq = 20000
    training.snapshot_sampling = False
    model = config.model
    model.name = "wideresnet_noise_conditional"
    model.blocks_per_group = 4
    model.channel_multiplier = 10
    model.num_classes = 10
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    # The official input: noisy images standardised by the CIFAR-10 channel statistics (models/utils.get_logit_fn).
    model.input_mean = CIFAR10_MEAN
    model.input_std = CIFAR10_STD
    config.data.centered = False
    config.optim.lr = 2e-4
    config.optim.warmup = 1000
    return config
