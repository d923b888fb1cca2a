"""NCSN++ and DDPM++ (Song et al., 2021, Appendix H): one U-Net, 'ncsnpp', whose config options give both.

NCSN++ (the VE configs): FIR resampling, BigGAN residual blocks, a residual input pyramid
(``progressive_input='residual'``), Gaussian Fourier embeddings of log(sigma), output divided by sigma.
DDPM++ (the VP / sub-VP configs): the same without FIR or pyramid, with sinusoidal embeddings of t*999.
The high-resolution configs add output / input skip pyramids (``output_skip`` / ``input_skip``).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from score_sde.models import layers
from score_sde.models.layers import conv3x3, default_init, group_norm, ncsnpp_groups
from score_sde.models.utils import checkpointed, compute_dtype, get_act, get_sigmas, num_classes, register_model

_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
}


def _option(config, name: str) -> str:
    value = config.model[name].lower()
    if value not in _CHOICES[name]:
        raise ValueError(f"config.model.{name}={value!r} is not one of {_CHOICES[name]}")
    return value


@register_model("ncsnpp")
class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ score network.

    ``__call__(x, labels, class_labels=None, train=False)``: x (B, H, W, C) float32, in [0, 1] if
    ``config.data.centered`` is false (the network maps it to [-1, 1]) or already in [-1, 1] if true; labels (B,):
      - ``embedding_type='fourier'``: the noise level sigma (VE, continuous training); the embedding is of
        log(sigma);
      - ``embedding_type='positional'``: the time step, t * 999 for continuous VP / sub-VP training or the
        integer index of the noise level / diffusion step for discrete training.
    class_labels (B,) int in [0, K] with ``config.model.num_classes = K > 0`` (K, or None: the unconditional
    score; `layers.add_class_embedding`). Returns (B, H, W, C) float32, divided by sigma when
    ``config.model.scale_by_sigma`` (with positional embeddings sigma is ``get_sigmas(config)[labels]``).
    Dropout (``train=True``) draws from the 'dropout' rng.
    """

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, labels, class_labels=None, train: bool = False):
        m = self.config.model
        act = get_act(self.config)
        dtype = compute_dtype(self.config)
        nf, ch_mult, num_res_blocks = m.nf, tuple(m.ch_mult), m.num_res_blocks
        attn_resolutions = tuple(m.attn_resolutions)
        num_resolutions = len(ch_mult)
        resblock_type = _option(self.config, "resblock_type")
        progressive = _option(self.config, "progressive")
        progressive_input = _option(self.config, "progressive_input")
        combine_method = _option(self.config, "progressive_combine")
        embedding_type = _option(self.config, "embedding_type")
        skip_rescale, init_scale = m.skip_rescale, m.init_scale
        fir, fir_kernel = m.fir, tuple(m.fir_kernel)
        channels = x.shape[-1]
        layers.check_unet_input(x, num_resolutions)

        # Noise-level / time embedding.
        if embedding_type == "fourier":
            if not self.config.training.continuous:
                raise ValueError("config.model.embedding_type='fourier' needs continuous training (labels are sigmas)")
            temb = layers.GaussianFourierProjection(embedding_size=nf, scale=m.fourier_scale)(jnp.log(labels))
        else:
            temb = layers.get_timestep_embedding(labels, nf)
        temb = layers.add_class_embedding(temb if m.conditional else None, class_labels, num_classes(self.config))
        if m.conditional:
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(temb.astype(dtype))
            temb = nn.Dense(nf * 4, kernel_init=default_init(), dtype=dtype)(act(temb))
        else:
            temb = None

        Upsample = functools.partial(layers.Upsample, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=fir_kernel)
        Downsample = functools.partial(layers.Downsample, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=fir_kernel)
        # The pyramids resample with a conv only in their 'residual' variants.
        PyramidUpsample = functools.partial(
            layers.Upsample, fir=fir, fir_kernel=fir_kernel, with_conv=progressive == "residual"
        )
        PyramidDownsample = functools.partial(
            layers.Downsample, fir=fir, fir_kernel=fir_kernel, with_conv=progressive_input == "residual"
        )
        AttnBlock = functools.partial(
            checkpointed(layers.AttnBlockpp, self.config), init_scale=init_scale, skip_rescale=skip_rescale
        )
        if resblock_type == "ddpm":
            ResnetBlock = functools.partial(
                checkpointed(layers.ResnetBlockDDPMpp, self.config, static_argnums=(3,)),
                act=act,
                dropout=m.dropout,
                init_scale=init_scale,
                skip_rescale=skip_rescale,
            )
        else:
            ResnetBlock = functools.partial(
                checkpointed(layers.ResnetBlockBigGANpp, self.config, static_argnums=(3,)),
                act=act,
                dropout=m.dropout,
                fir=fir,
                fir_kernel=fir_kernel,
                init_scale=init_scale,
                skip_rescale=skip_rescale,
            )

        def add(a, b):
            return layers.add_skip(a, b, skip_rescale)

        def output_conv(h, features, **kwargs):
            return conv3x3(act(group_norm(h, ncsnpp_groups(h.shape[-1]))), features, **kwargs)

        if not self.config.data.centered:
            x = 2 * x - 1.0
        x = x.astype(dtype)

        # Downsampling path; hs keeps every output for the skip connections.
        input_pyramid = x if progressive_input != "none" else None
        hs = [conv3x3(x, nf)]
        for i_level in range(num_resolutions):
            for _ in range(num_res_blocks):
                h = ResnetBlock(out_ch=nf * ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in attn_resolutions:
                    h = AttnBlock()(h)
                hs.append(h)
            if i_level != num_resolutions - 1:
                if resblock_type == "ddpm":
                    h = Downsample()(hs[-1])
                else:
                    h = ResnetBlock(down=True)(hs[-1], temb, train)
                if progressive_input == "input_skip":
                    input_pyramid = PyramidDownsample()(input_pyramid)
                    h = layers.Combine(method=combine_method)(input_pyramid, h)
                elif progressive_input == "residual":
                    input_pyramid = add(PyramidDownsample(out_ch=h.shape[-1])(input_pyramid), h)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = ResnetBlock()(h, temb, train)
        h = AttnBlock()(h)
        h = ResnetBlock()(h, temb, train)

        # Upsampling path, with the output pyramid.
        pyramid = None
        for i_level in reversed(range(num_resolutions)):
            for _ in range(num_res_blocks + 1):
                h = ResnetBlock(out_ch=nf * ch_mult[i_level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in attn_resolutions:
                h = AttnBlock()(h)
            if progressive == "output_skip":
                if pyramid is not None:
                    pyramid = PyramidUpsample()(pyramid)
                skip = output_conv(h, channels, bias=True, init_scale=init_scale)
                pyramid = skip if pyramid is None else pyramid + skip
            elif progressive == "residual":
                if pyramid is None:
                    pyramid = output_conv(h, h.shape[-1], bias=True)
                else:
                    pyramid = add(PyramidUpsample(out_ch=h.shape[-1])(pyramid), h)
                    h = pyramid
            if i_level != 0:
                if resblock_type == "ddpm":
                    h = Upsample()(h)
                else:
                    h = ResnetBlock(up=True)(h, temb, train)

        if progressive == "output_skip":
            h = pyramid
        else:
            h = output_conv(h, channels, init_scale=init_scale)
        h = h.astype(jnp.float32)

        if m.scale_by_sigma:
            sigmas = labels if embedding_type == "fourier" else get_sigmas(self.config)[labels.astype(jnp.int32)]
            h = h / sigmas.reshape((-1,) + (1,) * (h.ndim - 1))
        return h
