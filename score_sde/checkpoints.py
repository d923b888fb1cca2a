"""Model checkpoints in this project's format: an orbax checkpoint directory.

A *model checkpoint* holds the pytree ``{"params": ..., "params_ema": ...}`` (nested dicts of float32
arrays, the Flax ``params`` collection of the network) and ``config.json``, the ml_collections config
the network was built from. Training checkpoints extend it with the training state; converters from
the released checkpoints write exactly this.
"""

from __future__ import annotations

import json
import os

import ml_collections
import orbax.checkpoint as ocp

_TREE = "model"
_CONFIG = "config.json"


def save_model(directory: str, *, params, params_ema, config: ml_collections.ConfigDict) -> None:
    """Writes a model checkpoint to ``directory`` (which must not exist yet)."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(f"refusing to overwrite existing checkpoint directory {directory}")
    os.makedirs(directory)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, _TREE), {"params": params, "params_ema": params_ema})
    checkpointer.wait_until_finished()
    with open(os.path.join(directory, _CONFIG), "w") as f:
        f.write(config.to_json(indent=2))


def load_model(directory: str):
    """Reads a model checkpoint written by `save_model`. Returns ``(params, params_ema, config)``."""
    directory = os.path.abspath(directory)
    tree_dir, config_file = os.path.join(directory, _TREE), os.path.join(directory, _CONFIG)
    for path in (tree_dir, config_file):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} is not a model checkpoint: {path} is missing")
    tree = ocp.StandardCheckpointer().restore(tree_dir)
    with open(config_file) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return tree["params"], tree["params_ema"], config
