"""NCSNv2 (Song & Ermon, 2020) and the original NCSN (Song & Ermon, 2019): RefineNets over a dilated ResNet.

'ncsnv2_64' (images below 96 px), 'ncsnv2_128' and 'ncsnv2_256' differ only in their stages; 'ncsn' is the
64-px network with noise-conditional InstanceNorm++ in every block.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from score_sde.models.normalization import get_normalization
from score_sde.models.refinenet import (
    ConditionalResidualBlock,
    CondRefineBlock,
    RefineBlock,
    ResidualBlock,
    ncsn_conv,
    normalize,
)
from score_sde.models.utils import checkpointed, compute_dtype, get_act, get_sigmas, register_model


class RefineNet(nn.Module):
    """NCSN / NCSNv2 score network.

    ``__call__(x, labels, train=False)``: x (B, H, W, C) float32, in [0, 1] if ``config.data.centered`` is false
    (mapped to [-1, 1] inside) or in [-1, 1]; labels (B,) int32, the noise-level index i of
    ``get_sigmas(config)[i]`` (discrete training). NCSNv2 uses labels only to divide its output by sigma
    (``config.model.scale_by_sigma``); NCSN conditions every normalisation on them.

    ``stages``: (channel multiplier, dilation) of each ResNet stage, finest first; each stage after the first
    starts with a 'down' block (which halves the resolution only when its dilation is 1).
    ``refine``: channel multiplier of each RefineBlock, coarsest first.
    """

    config: ml_collections.ConfigDict
    stages: Sequence[tuple[int, int]]
    refine: Sequence[int]
    conditional: bool = False

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        m = self.config.model
        nf, act = m.nf, get_act(self.config)
        normalizer = get_normalization(self.config, conditional=self.conditional)
        y = labels.astype(jnp.int32) if self.conditional else None
        Block = functools.partial(
            checkpointed(ConditionalResidualBlock if self.conditional else ResidualBlock, self.config),
            act=act,
            normalization=normalizer,
        )
        if self.conditional:
            Refine = functools.partial(checkpointed(CondRefineBlock, self.config), normalizer=normalizer)
        else:
            Refine = checkpointed(RefineBlock, self.config)

        h = x if self.config.data.centered else 2 * x - 1.0
        h = ncsn_conv(h.astype(compute_dtype(self.config)), nf)
        layers = []
        for i, (mult, dilation) in enumerate(self.stages):
            h = Block(mult * nf, resample=None if i == 0 else "down", dilation=dilation)(h, y)
            h = Block(mult * nf, dilation=dilation)(h, y)
            layers.append(h)

        for i, mult in enumerate(self.refine):
            layer = layers[-1 - i]
            inputs = [layer] if i == 0 else [layer, h]
            h = Refine(
                layer.shape[1:3],
                mult * nf,
                act=act,
                interpolation=m.interpolation,
                start=i == 0,
                end=i == len(self.refine) - 1,
            )(inputs, y)

        h = act(normalize(normalizer, h, y))
        h = ncsn_conv(h, x.shape[-1]).astype(jnp.float32)
        if m.scale_by_sigma:
            h = h / get_sigmas(self.config)[labels.astype(jnp.int32)].reshape((-1,) + (1,) * (h.ndim - 1))
        return h


_NCSNV2_64 = dict(stages=((1, 1), (2, 1), (2, 2), (2, 4)), refine=(2, 2, 2, 1))
_NCSNV2_128 = dict(stages=((1, 1), (2, 1), (2, 1), (4, 2), (4, 4)), refine=(4, 2, 2, 1, 1))
_NCSNV2_256 = dict(stages=((1, 1), (2, 1), (2, 1), (2, 1), (4, 2), (4, 4)), refine=(4, 2, 2, 2, 1, 1))

register_model("ncsnv2_64")(lambda config: RefineNet(config, **_NCSNV2_64))
register_model("ncsnv2_128")(lambda config: RefineNet(config, **_NCSNV2_128))
register_model("ncsnv2_256")(lambda config: RefineNet(config, **_NCSNV2_256))
register_model("ncsn")(lambda config: RefineNet(config, **_NCSNV2_64, conditional=True))
