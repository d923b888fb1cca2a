"""Score-based generative modeling through stochastic differential equations (Song et al., 2021), in JAX.

The package, layer by layer (each imports only those above it; README's Layout section lists every module):
  config.py       config files and their key=value overrides
  sde.py, score.py, losses.py, sampling/, likelihood.py, models/, data/, checkpoints.py, parallel.py, host_memory.py,
  evaluation/     the pieces: SDEs, score functions, losses, samplers, networks, data, FID
  wiring.py       a config (or a trained model) wired into its network, SDE, score function, loss and sampler
  train.py, evaluate.py, quickstart.py, convert.py, evaluation/commands.py
                  the jobs
  cli.py          the score-sde command line
"""

import os
import warnings
from importlib.metadata import version

__version__ = "0.1.0"

# XLA:CPU hands convolutions to YNNPACK by default, whose kernel gradients (a convolution whose window is the
# whole image) run 3-4x slower than XLA's own Eigen convolutions on x86: they were 45 % of a DDPM++ training
# step (benchmarks/results/speed_cpu.md). Convolutions go to Eigen unless XLA_FLAGS already choose; XLA reads
# the flag when JAX starts its backends, so this must run before anything touches a device.
# The flag is experimental, and XLA aborts on a flag it does not know: set only for the jaxlib releases it was
# measured with (0.10).
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG[2:] not in os.environ.get("XLA_FLAGS", "") and version("jaxlib").split(".")[:2] == ["0", "10"]:
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
