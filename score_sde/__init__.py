"""Score-based generative modeling through stochastic differential equations (Song et al., 2021), in JAX.

The pipeline, module by module:
  sde.py          forward SDEs (VE, VP, sub-VP, ...), their reverse SDE and probability-flow ODE
  models/         the networks of the paper (Flax linen)
  score.py        network output -> score_fn(x, t)
  losses.py       denoising score matching losses
  train.py        data-parallel training over every device
  evaluate.py     a trained model's test loss, samples in resumable shards, bits/dim
  sampling/       predictor-corrector and ODE samplers, all taking one score_fn(x, t)
  likelihood.py   bits/dim through the probability-flow ODE
  evaluation/     Inception features, FID / KID / IS
"""

__version__ = "0.1.0"
