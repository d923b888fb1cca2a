"""The networks of the paper, in Flax linen, parameter for parameter those of the official code.

``get_model(config)`` builds the network named by ``config.model.name``:
  'ncsnpp'                                   NCSN++ and DDPM++ (ncsnpp.py)
  'ddpm'                                     DDPM (ddpm.py)
  'ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256'    NCSNv2 (ncsnv2.py)
  'ncsn'                                     NCSN, the original noise-conditional RefineNet (ncsnv2.py)
  'wideresnet_noise_conditional'             the noise-conditional classifier (wideresnet.py; returns logits)

Each is a module called as ``model.apply(variables, x, labels, train=False)`` on NHWC images; the U-Nets
(NCSN++, DDPM++, DDPM) of a config with ``config.model.num_classes = K > 0`` also take class labels,
``model.apply(variables, x, labels, class_labels, train=False)`` (B,) in [0, K], K the null label.
"""

from score_sde.models import ddpm, ncsnpp, ncsnv2, wideresnet  # noqa: F401  (registers the networks)
from score_sde.models.utils import (
    checkpointed,
    compute_dtype,
    get_act,
    get_model,
    get_sigmas,
    num_classes,
    register_model,
    remat,
)

__all__ = [
    "checkpointed",
    "compute_dtype",
    "get_act",
    "get_model",
    "get_sigmas",
    "num_classes",
    "register_model",
    "remat",
]
