"""The quickstart's digits model (configs/small/digits.py) in EDM's formulation: the same DDPM++, preconditioned
as EDM's denoiser and trained with EDM's loss, on EDM's SDE (sigma from 0.002 to 80), sampled with EDM's Heun
sampler on the Karras grid with 19 network evaluations (9 Heun steps and the last one to sigma = 0)."""

from configs.common import edm
from configs.small import digits


def get_config():
    return edm(digits.get_config(), sampling_nfe=19)
