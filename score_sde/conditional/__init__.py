"""Controllable generation with one unconditional score model (Section 5 of the paper), and linear inverse
problems y = A x + sigma_y n solved by posterior sampling.

  operators.py    measurement operators: Mask (inpainting, outpainting), GreyScale (colorization, in the
                  official decoupled colour basis), AveragePool (super-resolution), GaussianBlur (deblurring)
  guidance.py     guided scores for every sampler: classifier guidance, classifier-free guidance of a
                  class-conditional model; DPS and PiGDM (`GUIDANCE`, by name)
  replacement.py  the paper's replacement method (inpainting, colorization): wrapped predictors and correctors
  classifier.py   the noise-conditional classifier as log_prob_fn(x, t, y), its input conventions, its loss
  masks.py        masks for inpainting tasks: centre box, random box, half, random pixels

    score_fn = classifier_guided(score_fn, log_prob_fn, labels)        # then any sampler
    score_fn = classifier_free_guided(cond_score_fn, sde, labels, num_classes=10, weight=1.0)
    score_fn = pigdm(score_fn, sde, AveragePool((32, 32, 3), 2), y, sigma_y=0.0)
    x, nfe = replacement_sampler(key, score_fn, sde, Mask.create(mask), y)
"""

from score_sde.conditional.classifier import InputConventions, check_compatible, check_labels, network_log_prob_fn
from score_sde.conditional.guidance import (
    GUIDANCE,
    classifier_free_guided,
    classifier_guided,
    dps,
    pigdm,
    register_guidance,
)
from score_sde.conditional.operators import (
    DECOUPLE,
    AveragePool,
    GaussianBlur,
    GreyScale,
    LinearOperator,
    Mask,
    NoPseudoInverse,
    couple,
    decouple,
)
from score_sde.conditional.replacement import replaced_corrector, replaced_predictor, replacement_sampler

__all__ = [
    "DECOUPLE",
    "GUIDANCE",
    "AveragePool",
    "GaussianBlur",
    "GreyScale",
    "InputConventions",
    "LinearOperator",
    "Mask",
    "NoPseudoInverse",
    "check_compatible",
    "check_labels",
    "classifier_free_guided",
    "classifier_guided",
    "couple",
    "decouple",
    "dps",
    "network_log_prob_fn",
    "pigdm",
    "register_guidance",
    "replaced_corrector",
    "replaced_predictor",
    "replacement_sampler",
]
