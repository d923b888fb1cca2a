"""Converters from the released checkpoints of the paper into this project's model checkpoints.

Two families are read:
  - the official JAX/Flax code's checkpoints (``flax.training.checkpoints`` msgpack files, e.g.
    ``checkpoint_26``): the training state, whose ``optimizer.target`` holds the parameters and
    ``params_ema`` their moving average; or a bare parameter tree (the classifier's checkpoint). Written by
    flax 0.3, whose GroupNorm parameters are (1, 1, 1, C); they become (C,).
  - the official PyTorch port's ``.pth`` files: ``{'model': state_dict, 'ema': {'shadow_params': [...]},
    ...}`` with DataParallel's ``module.`` prefix; its ``all_modules.<i>`` list is matched, in order, to
    the Flax submodules in the order the network calls them, and the kernels are transposed
    (OIHW -> HWIO, (out, in) -> (in, out)). PyTorch is imported only here, only to read the file.

Every parameter is checked against the network ``get_model(config)`` builds: a checkpoint that does not
fit the config is refused, naming the first parameter that differs and both shapes.
"""

from __future__ import annotations

import collections
import os
import re
import zipfile

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde import checkpoints
from score_sde.models import get_model


class CheckpointMismatch(ValueError):
    """The checkpoint's parameters do not fit the network of the config; the message names the parameter."""


# ---------------------------------------------------------------------------------------------------------
# The network's parameters


def _example_inputs(config: ml_collections.ConfigDict):
    size, channels = config.data.image_size, config.data.num_channels
    return jnp.zeros((1, size, size, channels), jnp.float32), jnp.ones((1,), jnp.float32)


def param_shapes(config: ml_collections.ConfigDict):
    """The parameter tree of ``get_model(config)`` as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
    model = get_model(config)
    x, labels = _example_inputs(config)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}
    return jax.eval_shape(lambda: model.init(rngs, x, labels, train=False))["params"]


def _children_in_call_order(config: ml_collections.ConfigDict) -> list[str]:
    """Names of the network's direct submodules, in the order its forward pass first calls them."""
    model = get_model(config)
    x, labels = _example_inputs(config)
    order = []

    def record(next_fun, args, kwargs, context):
        path = context.module.scope.path if context.module.scope is not None else ()
        if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, x, labels)

    jax.eval_shape(init)
    return order


def _flat(tree) -> dict[tuple[str, ...], object]:
    return {tuple(path): leaf for path, leaf in flax.traverse_util.flatten_dict(tree).items()}


def _name(path) -> str:
    return "/".join(path)


def _modules(names) -> str:
    """Module names, sorted, numbered runs shortened: Conv_0, Conv_1, Conv_2, Conv_5 -> Conv_0-2, Conv_5."""
    numbered: dict[str, list[int]] = collections.defaultdict(list)
    for name in names:
        kind, _, number = name.rpartition("_")
        numbered[kind if kind and number.isdigit() else name] += [int(number)] if kind and number.isdigit() else []
    out = []
    for kind, numbers in sorted(numbered.items()):
        if not numbers:
            out.append(kind)
        runs = []  # [first, last] of each run of consecutive numbers
        for n in sorted(numbers):
            if runs and n == runs[-1][1] + 1:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        out += [f"{kind}_{a}" if a == b else f"{kind}_{a}-{b}" for a, b in runs]
    return ", ".join(out)


def _structure_differs(missing: str, extra: str) -> str:
    """What to add to the first mismatch when whole top-level modules differ (a config of another network or
    size): the config's modules that the checkpoint lacks and the checkpoint's that the config's lacks."""
    parts = []
    if missing:
        parts.append(f"the config's network has modules the checkpoint lacks: {missing}")
    if extra:
        parts.append(f"the checkpoint has modules the config's network lacks: {extra}")
    return "; ".join(parts) + " (is the config of another network, or of another size?)"


def fit_to_config(tree, shapes) -> dict:
    """``tree`` (nested dicts of arrays) checked against ``shapes`` (from `param_shapes`), as float32 arrays.

    Flax-0.3 shapes with extra leading 1s (GroupNorm's (1, 1, 1, C)) are reshaped. Raises CheckpointMismatch
    naming the first parameter (in sorted order) that is missing, extra or of another shape, and, when whole
    top-level modules are missing or extra, which.
    """
    got, want = _flat(tree), _flat(shapes)
    missing = {path[0] for path in want} - {path[0] for path in got}
    extra = {path[0] for path in got} - {path[0] for path in want}
    structure = f"; {_structure_differs(_modules(missing), _modules(extra))}" if missing or extra else ""
    for path in sorted(set(got) | set(want)):
        if path not in got:
            raise CheckpointMismatch(
                f"the checkpoint has no parameter {_name(path)} (the config's network has one "
                f"of shape {tuple(want[path].shape)}){structure}"
            )
        if path not in want:
            raise CheckpointMismatch(
                f"checkpoint parameter {_name(path)} (shape {tuple(np.shape(got[path]))}) is not "
                f"in the config's network{structure}"
            )
        have, need = tuple(np.shape(got[path])), tuple(want[path].shape)
        if have != need and not (
            len(have) > len(need)
            and have[len(have) - len(need) :] == need
            and all(d == 1 for d in have[: len(have) - len(need)])
        ):
            raise CheckpointMismatch(
                f"parameter {_name(path)} has shape {have} in the checkpoint but {need} in the config's "
                f"network{structure}"
            )
    return flax.traverse_util.unflatten_dict(
        {path: np.asarray(got[path], np.float32).reshape(want[path].shape) for path in want}
    )


