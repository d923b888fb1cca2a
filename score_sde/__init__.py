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

import os
import warnings

__version__ = "0.1.0"

# XLA:CPU hands convolutions to YNNPACK by default, whose kernel gradients (a convolution whose window is the
# whole image) run 3-4x slower than XLA's own Eigen convolutions on x86: they were 45 % of a DDPM++ training
# step (benchmarks/results/speed_cpu.md). Convolutions go to Eigen unless XLA_FLAGS already choose; XLA reads
# the flag when JAX starts its backends, so this must run before anything touches a device.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG[2:] not in os.environ.get("XLA_FLAGS", ""):
    from jax._src import xla_bridge as _xla_bridge

    if _xla_bridge.backends_are_initialized():
        warnings.warn(
            f"JAX started its backends before score_sde was imported: convolutions on the CPU keep XLA's default "
            f"YNNPACK path, whose gradients are ~3x slower; import score_sde first or set "
            f"XLA_FLAGS={_YNN_FLAG}=-individual_convolution",
            stacklevel=2,
        )
    else:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}=-individual_convolution".strip()
