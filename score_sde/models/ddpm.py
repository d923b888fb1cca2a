"""The DDPM U-Net (Ho et al., 2020), 'ddpm': the network of the paper's DDPM baselines (VP, sub-VP and VE)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from score_sde.models import layers
from score_sde.models.layers import conv3x3, default_init, group_norm
from score_sde.models.utils import checkpointed, compute_dtype, get_act, get_sigmas, num_classes, register_model


@register_model("ddpm")
class DDPM(nn.Module):
    """DDPM score network.

    ``__call__(x, labels, class_labels=None, train=False)``: x (B, H, W, C) float32, in [0, 1] if
    ``config.data.centered`` is false (mapped to [-1, 1] inside) or in [-1, 1] if true; labels (B,) the time
    step for the sinusoidal embedding: the integer step / noise-level index for discrete training, t * 999 for
    continuous VP / sub-VP training;
    class_labels (B,) in [0, K] with ``config.model.num_classes = K > 0`` (as NCSN++'s).
    Returns (B, H, W, C) float32, divided by ``get_sigmas(config)[labels]`` when ``config.model.scale_by_sigma``
    (the VE DDPM config). Only ``config.model.normalization='GroupNorm'`` exists for this network, as in every
    official config.
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, labels, class_labels=None, train: bool = False):
        m = self.config.model
        if m.normalization != "GroupNorm":
            raise ValueError(f"config.model.normalization={m.normalization!r}: the DDPM network uses 'GroupNorm'")
        act = get_act(self.config)
        dtype = compute_dtype(self.config)
        nf, ch_mult, num_res_blocks = m.nf, tuple(m.ch_mult), m.num_res_blocks
        attn_resolutions = tuple(m.attn_resolutions)
        num_resolutions = len(ch_mult)
        layers.check_unet_input(x, num_resolutions)
        ResnetBlock = functools.partial(
            checkpointed(layers.ResnetBlockDDPM, self.config, static_argnums=(3,)), act=act, dropout=m.dropout
        )
        AttnBlock = checkpointed(layers.AttnBlock, self.config)

        temb = layers.get_timestep_embedding(labels, nf) if m.conditional else None
        temb = layers.add_class_embedding(temb, class_labels, num_classes(self.config))
        if m.conditional:
            temb = temb.astype(dtype)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(temb)
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(act(temb))
        else:
            temb = None

        h = x if self.config.data.centered else 2 * x - 1.0
        h = h.astype(dtype)

        hs = [conv3x3(h, nf)]
        for i_level in range(num_resolutions):
            for _ in range(num_res_blocks):
                h = ResnetBlock(out_ch=nf * ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in attn_resolutions:
                    h = AttnBlock()(h)
                hs.append(h)
            if i_level != num_resolutions - 1:
                hs.append(layers.Downsample(with_conv=m.resamp_with_conv)(hs[-1]))

        h = hs[-1]
        h = ResnetBlock()(h, temb, train)
        h = AttnBlock()(h)
        h = ResnetBlock()(h, temb, train)

        for i_level in reversed(range(num_resolutions)):
            for _ in range(num_res_blocks + 1):
                h = ResnetBlock(out_ch=nf * ch_mult[i_level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in attn_resolutions:
                h = AttnBlock()(h)
            if i_level != 0:
                h = layers.Upsample(with_conv=m.resamp_with_conv)(h)

        h = act(group_norm(h, 32))
        h = conv3x3(h, x.shape[-1], init_scale=0.0).astype(jnp.float32)
        if m.scale_by_sigma:
            h = h / get_sigmas(self.config)[labels.astype(jnp.int32)].reshape((-1,) + (1,) * (h.ndim - 1))
        return h