# ---------------------------------------------------------------------------------------------------------
# Official JAX/Flax checkpoints


def read_flax_checkpoint(path: str):
    """The (params, params_ema) trees of an official Flax checkpoint file (a bare tree gives it twice)."""
    with open(path, "rb") as f:
        content = f.read()
    try:
        state = flax.serialization.msgpack_restore(content)
    except Exception as e:  # msgpack raises several kinds (ExtraData, FormatError, ValueError, ...)
        raise ValueError(
            f"{path} is not a Flax checkpoint (msgpack cannot read it: {e}); if it is a PyTorch checkpoint, "
            "convert it with --format torch"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a Flax checkpoint (it holds a {type(state).__name__}, not a dict)")
    if "params_ema" in state:
        if "target" not in state.get("optimizer", {}):
            raise ValueError(f"{path} has params_ema but no optimizer.target: not an official training state")
        return state["optimizer"]["target"], state["params_ema"]
    return state, state


# ---------------------------------------------------------------------------------------------------------
# Official PyTorch checkpoints


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "reading PyTorch .pth checkpoints needs PyTorch: pip install 'score_sde[torch]' "
            "(or pip install torch); it is not needed otherwise"
        ) from None
    return torch


def read_torch_checkpoint(path: str):
    """The model state dict and the EMA parameters of an official PyTorch checkpoint, as numpy arrays.

    Returns (state, ema): ordered dicts from parameter names (``module.`` prefix removed) to arrays; ema is
    None for a bare state dict. The EMA keeps only trainable parameters, in the model's order.
    """
    torch = _import_torch()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and "model" in blob:
        state, shadow = blob["model"], blob.get("ema", {}).get("shadow_params")
    else:
        state, shadow = blob, None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a PyTorch state dict or an official training checkpoint")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    state = collections.OrderedDict((k, v.detach().cpu().numpy()) for k, v in state.items())
    ema = None if shadow is None else [t.detach().cpu().numpy() for t in shadow]
    return state, ema


# Per Flax leaf module type (name prefix): Flax leaf name -> (torch name, array transform from torch).
_TORCH_LEAVES = {
    "Conv": {"kernel": ("weight", lambda w: w.transpose(2, 3, 1, 0)), "bias": ("bias", None)},
    "Conv2d": {"weight": ("weight", lambda w: w.transpose(2, 3, 1, 0)), "bias": ("bias", None)},
    "Dense": {"kernel": ("weight", lambda w: w.T), "bias": ("bias", None)},
    "GroupNorm": {"scale": ("weight", None), "bias": ("bias", None)},
    "NIN": {"W": ("W", None), "b": ("b", None)},
    "GaussianFourierProjection": {"W": ("W", None)},
}
_BUFFERS = ("sigmas",)  # registered buffers of the PyTorch networks: in the state dict, not parameters


def _torch_key(prefix: str, path: tuple[str, ...]) -> tuple[str, object]:
    """The PyTorch name of the Flax parameter ``path`` inside the top-level module ``prefix``, and its transform."""
    *modules, leaf = path
    kind = re.sub(r"_\d+$", "", modules[-1])
    if kind not in _TORCH_LEAVES or leaf not in _TORCH_LEAVES[kind]:
        raise CheckpointMismatch(f"no PyTorch counterpart known for parameter {_name(path)}")
    torch_leaf, transform = _TORCH_LEAVES[kind][leaf]
    return ".".join([prefix, *modules[1:], torch_leaf]), transform


def torch_to_flax(state: dict, ema: list | None, config: ml_collections.ConfigDict):
    """(params, params_ema) Flax trees from the PyTorch port's state dict and EMA of the network of ``config``.

    The port keeps its submodules in one list, ``all_modules.<i>``, in the order of the forward pass; the
    Flax network's submodules with parameters, in call order, correspond one to one. (Only the port's
    'ncsnpp' and 'ddpm' networks, those with released checkpoints, are built this way.)
    """
    name = config.model.name
    if name not in ("ncsnpp", "ddpm"):
        raise ValueError(f"config.model.name={name!r}: PyTorch checkpoints exist only for 'ncsnpp' and 'ddpm'")
    shapes = param_shapes(config)
    children = [c for c in _children_in_call_order(config) if c in shapes]
    indices = sorted({int(m.group(1)) for k in state if (m := re.match(r"all_modules\.(\d+)\.", k))})
    _check_torch_modules(state, indices, children, shapes, config)
    params, flax_of = {}, {}  # flax_of: torch name -> (Flax path, transform)
    for index, child in zip(indices, children):
        for path, want in _flat(shapes[child]).items():
            path = (child, *path)
            key, transform = _torch_key(f"all_modules.{index}", path)
            value = state[key] if transform is None else transform(state[key])
            if value.shape != want.shape:
                raise CheckpointMismatch(
                    f"parameter {_name(path)} ({key} in the checkpoint) has shape {value.shape} in the "
                    f"checkpoint but {tuple(want.shape)} in the config's network"
                )
            params[path] = value
            flax_of[key] = (path, transform)
    params = fit_to_config(flax.traverse_util.unflatten_dict(params), shapes)
    if ema is None:
        return params, params
    # The EMA lists the trainable parameters in state-dict order: all but buffers and the Fourier features.
    trainable = [
        k
        for k in state
        if k.split(".")[-1] not in _BUFFERS
        and not (k in flax_of and flax_of[k][0][0].startswith("GaussianFourierProjection"))
    ]
    if len(trainable) != len(ema):
        raise CheckpointMismatch(
            f"the checkpoint's EMA has {len(ema)} tensors, its model {len(trainable)} trainable parameters"
        )
    ema_flat = _flat(params)
    for key, value in zip(trainable, ema):
        if value.shape != state[key].shape:
            raise CheckpointMismatch(f"EMA of {key} has shape {value.shape}, the parameter {state[key].shape}")
        if key not in flax_of:  # an unused Dense_0 of an unconditional network
            continue
        path, transform = flax_of[key]
        ema_flat[path] = np.asarray(value if transform is None else transform(value), np.float32).reshape(
            ema_flat[path].shape
        )
    return params, flax.traverse_util.unflatten_dict(ema_flat)


def _check_torch_modules(state: dict, indices: list[int], children: list[str], shapes, config) -> None:
    """Refuses a checkpoint whose modules are not those of the config's network (matched in call order, see
    `torch_to_flax`), listing the network's modules without all their parameters in the checkpoint and the
    checkpoint's modules with parameters the network does not have. Shapes are checked later."""
    expected, missing = set(), []
    for i, child in enumerate(children):
        if i >= len(indices):  # more modules in the network than in the checkpoint
            missing.append(child)
            continue
        keys = {_torch_key(f"all_modules.{indices[i]}", (child, *path))[0] for path in _flat(shapes[child])}
        expected |= keys
        if not keys <= set(state):
            missing.append(child)
    extra = {k for k in state if k not in expected and k.split(".")[-1] not in _BUFFERS}
    # The port gives every residual block a time-embedding Dense layer, unused when the network is unconditional.
    if not config.model.conditional:
        extra = {k for k in extra if ".Dense_0." not in k}
    if missing or extra:
        # all_modules.<i>, numbered like Flax names for `_modules` (all_modules_<i>), else the first name
        extra = {"_".join(k.split(".")[:2]) if k.startswith("all_modules.") else k.split(".")[0] for k in extra}
        raise CheckpointMismatch(
            f"the checkpoint has {len(indices)} modules with parameters, the config's network {len(children)}; "
            + _structure_differs(_modules(missing), _modules(extra).replace("all_modules_", "all_modules."))
        )


# ---------------------------------------------------------------------------------------------------------
# Entry points


# torch.save's format before PyTorch 1.6 (the official port's checkpoints may use it) starts with a pickle of
# this number, torch.serialization.MAGIC_NUMBER.
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _is_torch_file(path: str) -> bool:
    """By the name (.pth, .pt) or the content: a zip archive (PyTorch 1.6 and later) or the legacy format."""
    if path.endswith((".pth", ".pt")) or zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return _LEGACY_TORCH_MAGIC in f.read(32)


def convert(checkpoint: str, config: ml_collections.ConfigDict, *, format: str = "auto"):
    """(params, params_ema) of the network of ``config`` from an official checkpoint file.

    ``format``: 'flax', 'torch', or 'auto' (torch for .pth / .pt files and PyTorch's formats, else flax).
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint file not found: {checkpoint}")
    if format == "auto":
        format = "torch" if _is_torch_file(checkpoint) else "flax"
    if format == "torch":
        return torch_to_flax(*read_torch_checkpoint(checkpoint), config)
    if format == "flax":
        shapes = param_shapes(config)
        params, params_ema = read_flax_checkpoint(checkpoint)
        return fit_to_config(params, shapes), fit_to_config(params_ema, shapes)
    raise ValueError(f"format={format!r} is not 'auto', 'flax' or 'torch'")


def run(checkpoint: str, config: ml_collections.ConfigDict, output: str, *, format: str = "auto") -> None:
    """``score-sde convert``: converts an official checkpoint file for the network of ``config`` and writes the
    model checkpoint directory ``output`` (which must not exist) with ``checkpoints.save_model``."""
    if str(config.model.get("formulation", "paper")) != "paper":
        raise ValueError(
            f"the released checkpoints were trained with the paper's formulation, not config.model.formulation="
            f"{config.model.formulation!r}: give the config of the experiment they come from"
        )
    params, params_ema = convert(checkpoint, config, format=format)
    checkpoints.save_model(output, params=params, params_ema=params_ema, config=config)
